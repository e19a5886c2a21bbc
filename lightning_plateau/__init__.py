"""Reduce-LR-on-plateau for PyTorch Lightning, stepped once per fresh value, identically on every rank."""

from lightning_plateau.callback import PlateauCallback
from lightning_plateau.chart import plot_plateau
from lightning_plateau.config import PlateauConfig
from lightning_plateau.early_stopping import PlateauEarlyStopping
from lightning_plateau.mixin import PlateauMixin
from lightning_plateau.replay import Replay, ReplayRow, replay
from lightning_plateau.scheduler import PlateauCut, PlateauEvaluation, PlateauScheduler
from lightning_plateau.traces import wandb_run_dir

__version__ = "0.1.0"

__all__ = [
    "PlateauCallback",
    "PlateauConfig",
    "PlateauEarlyStopping",
    "PlateauCut",
    "PlateauEvaluation",
    "PlateauMixin",
    "PlateauScheduler",
    "Replay",
    "ReplayRow",
    "__version__",
    "plot_plateau",
    "replay",
    "wandb_run_dir",
]
