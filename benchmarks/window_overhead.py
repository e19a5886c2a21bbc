"""Per-step cost of training-metric windows on CPU: PlateauCallback's on_train_batch_end, off and on.

Run: ``python benchmarks/window_overhead.py [--runs 3] [--steps 3000]``. The tiny MLP of ``step_overhead.py`` logs
``train_loss`` at every step; the plateau watches it with ``window_steps=0`` (judged once per epoch) or
``window_steps=100`` (judged every 100 steps). Each run times the callback's ``on_train_batch_end`` at every step
(median, in microseconds; with windows, the steps that close a window are reported apart, as they hold the one
all-reduce and host-device sync of each window) and the training loop's steps per second. Runs alternate off/on.
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


class _Net(PlateauMixin, pl.LightningModule):
    def __init__(self, window_steps: int) -> None:
        super().__init__()
        self.plateau = PlateauConfig(monitor="train_loss", window_steps=window_steps, patience=10)
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


def run(window_steps: int, steps: int) -> tuple[float, list[float], list[float]]:
    """Steps/s of the loop, and the hook's times (µs) at ordinary steps and at window ends."""
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
        closing = window_steps and trainer.global_step % window_steps == 0
        (ends if closing else ordinary).append(elapsed)

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
        trainer.fit(_Net(window_steps), data)
    return steps / timer.seconds, ordinary, ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[int, list[tuple[float, list[float], list[float]]]] = {0: [], 100: []}
    for _ in range(args.runs):
        for window_steps in results:
            results[window_steps].append(run(window_steps, args.steps))
    for window_steps, runs in results.items():
        speed = statistics.median(r[0] for r in runs)
        ordinary = statistics.median(t for r in runs for t in r[1])
        ends = [t for r in runs for t in r[2]]
        end_text = f", at a window's end {statistics.median(ends):.0f} µs" if ends else ""
        print(f"window_steps={window_steps}: {speed:.0f} steps/s, hook {ordinary:.1f} µs per step{end_text}")


if __name__ == "__main__":
    main()
