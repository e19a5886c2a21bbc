"""The GPU check: syncs per training step, overhead on the digits model, and FSDP / bf16-mixed fits on one card.

Run: ``python benchmarks/gpu_check.py [--markdown PATH]`` on a machine with one CUDA GPU; it takes a few minutes
on an H100-class card. Without CUDA it stops with a message and exit status 1. It reports:

1. host-device synchronisations per training step added by the package, counted under
   ``torch.cuda.set_sync_debug_mode("warn")`` (``benchmarks/gpu_sync.py``): must be 0;
2. the overhead ratio on ``examples/digits.py``'s model: training steps per second with ``PlateauMixin`` (traces
   to a CSVLogger) over Lightning stepping torch's ``ReduceLROnPlateau``, median of interleaved runs;
3. short fits under ``strategy="fsdp"`` (``devices=1``) and under ``precision="bf16-mixed"`` whose monitor follows
   a script: their cuts (evaluation and LRs) must equal a CPU run's.

``--markdown PATH`` also writes the results as a Markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import lightning
import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

import lightning_plateau
from lightning_plateau import PlateauCallback, PlateauConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import gpu_sync
from digits import DigitsClassifier, DigitsDataModule

SCRIPT = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8]
SCRIPTED = PlateauConfig(monitor="val_scripted", patience=2, factor=0.5)


class _Timer(pl.Callback):
    """Wall-clock time of the training loop alone (set-up and tear-down excluded), and the steps it ran."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        self.steps = trainer.global_step


class _TorchPlateau(DigitsClassifier):
    """Lightning stepping torch's ReduceLROnPlateau on val_loss, with LearningRateMonitor's usual company."""

    def configure_optimizers(self) -> Any:
        optimizer = self.configure_optimizer()
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2, factor=0.3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        return []


class _Scripted(DigitsClassifier):
    """The digits model, whose monitored value follows SCRIPT (one value per validation) however it trains."""

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log("val_scripted", SCRIPT[min(self.current_epoch, len(SCRIPT) - 1)])


def _steps_per_second(model_class: type[DigitsClassifier], root: str, epochs: int) -> float:
    pl.seed_everything(0, verbose=False)
    timer = _Timer()
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="gpu",
        devices=1,
        max_epochs=epochs,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(root),
        log_every_n_steps=10,
        callbacks=[timer],
    )
    trainer.fit(
        model_class(plateau=PlateauConfig(monitor="val_loss", patience=2, factor=0.3), lr=0.01),
        datamodule=DigitsDataModule(batch_size=64),
    )
    return timer.steps / timer.seconds


def overhead(epochs: int, repeats: int) -> dict[str, Any]:
    """Median steps/s of each configuration over interleaved runs, and the ratio lightning-plateau / torch."""
    runs: dict[str, list[float]] = {"torch ReduceLROnPlateau": [], "lightning-plateau": []}
    with tempfile.TemporaryDirectory() as root:
        _steps_per_second(_TorchPlateau, root, 1)  # warm-up: CUDA context, kernels, data loading
        for _ in range(repeats):
            runs["torch ReduceLROnPlateau"].append(_steps_per_second(_TorchPlateau, root, epochs))
            runs["lightning-plateau"].append(_steps_per_second(DigitsClassifier, root, epochs))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "runs": runs,
        "medians": medians,
        "ratio": medians["lightning-plateau"] / medians["torch ReduceLROnPlateau"],
    }


def _scripted_cuts(root: str, **trainer_kwargs: Any) -> list[tuple[int, tuple[float, ...]]]:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        default_root_dir=root,
        max_epochs=len(SCRIPT),
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        **trainer_kwargs,
    )
    trainer.fit(_Scripted(plateau=SCRIPTED, lr=0.01), datamodule=DigitsDataModule(batch_size=64))
    (plateau,) = [cb for cb in trainer.callbacks if isinstance(cb, PlateauCallback) and cb.scheduler is not None]  # type: ignore[attr-defined]
    assert plateau.scheduler is not None
    return [(cut.evaluation, cut.lrs_after) for cut in plateau.scheduler.cuts]


def strategies() -> dict[str, Any]:
    """Cuts of the scripted fit on CPU, under FSDP on one GPU, and under bf16-mixed on one GPU."""
    results: dict[str, Any] = {}
    runs = {
        "cpu": {"accelerator": "cpu", "devices": 1},
        "fsdp, devices=1": {"accelerator": "gpu", "devices": 1, "strategy": "fsdp"},
        "bf16-mixed": {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"},
    }
    for name, kwargs in runs.items():
        with tempfile.TemporaryDirectory() as root:
            try:
                results[name] = _scripted_cuts(root, **kwargs)
            except Exception as err:  # reported, not raised: the other checks still run
                results[name] = f"failed: {type(err).__name__}: {err}"
    return results


def _markdown(report: dict[str, Any]) -> str:
    sync, cost, fits = report["sync"], report["overhead"], report["strategies"]
    lines = [
        f"## GPU check ({report['date']})",
        "",
        f"{report['device']}; torch {report['torch']}, lightning {report['lightning']}, lightning-plateau"
        f" {report['package']}, Python {report['python']}. Measured by `benchmarks/gpu_check.py`.",
        "",
        "| configuration | steps | evaluations | syncs in steps | syncs elsewhere | by the package in steps |"
        " by the package elsewhere |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in sync["rows"].items():
        lines.append(
            f"| {name} | {row['steps']} | {row['evaluations']} | {row['in steps']} | {row['elsewhere']}"
            f" | {row['plateau in steps']} | {row['plateau elsewhere']} |"
        )
    lines += [
        "",
        f"- Syncs added per training step: **{sync['added_per_step']:+.2f}** (by the package's own code inside"
        f" steps: {sync['plateau_in_steps']}); per evaluation: {sync['per_evaluation']:.1f}.",
        f"- Steps/s, median of {len(cost['runs']['lightning-plateau'])} interleaved runs: torch ReduceLROnPlateau"
        f" {cost['medians']['torch ReduceLROnPlateau']:.0f}, lightning-plateau"
        f" {cost['medians']['lightning-plateau']:.0f}; ratio **{cost['ratio']:.3f}**. Every run (steps/s):"
        + "".join(f" {name} {[round(v) for v in values]};" for name, values in cost["runs"].items()),
    ]
    reference = fits["cpu"]
    for name, cuts in fits.items():
        verdict = "" if name == "cpu" else (" (equal to the CPU run's)" if cuts == reference else " (DIFFERS from CPU)")
        lines.append(f"- Scripted fit, {name}: cuts (evaluation, LRs after) {cuts}{verdict}.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each sync-counted fit")
    # Short fits time mostly start-up noise (4 epochs varied by 20% from run to run on an H100): time longer ones.
    parser.add_argument("--timed-epochs", type=int, default=20, help="epochs of each timed fit")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed runs per configuration")
    parser.add_argument("--markdown", help="also write the results as Markdown to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check.py needs a CUDA GPU, and torch sees none here"
            f" (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Nothing was measured."
        )
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "package": lightning_plateau.__version__,
        "python": platform.python_version(),
    }
    rows = {}
    for name, model_class in gpu_sync.CONFIGURATIONS.items():
        with tempfile.TemporaryDirectory() as root:
            rows[name] = gpu_sync.measure(model_class, args.epochs, 64, root)
    ours, baseline = rows["lightning-plateau"], rows["optimizer only"]
    report["sync"] = {
        "rows": rows,
        "added_per_step": (ours["in steps"] - baseline["in steps"]) / max(ours["steps"], 1),
        "plateau_in_steps": ours["plateau in steps"],
        "per_evaluation": ours["plateau elsewhere"] / max(ours["evaluations"], 1),
    }
    report["overhead"] = overhead(args.timed_epochs, args.repeats)
    report["strategies"] = strategies()
    report["seconds"] = time.perf_counter() - started
    text = _markdown(report)
    print(text)
    print(f"gpu_check.py took {report['seconds']:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
