"""PlateauMixin: a LightningModule declares its optimizer and its plateau; the wiring is done for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.optim import Optimizer

from lightning_plateau.callback import PlateauCallback
from lightning_plateau.config import PlateauConfig
from lightning_plateau.scheduler import PlateauScheduler


class PlateauMixin:
    """Give a LightningModule a plateau LR schedule that steps once per fresh value of the monitor.

    Inherit it before ``LightningModule``, write ``configure_optimizer`` (singular) and say which plateau:
    ``self.plateau = PlateauConfig(...)`` (or a dict), or an ``__init__`` argument ``plateau: PlateauConfig``
    saved with ``self.save_hyperparameters()`` (what LightningCLI reads from YAML). Without either, the
    defaults of :class:`PlateauConfig` apply (``val_loss``, ``min``, patience 10).

    The mixin's ``configure_optimizers`` returns Lightning's dict with a :class:`PlateauScheduler` and its
    monitor keys, and ``configure_callbacks`` adds a :class:`PlateauCallback` unless the Trainer already has
    one (yours is never replaced).

    Example::

        class Classifier(PlateauMixin, L.LightningModule):
            def __init__(self, plateau: PlateauConfig = PlateauConfig(patience=3)):
                super().__init__()
                self.save_hyperparameters()
                self.net = torch.nn.Linear(64, 10)

            def configure_optimizer(self) -> torch.optim.Optimizer:
                return torch.optim.Adam(self.parameters(), lr=1e-3)
    """

    def configure_optimizer(self) -> Optimizer:
        """Return the optimizer whose LR follows the plateau. Override this, not ``configure_optimizers``."""
        raise NotImplementedError(
            f"{type(self).__name__} inherits PlateauMixin: define `configure_optimizer(self) -> Optimizer`"
            " (singular) returning the optimizer; the mixin's `configure_optimizers` adds the scheduler."
        )

    @property
    def plateau_config(self) -> PlateauConfig:
        """The module's plateau policy: ``self.plateau``, else ``self.hparams["plateau"]``, else the defaults."""
        plateau = getattr(self, "plateau", None)
        if plateau is None:
            hparams = getattr(self, "hparams", {})
            plateau = hparams.get("plateau") if hasattr(hparams, "get") else None
        return PlateauConfig.coerce(plateau)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """Lightning's optimizer dict: the optimizer, a :class:`PlateauScheduler` and its monitor keys."""
        optimizer = self.configure_optimizer()
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"`configure_optimizer` must return one torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        config = self.plateau_config
        lr_scheduler: dict[str, Any] = {"scheduler": PlateauScheduler(optimizer, config)}
        if getattr(self, "automatic_optimization", True):
            # Manual optimization takes no monitor keys (Lightning warns about them); the callback steps either way.
            lr_scheduler.update(monitor=config.monitor, interval="epoch", frequency=1, strict=config.strict)
        return cast(OptimizerLRSchedulerConfig, {"optimizer": optimizer, "lr_scheduler": lr_scheduler})

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """The module's other callbacks plus a :class:`PlateauCallback`, unless the Trainer already has one."""
        parent = super().configure_callbacks()  # type: ignore[misc]
        callbacks = [parent] if isinstance(parent, Callback) else list(parent)
        trainer = getattr(self, "_trainer", None)
        present = list(callbacks) + (list(trainer.callbacks) if trainer is not None else [])
        if not any(isinstance(cb, PlateauCallback) for cb in present):
            callbacks.append(PlateauCallback(config=self.plateau_config))
        return callbacks
