"""The package's only per-step work, on CPU: PlateauCallback's on_train_batch_end, for each setting that uses it.

Run: ``python benchmarks/step_hooks.py [--runs 3] [--steps 3000]``. The tiny MLP of ``step_overhead.py`` logs
``train_loss`` at every step and the plateau watches it:

- ``default``: no per-step setting (judged once per epoch): the hook returns at once;
- ``window_steps=100``: every logged value is added to the window's sum (judged every 100 steps);
- ``warmup_steps=1000``: the LR of the next step is set during the first 1000 steps (none after).

Each run times the callback's ``on_train_batch_end`` at every step (median, in microseconds; with windows the steps
that close a window are reported apart, as they hold the one all-reduce and host-device sync of each window; with
warmup, the steps during and after it) and the training loop's steps per second. Runs alternate between settings.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin

SETTINGS: dict[str, dict[str, int]] = {
    "default": {},
    "window_steps=100": {"window_steps": 100},
    "warmup_steps=1000": {"warmup_steps": 1000},
}


class _Net(PlateauMixin, pl.LightningModule):
    def __init__(self, setting: dict[str, int]) -> None:
        super().__init__()
        self.plateau = PlateauConfig(monitor="train_loss", patience=10, **setting)
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Timer(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def run(setting: dict[str, int], steps: int) -> tuple[float, list[float], list[float]]:
    """Steps/s of the loop, and the hook's times (µs) at ordinary steps and at special ones.

    Special: a window's end with ``window_steps``, a step during the warmup with ``warmup_steps``.
    """
    window_steps = setting.get("window_steps", 0)
    warmup_steps = setting.get("warmup_steps", 0)
    torch.manual_seed(0)
    timer = _Timer()
    plateau = PlateauCallback(verbose=False, log_traces=False)
    hook = plateau.on_train_batch_end
    ordinary: list[float] = []
    ends: list[float] = []

    def timed(trainer: pl.Trainer, *args: Any) -> None:
        start = time.perf_counter()
        hook(trainer, *args)
        elapsed = (time.perf_counter() - start) * 1e6
        special = (window_steps and trainer.global_step % window_steps == 0) or trainer.global_step <= warmup_steps
        (ends if special else ordinary).append(elapsed)

    plateau.on_train_batch_end = timed  # type: ignore[method-assign]
    x = torch.randn(steps, 32, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x, x[:, :1] * 0.5))
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            default_root_dir=root,
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer, plateau],
        )
        trainer.fit(_Net(setting), data)
    return steps / timer.seconds, ordinary, ends


def measure(runs: int, steps: int) -> dict[str, Any]:
    """Median steps/s and hook times of every setting, over ``runs`` alternating runs."""
    torch.set_num_threads(1)
    results: dict[str, list[tuple[float, list[float], list[float]]]] = {name: [] for name in SETTINGS}
    for _ in range(runs):
        for name, setting in SETTINGS.items():
            results[name].append(run(setting, steps))
    summary: dict[str, Any] = {"runs": runs, "steps": steps, "settings": {}}
    for name, rows in results.items():
        special = [t for r in rows for t in r[2]]
        summary["settings"][name] = {
            "steps_per_s": statistics.median(r[0] for r in rows),
            "hook_us": statistics.median(t for r in rows for t in r[1]),
            "special_us": statistics.median(special) if special else None,
        }
    return summary


def markdown(result: dict[str, Any]) -> str:
    """The per-step hook costs as Markdown lines."""
    settings = result["settings"]
    window, warmup = settings["window_steps=100"], settings["warmup_steps=1000"]
    return (
        f"- Per-step work (`benchmarks/step_hooks.py`, {result['runs']} alternating runs of {result['steps']} steps):"
        f" PlateauCallback's `on_train_batch_end` takes a median **{settings['default']['hook_us']:.1f} µs** per step"
        f" without a per-step setting; with `window_steps=100` **{window['hook_us']:.1f} µs** (read the logged"
        f" tensor, one add on its device) and {window['special_us']:.0f} µs at a window's end (the sum's one"
        f" host-device sync and the decision); with `warmup_steps=1000` **{warmup['special_us']:.1f} µs** during the"
        f" warmup (the next step's LR, python floats) and {warmup['hook_us']:.1f} µs after it. Steps/s: "
        + ", ".join(f"{name} {row['steps_per_s']:.0f}" for name, row in settings.items())
        + "."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    print(markdown(measure(args.runs, args.steps)))


if __name__ == "__main__":
    main()
