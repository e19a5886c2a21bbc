"""Reduce-LR-on-plateau for PyTorch Lightning, stepped once per fresh value, identically on every rank."""

from lightning_plateau.callback import PlateauCallback
from lightning_plateau.config import PlateauConfig
from lightning_plateau.mixin import PlateauMixin
from lightning_plateau.scheduler import PlateauCut, PlateauEvaluation, PlateauScheduler

__version__ = "0.1.0"

__all__ = [
    "PlateauCallback",
    "PlateauConfig",
    "PlateauCut",
    "PlateauEvaluation",
    "PlateauMixin",
    "PlateauScheduler",
    "__version__",
]
