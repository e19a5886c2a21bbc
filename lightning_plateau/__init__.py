"""Reduce-LR-on-plateau for PyTorch Lightning, stepped once per fresh value, identically on every rank.

The public names are imported on first use (PEP 562), so ``lightning-plateau explain`` and ``replay`` start
without importing Lightning; ``from lightning_plateau import PlateauCallback`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Bound eagerly: `replay` and `compare` are also the names of their modules, and importing such a module later (the
# explain command does) would otherwise make `lightning_plateau.replay` the module instead of the function. They need
# torch only.
from lightning_plateau.compare import PolicyOutcome, compare
from lightning_plateau.replay import Replay, ReplayRow, replay

if TYPE_CHECKING:
    from lightning_plateau._rule import PlateauCut, PlateauEvaluation
    from lightning_plateau.callback import PlateauCallback
    from lightning_plateau.chart import plot_comparison, plot_plateau
    from lightning_plateau.config import PlateauConfig
    from lightning_plateau.early_stopping import PlateauEarlyStopping
    from lightning_plateau.mixin import PlateauMixin
    from lightning_plateau.scheduler import PlateauScheduler
    from lightning_plateau.traces import wandb_run_dir

__version__ = "0.1.0"

_WHERE = {
    "PlateauCallback": "callback",
    "PlateauConfig": "config",
    "PlateauCut": "_rule",
    "PlateauEarlyStopping": "early_stopping",
    "PlateauEvaluation": "_rule",
    "PlateauMixin": "mixin",
    "PlateauScheduler": "scheduler",
    "plot_comparison": "chart",
    "plot_plateau": "chart",
    "wandb_run_dir": "traces",
}

__all__ = [
    "PlateauCallback",
    "PlateauConfig",
    "PlateauCut",
    "PlateauEarlyStopping",
    "PlateauEvaluation",
    "PlateauMixin",
    "PlateauScheduler",
    "PolicyOutcome",
    "Replay",
    "ReplayRow",
    "__version__",
    "compare",
    "plot_comparison",
    "plot_plateau",
    "replay",
    "wandb_run_dir",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_plateau' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lightning_plateau.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
