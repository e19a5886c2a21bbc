"""Step overhead on CPU: the same tiny MLP, 3000 steps, validation every 100, with and without the package.

Run: ``python benchmarks/step_overhead.py [--runs 5] [--steps 3000]``. Each configuration runs in a fresh process,
interleaved (a b c d a b c d ...):

- (a) plain Lightning: torch's ``ReduceLROnPlateau`` stepped by Lightning, ``LearningRateMonitor``, a CSVLogger;
- (b) ``PlateauMixin``, its PlateauCallback tracing to a CSVLogger;
- (c) (b) + ``PlateauEarlyStopping``;
- (d) (a) + Lightning's ``EarlyStopping``.

For each it reports the median training steps per second (the training loop, validation included, from
``on_train_start`` to ``on_train_end``) and the median whole ``trainer.fit`` time (set-up, chart and summary
included), then the ratios b/a and c/d and the fixed per-fit cost (b - a, whole fit minus training loop). One more
process of (c) times the package's hooks at each evaluation (callback, traces, early stopping) in microseconds.
``--one CONFIG`` runs one configuration and prints its JSON (what the interleaved runs call).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauEarlyStopping, PlateauMixin

CONFIGURATIONS = {
    "a": "Lightning + torch ReduceLROnPlateau + LearningRateMonitor",
    "b": "PlateauMixin, traces to a CSVLogger",
    "c": "(b) + PlateauEarlyStopping",
    "d": "(a) + Lightning's EarlyStopping",
}
PLATEAU = PlateauConfig(monitor="val_loss", patience=10, factor=0.5)


class _Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=10, factor=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


class _PlateauNet(PlateauMixin, _Net):
    def __init__(self) -> None:
        super().__init__()
        self.plateau = PLATEAU

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    configure_optimizers = PlateauMixin.configure_optimizers


class _Timer(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start
        self.steps = trainer.global_step


def _data(count: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 32, generator=generator)
    return DataLoader(TensorDataset(x, x[:, :1] * 0.5 + 0.1 * torch.randn(count, 1, generator=generator)))


def _hook_timer(callback: PlateauCallback, times: list[float]) -> None:
    """Time the PlateauCallback's work at each validation end (traces and followers included), in seconds."""
    hook = callback.on_validation_end

    def timed(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        hook(trainer, pl_module)
        times.append(time.perf_counter() - start)

    callback.on_validation_end = timed  # type: ignore[method-assign]


def run_one(config: str, steps: int, root: str, time_hooks: bool = False) -> dict[str, Any]:
    """Fit one configuration; steps/s of the training loop, whole-fit seconds, per-evaluation hook times."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    timer = _Timer()
    callbacks: list[pl.Callback] = [timer]
    hook_times: list[float] = []
    if config in ("a", "d"):
        model: pl.LightningModule = _Net()
        callbacks.append(LearningRateMonitor())
        if config == "d":
            callbacks.append(EarlyStopping(monitor="val_loss", patience=1000))
    else:
        model = _PlateauNet()
        plateau = PlateauCallback(verbose=False)
        callbacks.append(plateau)
        if time_hooks:
            _hook_timer(plateau, hook_times)
        if config == "c":
            callbacks.append(PlateauEarlyStopping())
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        val_check_interval=100,
        limit_val_batches=4,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(root),
        log_every_n_steps=50,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    trainer.fit(model, _data(steps, 0), _data(64, 1))
    whole = time.perf_counter() - started
    # The chart is drawn on a background thread once fit has returned: how much longer it took (the process's
    # exit waits for it too).
    chart_s = 0.0
    if config in ("b", "c"):
        chart_started = time.perf_counter()
        assert plateau.chart_path is not None
        chart_s = time.perf_counter() - chart_started
    return {
        "steps": timer.steps,
        "steps_per_s": timer.steps / timer.seconds,
        "loop_s": timer.seconds,
        "fit_s": whole,
        "chart_after_fit_s": chart_s,
        "hook_us": [t * 1e6 for t in hook_times],
    }


def _in_fresh_process(config: str, steps: int, time_hooks: bool = False) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", config, "--steps", str(steps)] + (
        ["--time-hooks"] if time_hooks else []
    )
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(runs: int, steps: int) -> dict[str, Any]:
    """Interleaved fresh-process runs of every configuration, and one process timing the hooks."""
    results: dict[str, list[dict[str, Any]]] = {config: [] for config in CONFIGURATIONS}
    for _ in range(runs):
        for config in CONFIGURATIONS:
            results[config].append(_in_fresh_process(config, steps))
    medians = {
        config: {
            "steps_per_s": statistics.median(r["steps_per_s"] for r in rows),
            "fit_s": statistics.median(r["fit_s"] for r in rows),
            "fixed_s": statistics.median(r["fit_s"] - r["loop_s"] for r in rows),
            "chart_s": statistics.median(r["chart_after_fit_s"] for r in rows),
        }
        for config, rows in results.items()
    }
    hooks = _in_fresh_process("c", steps, time_hooks=True)["hook_us"]
    return {
        "runs": runs,
        "steps": results["a"][0]["steps"],
        "medians": medians,
        "b/a": medians["b"]["steps_per_s"] / medians["a"]["steps_per_s"],
        "c/d": medians["c"]["steps_per_s"] / medians["d"]["steps_per_s"],
        "fixed_over_a_ms": (medians["b"]["fixed_s"] - medians["a"]["fixed_s"]) * 1e3,
        "hook_us_median": statistics.median(hooks) if hooks else float("nan"),
        "evaluations": len(hooks),
    }


def markdown(result: dict[str, Any]) -> str:
    """The step-overhead results as Markdown lines."""
    lines = [
        f"Step overhead: {result['steps']} steps, validation every 100, median of {result['runs']} interleaved"
        " fresh processes per configuration (`benchmarks/step_overhead.py`).",
        "",
        "| configuration | steps/s | whole fit (s) | fit minus training loop (s) |",
        "|---|---|---|---|",
    ]
    for config, name in CONFIGURATIONS.items():
        row = result["medians"][config]
        lines.append(f"| ({config}) {name} | {row['steps_per_s']:.0f} | {row['fit_s']:.2f} | {row['fixed_s']:.3f} |")
    lines += [
        "",
        f"- b/a = **{result['b/a']:.3f}**, c/d = **{result['c/d']:.3f}** (target >= 0.99).",
        f"- Fixed per-fit cost of (b) over (a): **{result['fixed_over_a_ms']:.0f} ms** (target <= 50 ms), until"
        f" `trainer.fit` returns. The chart is drawn after that on a background thread: it was written"
        f" {result['medians']['b']['chart_s'] * 1e3:.0f} ms after fit returned (median), time the process's exit"
        " waits for if nothing else runs.",
        f"- PlateauCallback at each evaluation (value, mean over ranks, decision, traces, PlateauEarlyStopping):"
        f" median **{result['hook_us_median']:.0f} µs** over {result['evaluations']} evaluations.",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--one", choices=sorted(CONFIGURATIONS), help="run one configuration, print its JSON")
    parser.add_argument("--time-hooks", action="store_true", help="with --one: time the PlateauCallback's hooks")
    args = parser.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory() as root:
            print(json.dumps(run_one(args.one, args.steps, root, args.time_hooks)))
        return
    print(markdown(measure(args.runs, args.steps)))


if __name__ == "__main__":
    main()
