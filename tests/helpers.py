"""Small modules and trainers shared by the tests: a metric that follows a script, on CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import lightning
import lightning.pytorch as pl
import pytest
import torch
from packaging.version import Version
from torch.utils.data import DataLoader, TensorDataset

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin

#: Lightning releases before 2.6 resume mid-epoch checkpoints with other batches and validations than 2.6 does; the
#: tests that pin 2.6's choices are skipped there (the plateau follows whatever validations Lightning runs).
needs_lightning_2_6 = pytest.mark.skipif(
    Version(lightning.__version__) < Version("2.6"),
    reason="Lightning < 2.6 resumes mid-epoch checkpoints (and times validations) differently",
)


def loader(n: int = 8, batch_size: int = 2) -> DataLoader:
    """A deterministic regression loader of ``n`` samples."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=batch_size)


class ScriptedModel(pl.LightningModule):
    """A tiny regression model whose monitored metric follows ``values``, one per evaluation.

    ``where`` says where the metric is logged: ``"validation"`` (in ``on_validation_epoch_end``) or
    ``"training"`` (in ``training_step`` with ``on_epoch=True``, the value of the current epoch).
    """

    def __init__(
        self,
        values: Sequence[float],
        monitor: str = "val_loss",
        where: str = "validation",
        lr: float = 0.1,
        train_batches: int = 4,
    ) -> None:
        super().__init__()
        self.values = list(values)
        self.monitor = monitor
        self.where = where
        self.lr = lr
        self.layer = torch.nn.Linear(4, 1)
        self.evaluations = 0
        self.lr_at_train_start: list[float] = []
        self.train_batches = train_batches

    def _next_value(self) -> float:
        value = self.values[min(self.evaluations, len(self.values) - 1)]
        self.evaluations += 1
        return value

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if self.where == "training":
            index = min(self.current_epoch, len(self.values) - 1)
            self.log(self.monitor, torch.tensor(self.values[index]), on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self.lr_at_train_start.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_mse", torch.nn.functional.mse_loss(self.layer(x), y))

    def on_validation_epoch_end(self) -> None:
        if self.where == "validation" and not self.trainer.sanity_checking:
            self.log(self.monitor, self._next_value())

    def train_dataloader(self) -> DataLoader:
        return loader(self.train_batches * 2)

    def val_dataloader(self) -> DataLoader:
        return loader(4)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ScriptedPlateauModel(PlateauMixin, ScriptedModel):
    """:class:`ScriptedModel` with the mixin: its optimizer gets a PlateauScheduler."""

    def __init__(self, values: Sequence[float], plateau: Optional[PlateauConfig] = None, **kwargs: Any) -> None:
        super().__init__(values, **kwargs)
        self.plateau = plateau

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    configure_optimizers = PlateauMixin.configure_optimizers


def trainer(tmp_path: Any, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer; ``kwargs`` override the defaults."""
    options: dict[str, Any] = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_epochs=5,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def plateau_of(fit: pl.Trainer) -> PlateauCallback:
    """The one PlateauCallback that drove ``fit``'s plateau (or was given to it, before a fit).

    Every Trainer also holds the callback Lightning's entry point adds, which stands by when another drives.
    """
    callbacks = [cb for cb in fit.callbacks if isinstance(cb, PlateauCallback)]  # type: ignore[attr-defined]
    driving = (
        [cb for cb in callbacks if cb.scheduler is not None]
        or [cb for cb in callbacks if not cb._implicit]
        or callbacks
    )
    (callback,) = driving
    return callback
