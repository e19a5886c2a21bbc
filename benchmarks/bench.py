"""`make bench`: every CPU benchmark in one table, with the date, machine and versions.

Run: ``python benchmarks/bench.py [--runs 5] [--markdown PATH]``. It runs, in this order, the step overhead
(``step_overhead.py``), the per-step hooks of windows and warmup (``step_hooks.py``), the import cost
(``import_cost.py``), the replay speed (``replay_speed.py``) and the DDP collective count (``ddp_collectives.py``),
and prints one Markdown section; ``--markdown`` also writes it to a file, to paste unchanged into
``benchmarks/RESULTS.md``. The GPU check is ``gpu_check.py``, run on a GPU machine.
The comparison of plateau detectors on real training, ``detectors.py``, runs on its own (minutes, not seconds).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Optional

import lightning
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddp_collectives
import import_cost
import replay_speed
import step_hooks
import step_overhead

import lightning_plateau


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per step-overhead configuration")
    parser.add_argument("--markdown", help="also write the section to this file")
    args = parser.parse_args(argv)
    header = [
        f"## CPU benchmarks ({datetime.date.today().isoformat()})",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()},"
        f" torch {torch.__version__}, lightning {lightning.__version__}, lightning-plateau"
        f" {lightning_plateau.__version__}. Measured by `benchmarks/bench.py`.",
        "",
    ]
    sections = [
        step_overhead.markdown(step_overhead.measure(args.runs, 3000)),
        step_hooks.markdown(step_hooks.measure(3, 3000)),
        import_cost.markdown(import_cost.measure(10)),
        replay_speed.markdown(replay_speed.measure(1_000_000, 3)),
        ddp_collectives.markdown(ddp_collectives.measure()),
    ]
    text = "\n".join(header) + "\n" + "\n".join(sections) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
