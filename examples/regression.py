"""Regress scikit-learn's diabetes progression with LightningCLI and a plateau learning-rate schedule.

The same shape as ``digits.py`` for a regression: the plateau watches ``val_mse``, the mean squared
error of the standardized target on the validation split. The data ships with scikit-learn: nothing
is downloaded. At the end of ``fit`` the script prints every learning-rate cut and the log directory.

Run::

    python examples/regression.py fit --config configs/regression.yaml
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningCLI
from sklearn.datasets import load_diabetes
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.regression import MeanSquaredError

from lightning_plateau import PlateauConfig, PlateauMixin


class DiabetesDataModule(pl.LightningDataModule):
    """The 442 bundled diabetes records, split at random with a fixed seed, standardized.

    Features and target are standardized with the training split's mean and standard deviation,
    so an MSE of 1.0 is what predicting the mean would score.

    Args:
        val_fraction: share of the records held out for validation.
        batch_size: samples per batch.
        seed: seed of the train/validation split.
    """

    def __init__(self, val_fraction: float = 0.2, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str) -> None:
        features, target = load_diabetes(return_X_y=True)
        x = torch.tensor(features, dtype=torch.float32)
        y = torch.tensor(target, dtype=torch.float32).unsqueeze(1)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        num_val = round(len(x) * self.val_fraction)
        train, val = order[num_val:], order[:num_val]
        x_mean, x_std = x[train].mean(dim=0), x[train].std(dim=0)
        y_mean, y_std = y[train].mean(), y[train].std()
        x, y = (x - x_mean) / x_std, (y - y_mean) / y_std
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=self.batch_size)


class DiabetesRegressor(PlateauMixin, pl.LightningModule):
    """A small MLP over the 10 features; its LR is cut when ``plateau.monitor`` stops improving.

    Args:
        plateau: when and how to cut the learning rate.
        lr: initial learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (with momentum 0.9).
        hidden: width of the hidden layer.
    """

    def __init__(
        self,
        plateau: PlateauConfig = PlateauConfig(monitor="val_mse"),
        lr: float = 1e-2,
        optimizer: Literal["adam", "sgd"] = "sgd",
        hidden: int = 32,
    ) -> None:
        super().__init__()
        # Keeps `plateau` in the checkpoint; the mixin reads it from `self.hparams`.
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.val_mse = MeanSquaredError()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_mse", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_mse(self(x), y)
        self.log("val_mse", self.val_mse)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        # Singular: the mixin's `configure_optimizers` adds the plateau scheduler to this optimizer.
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class PlateauReportCLI(LightningCLI):
    """LightningCLI that names the log directory when ``fit`` ends (the PlateauCallback's message has the rest)."""

    def after_fit(self) -> None:
        logger = self.trainer.logger
        if self.trainer.is_global_zero and logger is not None and logger.log_dir is not None:
            print(f"Logs: {logger.log_dir}")


def main(args: list[str] | None = None) -> None:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (as in tests)."""
    PlateauReportCLI(
        DiabetesRegressor,
        DiabetesDataModule,
        args=args,
        # The optimizer comes from `configure_optimizer`: no `--optimizer` / `--lr_scheduler` options.
        auto_configure_optimizers=False,
        # Repeated runs write their config.yaml to the same log directory.
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
