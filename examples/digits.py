"""Classify scikit-learn's 8x8 digits with LightningCLI and a plateau learning-rate schedule.

The model inherits :class:`~lightning_plateau.PlateauMixin` and takes its plateau policy as an
``__init__`` argument, so LightningCLI reads it from YAML or from ``--model.plateau.patience 3``.
The data ships with scikit-learn: nothing is downloaded. At the end of ``fit`` the script prints
every learning-rate cut and where the logger wrote the run.

Run::

    python examples/digits.py fit --config configs/digits.yaml
    python examples/digits.py fit --config configs/digits.yaml --model.plateau.patience 3
"""

from __future__ import annotations

import os
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningCLI
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split
from torchmetrics.classification import MulticlassAccuracy

from lightning_plateau import PlateauConfig, PlateauMixin, wandb_run_dir


class DigitsDataModule(pl.LightningDataModule):
    """The 1797 bundled 8x8 digit images, pixels scaled to [0, 1], split at random with a fixed seed.

    Args:
        val_fraction: share of the images held out for validation.
        batch_size: samples per batch.
        seed: seed of the train/validation split.
    """

    def __init__(self, val_fraction: float = 0.2, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str) -> None:
        images, labels = load_digits(return_X_y=True)
        dataset = TensorDataset(
            torch.tensor(images, dtype=torch.float32) / 16.0,
            torch.tensor(labels, dtype=torch.long),
        )
        num_val = round(len(dataset) * self.val_fraction)
        generator = torch.Generator().manual_seed(self.seed)
        self.train_set, self.val_set = random_split(dataset, [len(dataset) - num_val, num_val], generator=generator)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=self.batch_size)


class DigitsClassifier(PlateauMixin, pl.LightningModule):
    """A small MLP over the 64 pixels; its LR is cut when ``plateau.monitor`` stops improving.

    Args:
        plateau: when and how to cut the learning rate.
        lr: initial learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (with momentum 0.9).
        hidden: width of the hidden layer.
    """

    def __init__(
        self,
        plateau: PlateauConfig = PlateauConfig(),
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        hidden: int = 64,
    ) -> None:
        super().__init__()
        # Keeps `plateau` in the checkpoint; the mixin reads it from `self.hparams`.
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.val_acc = MulticlassAccuracy(num_classes=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", self.val_acc)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        # Singular: the mixin's `configure_optimizers` adds the plateau scheduler to this optimizer.
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class PlateauReportCLI(LightningCLI):
    """LightningCLI that completes the offline W&B run when ``fit`` ends.

    The PlateauCallback's end-of-fit message already says it all, once: the cuts, the LRs, the best value, the
    chart and the W&B run with the command that uploads it (each cut was announced when it happened, and
    PlateauEarlyStopping said why it stopped).
    """

    def after_fit(self) -> None:
        if self.trainer.is_global_zero and wandb_run_dir(self.trainer) is not None:
            import wandb

            # Completes the offline run's .wandb file before the script exits.
            wandb.finish()
            wandb.teardown()


def main(args: list[str] | None = None) -> None:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (as in tests)."""
    # An offline W&B run needs no account and no network; `wandb sync` uploads it later if wanted.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    PlateauReportCLI(
        DigitsClassifier,
        DigitsDataModule,
        args=args,
        # The optimizer comes from `configure_optimizer`: no `--optimizer` / `--lr_scheduler` options.
        auto_configure_optimizers=False,
        # Repeated runs write their config.yaml to the same save_dir.
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
