"""Import cost of the package over ``import lightning.pytorch``, and the optional packages it imports.

Run: ``python benchmarks/import_cost.py [--runs 10]``. Each run is a fresh interpreter that imports
``lightning.pytorch``, then the package's public names (``PlateauCallback``, ``PlateauMixin``,
``PlateauEarlyStopping``, ``PlateauScheduler``), timing each part; the median of the differences is reported.

The package is imported from its compiled bytecode, as ``pip install`` leaves a wheel: an editable install under
``PYTHONDONTWRITEBYTECODE=1`` (as on the machines these figures come from) compiles its sources at every import
instead, which measured another 25 ms or so, a cost of that set-up, not of the package.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import lightning_plateau

OPTIONAL = ("wandb", "matplotlib", "PIL", "tensorboard", "jsonargparse", "pydantic", "sklearn")
_PROBE = f"""
import json, sys, time
start = time.perf_counter()
import lightning.pytorch
middle = time.perf_counter()
before = set(sys.modules)
from lightning_plateau import PlateauCallback, PlateauEarlyStopping, PlateauMixin, PlateauScheduler
end = time.perf_counter()
added = {{name.split(".")[0] for name in set(sys.modules) - before}}
print(json.dumps({{"lightning_s": middle - start, "package_s": end - middle,
                   "optional": sorted(added & set({OPTIONAL!r}))}}))
"""


def _probe(env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True, env=env)
    return dict(json.loads(result.stdout))


def measure(runs: int) -> dict[str, Any]:
    """Median seconds of ``import lightning.pytorch`` and of the package after it, over fresh processes."""
    package_dir = Path(lightning_plateau.__file__).parent
    # What a wheel's install leaves: the package's bytecode written once, then read at every import.
    compiled = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    compileall.compile_dir(package_dir, quiet=1)
    rows = [_probe(compiled) for _ in range(runs)]
    return {
        "runs": runs,
        "lightning_ms": statistics.median(r["lightning_s"] for r in rows) * 1e3,
        "package_ms": statistics.median(r["package_s"] for r in rows) * 1e3,
        "optional": rows[-1]["optional"],
    }


def markdown(result: dict[str, Any]) -> str:
    """The import cost as Markdown lines."""
    optional = ", ".join(result["optional"]) or "none"
    return (
        f"- Import (`benchmarks/import_cost.py`, median of {result['runs']} fresh processes): `import"
        f" lightning.pytorch` {result['lightning_ms']:.0f} ms, then the package's public names"
        f" **+{result['package_ms']:.0f} ms** (target <= 50 ms), from its compiled bytecode as a pip install leaves"
        f" it; optional packages it imports on the way: {optional}."
    )


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    print(markdown(measure(parser.parse_args(argv).runs)))


if __name__ == "__main__":
    main()
