"""Collectives the package issues under DDP on 2 CPU processes: per evaluation (must be 1), per training step (0).

Run: ``python benchmarks/ddp_collectives.py``. It runs ``tests/ddp_script.py`` with Lightning's DDP launcher
(gloo, 2 processes); that script wraps every ``torch.distributed`` collective and records the ones issued from
``lightning_plateau``'s code, with the step they ran at. Counted, not assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "ddp_script.py"
VALUES = [[6, 3, 2, 1, 0.5, 0.25], [2, 3, 4, 5, 5.5, 5.75]]


def measure() -> dict[str, Any]:
    """Collectives from the package per evaluation and outside evaluations, on each of 2 ranks."""
    with tempfile.TemporaryDirectory() as out:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MASTER_", "RANK", "WORLD_"))}
        env["OMP_NUM_THREADS"] = "1"
        command = [sys.executable, str(SCRIPT), "--out", out, "--strategy", "ddp", "--devices", "2"]
        subprocess.run([*command, "--values", json.dumps(VALUES)], check=True, capture_output=True, env=env)
        ranks = [json.loads((Path(out) / f"rank{rank}.json").read_text()) for rank in range(2)]
    rows = []
    for rank in ranks:
        evaluations = len(rank["history"])
        at_evaluations = {row["epoch"] for row in rank["history"]}
        calls = rank["collectives"]
        rows.append(
            {
                "evaluations": evaluations,
                "collectives": len(calls),
                "ops": sorted({call["op"] for call in calls}),
                "outside_evaluations": sum(call["epoch"] not in at_evaluations for call in calls),
            }
        )
    return {"ranks": rows}


def markdown(result: dict[str, Any]) -> str:
    """The collective counts as Markdown lines."""
    parts = []
    for index, row in enumerate(result["ranks"]):
        per_evaluation = row["collectives"] / max(row["evaluations"], 1)
        parts.append(
            f"rank {index}: {row['collectives']} {'/'.join(row['ops'])} for {row['evaluations']} evaluations"
            f" (**{per_evaluation:g} per evaluation**), {row['outside_evaluations']} at any other point"
        )
    return "- DDP, 2 CPU processes over gloo (`benchmarks/ddp_collectives.py`): " + "; ".join(parts) + "."


if __name__ == "__main__":
    print(markdown(measure()))
