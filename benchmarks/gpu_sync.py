"""Host-device synchronisations added by lightning-plateau while training the digits model on one GPU.

Run: ``python benchmarks/gpu_sync.py [--epochs N] [--batch-size B]`` on a machine with a CUDA GPU (without
one it stops with a message and exit status 1). Each configuration trains ``examples/digits.py``'s model
with ``torch.cuda.set_sync_debug_mode("warn")``; every "called a synchronizing CUDA operation" warning is
counted, with where it happened:

- ``in steps``: inside a training step, from the first callback's ``on_train_batch_start`` to the module's
  ``on_train_batch_end`` (forward, backward, optimizer step and every callback's batch hooks);
- ``elsewhere``: validation, epoch ends, set-up and tear-down;
- ``plateau``: raised by code of ``lightning_plateau`` (found on the Python stack of the warning).

Only synchronisations requested from Python threads reach Python's warnings and are counted; one inside
autograd's own backward threads would be printed by torch without being counted.

Configurations: the optimizer alone; Lightning stepping torch's ``ReduceLROnPlateau`` on ``val_loss``; the
``PlateauMixin`` (``PlateauCallback`` with its defaults, traces to a CSVLogger included). The package adds no
synchronisation per training step when its row has the same ``in steps`` count as the others and its
``plateau in steps`` is 0; its cost is ``plateau elsewhere`` / evaluations, per evaluation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

import lightning_plateau
from lightning_plateau import PlateauCallback, PlateauConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from digits import DigitsClassifier, DigitsDataModule

_SYNC_WARNING = "called a synchronizing CUDA operation"
_PACKAGE_DIR = str(Path(lightning_plateau.__file__).resolve().parent)
PLATEAU = PlateauConfig(monitor="val_loss", patience=2, factor=0.3)


class _SyncCounter:
    """Counts sync warnings by phase (``in steps`` / ``elsewhere``) and by origin (``plateau`` or not)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, bool]] = Counter()
        self.in_step = False
        self.steps = 0

    def __enter__(self) -> _SyncCounter:
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("always")
        self._original = warnings.showwarning
        warnings.showwarning = self._show
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(*exc)

    def _show(self, message: Any, category: Any, filename: str, lineno: int, *args: Any, **kwargs: Any) -> None:
        if _SYNC_WARNING not in str(message):
            self._original(message, category, filename, lineno, *args, **kwargs)
            return
        from_plateau = any(frame.filename.startswith(_PACKAGE_DIR) for frame in traceback.extract_stack())
        self.counts["in steps" if self.in_step else "elsewhere", from_plateau] += 1

    def total(self, phase: str, from_plateau: Optional[bool] = None) -> int:
        """Warnings counted in ``phase``; from the package's code only (``True``), from elsewhere only, or all."""
        if from_plateau is None:
            return self.counts[phase, True] + self.counts[phase, False]
        return self.counts[phase, from_plateau]


class _StepStart(pl.Callback):
    """First callback of the Trainer: a training step's window opens here."""

    def __init__(self, counter: _SyncCounter) -> None:
        self.counter = counter

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.counter.in_step = True
        self.counter.steps += 1


class _CountedDigits(DigitsClassifier):
    """The digits model; its ``on_train_batch_end``, the last hook of a step, closes the step's window."""

    counter: _SyncCounter

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.counter.in_step = False


class _OptimizerOnly(_CountedDigits):
    def configure_optimizers(self) -> Any:
        return self.configure_optimizer()

    def configure_callbacks(self) -> list[pl.Callback]:
        return []


class _TorchPlateau(_CountedDigits):
    def configure_optimizers(self) -> Any:
        optimizer = self.configure_optimizer()
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=PLATEAU.patience, factor=0.3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        return []


CONFIGURATIONS: dict[str, type[_CountedDigits]] = {
    "optimizer only": _OptimizerOnly,
    "torch ReduceLROnPlateau": _TorchPlateau,
    "lightning-plateau": _CountedDigits,
}


def measure(model_class: type[_CountedDigits], epochs: int, batch_size: int, root: str) -> dict[str, Any]:
    pl.seed_everything(0, verbose=False)
    model = model_class(plateau=PLATEAU, lr=0.01)
    counter = _SyncCounter()
    model.counter = counter
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
        callbacks=[_StepStart(counter)],
    )
    with counter:
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=batch_size))
    plateau = next((cb for cb in trainer.callbacks if isinstance(cb, PlateauCallback)), None)  # type: ignore[attr-defined]
    return {
        "steps": counter.steps,
        "evaluations": epochs if plateau is None else len(plateau.history),
        "in steps": counter.total("in steps"),
        "elsewhere": counter.total("elsewhere"),
        "plateau in steps": counter.total("in steps", True),
        "plateau elsewhere": counter.total("elsewhere", True),
    }


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(
            "gpu_sync.py measures host-device synchronisations on a CUDA GPU, and torch sees none here"
            f" (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Nothing was measured."
        )
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.epochs} epochs, batch {args.batch_size}")
    rows = {}
    for name, model_class in CONFIGURATIONS.items():
        with tempfile.TemporaryDirectory() as root:
            rows[name] = measure(model_class, args.epochs, args.batch_size, root)
    columns = ["steps", "evaluations", "in steps", "elsewhere", "plateau in steps", "plateau elsewhere"]
    print(f"\n{'configuration':<24}" + "".join(f"{column:>18}" for column in columns) + f"{'in steps / step':>18}")
    for name, row in rows.items():
        per_step = row["in steps"] / max(row["steps"], 1)
        print(f"{name:<24}" + "".join(f"{row[column]:>18}" for column in columns) + f"{per_step:>18.2f}")
    ours, baseline = rows["lightning-plateau"], rows["optimizer only"]
    added_per_step = (ours["in steps"] - baseline["in steps"]) / max(ours["steps"], 1)
    per_evaluation = ours["plateau elsewhere"] / max(ours["evaluations"], 1)
    print(
        f"\nlightning-plateau adds {added_per_step:+.2f} synchronisations per training step"
        f" ({ours['plateau in steps']} raised by its code inside steps) and {per_evaluation:.1f} per evaluation."
    )


if __name__ == "__main__":
    main()
