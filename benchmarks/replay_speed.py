"""How fast `replay` and `lightning-plateau explain` go through a long history (target: 1,000,000 values < 2 s).

Run: ``python benchmarks/replay_speed.py [--values N] [--repeat R]``. Each timing is the best of R runs,
which is the one least disturbed by other work on the machine. Printed:

- ``bare scheduler step``: PlateauScheduler._judge alone, the floor (torch's rule is most of it);
- ``replay()``: the replay itself, rows not yet built;
- ``replay() + every row``: the replay and iterating over all its rows;
- ``explain --only-cuts`` / ``explain --json`` / ``explain`` (table): the command end to end, reading a file
  of one value per line and writing to /dev/null.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightning_plateau import PlateauConfig, PlateauScheduler, replay
from lightning_plateau.cli import main

TARGET_S = 2.0


def make_values(count: int) -> list[float]:
    """A noisy loss that falls with long plateaus, so the rule both improves and cuts along the way."""
    rng = random.Random(0)
    return [1.0 / math.log(i + 2) + 0.02 * rng.random() for i in range(count)]


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_steps(values: list[float], config: PlateauConfig) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=1e-3)
    judge = PlateauScheduler(optimizer, config)._judge
    for value in values:
        judge(value)


def run_cli(args: list[str]) -> None:
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = main(args)
    if code != 0:
        raise SystemExit(f"explain {args} exited with {code}")


def measure(count: int, repeat: int) -> dict[str, Any]:
    """Best-of-``repeat`` seconds of each way through ``count`` values, and the replay's cuts."""
    values = make_values(count)
    config = PlateauConfig(patience=10, threshold=1e-3, min_lr=1e-9)
    timings = {
        "bare scheduler step": best_time(lambda: bare_steps(values, config), repeat),
        "replay()": best_time(lambda: replay(values, config), repeat),
        "replay() + every row": best_time(lambda: sum(1 for _ in replay(values, config)), repeat),
    }
    # The noise-aware settings cost more per value (the moving average; the slope's least-squares line over the
    # latest patience + 1 values, or 21 with the robust count's quantile): the target is the default's.
    for name, extra in (
        ("smoothing=0.6", {"smoothing": 0.6}),
        ('detector="slope"', {"detector": "slope"}),
        ('detector="slope", slope_robust', {"detector": "slope", "slope_robust": True, "slope_window": 21}),
    ):
        setting = dataclasses.replace(config, **extra)
        timings[f"replay() with {name}"] = best_time(lambda setting=setting: replay(values, setting), repeat)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "values.txt"
        source.write_text("\n".join(repr(value) for value in values) + "\n")
        common = ["explain", str(source), "--patience", "10", "--threshold", "1e-3", "--min-lr", "1e-9"]
        timings["explain --only-cuts"] = best_time(lambda: run_cli([*common, "--only-cuts"]), repeat)
        timings["explain --json"] = best_time(lambda: run_cli([*common, "--json"]), repeat)
        timings["explain (full table)"] = best_time(lambda: run_cli(common), repeat)
    return {
        "values": count,
        "repeat": repeat,
        "config": config.describe(),
        "cuts": len(replay(values, config).cuts),
        "timings": timings,
    }


def markdown(result: dict[str, Any]) -> str:
    """The replay timings as Markdown lines."""
    shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result["timings"].items())
    return (
        f"- Replay of {result['values']:,} values (`benchmarks/replay_speed.py`, best of {result['repeat']}):"
        f" {shown}. Target for `replay()`: < {TARGET_S:g} s."
    )


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    result = measure(options.values, options.repeat)
    print(f"{result['values']:,} values, {result['config']}: {result['cuts']} cuts; best of {options.repeat} runs")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    per_value = 1e6 / result["values"]
    for name, seconds in result["timings"].items():
        print(f"{name:24s} {seconds:7.3f} s   {seconds * per_value:6.3f} us/value")
    verdict = "within" if result["timings"]["replay()"] < TARGET_S * result["values"] / 1e6 else "OVER"
    print(f"replay(): {verdict} the target of {TARGET_S} s per million values")


if __name__ == "__main__":
    main_benchmark()
