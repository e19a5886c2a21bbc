"""The tasks of ``detectors.py``: the examples' models on data that ships with scikit-learn, clean and noisy.

Each task is a model of ``examples/`` (``DigitsClassifier``, ``DiabetesRegressor``), its optimizer and epoch budget,
a base plateau policy (the ``best`` arm's) and a split of the bundled data. The seed drives everything random in a
run: the split, the label noise, the initial weights and the order of the batches. A fifth of the data is held out
as a test set that no plateau sees, to score the model each arm leaves at the end of its budget.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_diabetes, load_digits
from torch.utils.data import TensorDataset

from lightning_plateau import PlateauConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from digits import DigitsClassifier
from regression import DiabetesRegressor

TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Task:
    """One training set-up, run once per seed and arm.

    Attributes:
        name: short name used in tables and in ``--tasks``.
        summary: what makes it clean or noisy, for the tasks table.
        dataset: ``"digits"`` (10 classes, 1797 images) or ``"diabetes"`` (regression, 442 records).
        val_fraction: share of the data in the validation set the plateau watches.
        label_noise: share of the training labels replaced by a class drawn uniformly (digits only).
        epochs: the fixed budget; one evaluation per epoch.
        lr: initial learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9), as in the examples.
        plateau: the base PlateauConfig fields; every arm starts from them.
    """

    name: str
    summary: str
    dataset: Literal["digits", "diabetes"]
    val_fraction: float
    epochs: int
    lr: float
    optimizer: Literal["adam", "sgd"]
    plateau: dict[str, Any] = field(default_factory=dict)
    label_noise: float = 0.0

    @property
    def monitor(self) -> str:
        """The monitored metric."""
        return str(self.plateau["monitor"])

    @property
    def extra_metrics(self) -> tuple[str, ...]:
        """Other validation metrics recorded at each evaluation."""
        return ("val_acc",) if self.dataset == "digits" else ()

    @property
    def test_metric(self) -> str:
        """Name of the held-out score of the final model."""
        return "test acc" if self.dataset == "digits" else "test mse"

    @property
    def test_higher_is_better(self) -> bool:
        """Whether a higher test score is better."""
        return self.dataset == "digits"

    def describe(self) -> str:
        """Model, optimizer, budget and plateau in one line."""
        model = "MLP 64-64-10" if self.dataset == "digits" else "MLP 10-32-1"
        config = PlateauConfig(**self.plateau)
        return (
            f"{model}, {self.optimizer} lr {self.lr:g}, {self.epochs} epochs; {config.describe()},"
            f" min_lr {config.min_lr:g}"
        )


_DIGITS_PLATEAU = {"monitor": "val_loss", "patience": 5, "factor": 0.5, "min_lr": 1e-4}
_DIABETES_PLATEAU = {"monitor": "val_mse", "patience": 5, "factor": 0.5, "min_lr": 1e-4}

TASKS = {
    task.name: task
    for task in (
        Task("digits", "val 20% (359 images)", "digits", 0.2, 50, 1e-2, "adam", _DIGITS_PLATEAU),
        Task("digits-smallval", "val 5% (90 images)", "digits", 0.05, 50, 1e-2, "adam", _DIGITS_PLATEAU),
        Task(
            "digits-labelnoise",
            "val 20%, 30% of training labels redrawn at random",
            "digits",
            0.2,
            50,
            1e-2,
            "adam",
            _DIGITS_PLATEAU,
            label_noise=0.3,
        ),
        Task("diabetes", "val 20% (88 records)", "diabetes", 0.2, 80, 5e-3, "sgd", _DIABETES_PLATEAU),
        Task("diabetes-smallval", "val 5% (22 records)", "diabetes", 0.05, 80, 5e-3, "sgd", _DIABETES_PLATEAU),
    )
}


@dataclass(frozen=True)
class Split:
    """The data of one (task, seed): training and validation sets, and the held-out test tensors."""

    train: TensorDataset
    val: TensorDataset
    test_x: torch.Tensor
    test_y: torch.Tensor


def make_split(task: Task, seed: int) -> Split:
    """Split the task's bundled data at random with ``seed`` (test first, then validation, the rest to train)."""
    generator = torch.Generator().manual_seed(seed)
    if task.dataset == "digits":
        images, labels = load_digits(return_X_y=True)
        x = torch.tensor(images, dtype=torch.float32) / 16.0
        y = torch.tensor(labels, dtype=torch.long)
    else:
        features, target = load_diabetes(return_X_y=True)
        x = torch.tensor(features, dtype=torch.float32)
        y = torch.tensor(target, dtype=torch.float32).unsqueeze(1)
    order = torch.randperm(len(x), generator=generator)
    num_test, num_val = round(len(x) * TEST_FRACTION), round(len(x) * task.val_fraction)
    test, val, train = order[:num_test], order[num_test : num_test + num_val], order[num_test + num_val :]
    if task.dataset == "diabetes":
        # As examples/regression.py: standardized with the training split's statistics (MSE 1 = predicting the mean).
        x = (x - x[train].mean(dim=0)) / x[train].std(dim=0)
        y = (y - y[train].mean()) / y[train].std()
    train_y = y[train].clone()
    if task.label_noise:
        noisy = torch.rand(len(train), generator=generator) < task.label_noise
        train_y[noisy] = torch.randint(0, 10, (int(noisy.sum()),), generator=generator)
    return Split(TensorDataset(x[train], train_y), TensorDataset(x[val], y[val]), x[test], y[test])


def make_model(task: Task, plateau: PlateauConfig, lr: float | None = None) -> pl.LightningModule:
    """The example's model for ``task``, with ``plateau`` and the task's optimizer (``lr`` replaces the task's)."""
    model_class = DigitsClassifier if task.dataset == "digits" else DiabetesRegressor
    model: pl.LightningModule = model_class(plateau=plateau, lr=task.lr if lr is None else lr, optimizer=task.optimizer)
    return model


def test_score(task: Task, model: pl.LightningModule, split: Split) -> float:
    """The model's accuracy (digits) or MSE (diabetes) on the held-out test set."""
    model.eval()
    with torch.no_grad():
        output = model(split.test_x)
    if task.dataset == "digits":
        return float((output.argmax(dim=1) == split.test_y).float().mean())
    return float(torch.nn.functional.mse_loss(output, split.test_y))
