"""PlateauMixin: a LightningModule declares its optimizer and its plateau; the wiring is done for it."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, cast

import lightning.pytorch as pl
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities import rank_zero_warn
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
    one (yours is never replaced). The one it adds takes the plateau of each module it is fitted with, so a
    Trainer can be reused for another module.

    Raises:
        TypeError: at class creation, if ``LightningModule`` comes before the mixin in the bases.

    Example::

        class Classifier(PlateauMixin, L.LightningModule):
            def __init__(self, plateau: PlateauConfig = PlateauConfig(patience=3)):
                super().__init__()
                self.save_hyperparameters()
                self.net = torch.nn.Linear(64, 10)

            def configure_optimizer(self) -> torch.optim.Optimizer:
                return torch.optim.Adam(self.parameters(), lr=1e-3)
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        lightning_first = [
            name
            for name in ("configure_optimizers", "configure_callbacks")
            if getattr(cls, name, None) is getattr(pl.LightningModule, name)
        ]
        if lightning_first:
            bases = ", ".join(base.__name__ for base in cls.__bases__)
            raise TypeError(
                f"class {cls.__name__}({bases}): LightningModule comes before PlateauMixin in the bases, so"
                f" Lightning's own {' and '.join(lightning_first)} hide the mixin's and no plateau would be"
                f" configured. Put the mixin first: class {cls.__name__}(PlateauMixin, LightningModule)."
            )

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``save_hyperparameters``, with every :class:`PlateauConfig` stored as a dict of its fields.

        Plain data reads back everywhere: ``hparams.yaml`` through ``load_hparams_from_yaml`` and
        ``load_from_checkpoint(hparams_file=...)``, and every logger's config (W&B runs can be filtered and swept by
        ``plateau.patience``). :attr:`plateau_config` still gives the dataclass.
        """
        if kwargs.get("frame") is None:
            # Lightning reads the init arguments from its caller's frame, which is this method: point it one further.
            caller = inspect.currentframe()
            kwargs["frame"] = caller.f_back if caller is not None else None
        super().save_hyperparameters(*args, **kwargs)  # type: ignore[misc]
        for stored in (getattr(self, "_hparams", None), getattr(self, "_hparams_initial", None)):
            if isinstance(stored, MutableMapping):
                for key, value in stored.items():
                    if isinstance(value, PlateauConfig):
                        self.__dict__.setdefault("_plateau_hparams", set()).add(key)
                    stored[key] = _plain(value)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep in the checkpoint's hyperparameters the :class:`PlateauConfig` that ``__init__`` was given.

        ``load_from_checkpoint`` then passes ``__init__`` the dataclass its annotation names, as it did before
        the hyperparameters became plain data (the config loads with ``weights_only=True``).
        """
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        saved = checkpoint.get("hyper_parameters")
        for key in self.__dict__.get("_plateau_hparams", ()):
            if isinstance(saved, MutableMapping) and isinstance(saved.get(key), Mapping):
                saved[key] = PlateauConfig.coerce(saved[key])

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
        if plateau is None and not hasattr(self, "plateau") and "plateau" not in getattr(self, "hparams", {}):
            self._warn_unsaved_plateau()
        return PlateauConfig.coerce(plateau)

    def _warn_unsaved_plateau(self) -> None:
        """Warn once when ``__init__`` takes a ``plateau`` that was never kept: the defaults would apply silently."""
        if self.__dict__.get("_plateau_default_warned") or "plateau" not in inspect.signature(type(self)).parameters:
            return
        self.__dict__["_plateau_default_warned"] = True
        name = type(self).__name__
        rank_zero_warn(
            f"{name}.__init__ takes `plateau`, but it was neither saved with `self.save_hyperparameters()` nor"
            f" kept as `self.plateau = plateau`: the default PlateauConfig() ({PlateauConfig().describe()}) applies,"
            f" not the one given. Call `self.save_hyperparameters()` (or set `self.plateau`) in {name}.__init__.",
            category=UserWarning,
        )

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
        # One already in the Trainer drives this module's plateau: the user's, one added for an earlier module of a
        # reused Trainer, or the one Lightning's callbacks_factory entry point adds (both take each module's config).
        if not any(isinstance(cb, PlateauCallback) for cb in present):
            callbacks.append(PlateauCallback._implicit_instance())
        return callbacks


def _plain(value: Any) -> Any:
    """``value`` with every :class:`PlateauConfig` in it, however nested in dicts, lists and tuples, as a dict."""
    if isinstance(value, PlateauConfig):
        return dataclasses.asdict(value)
    if not _holds_config(value):
        return value  # untouched, whatever its type
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list) or type(value) is tuple:
        return type(value)(_plain(item) for item in value)
    return value


def _holds_config(value: Any) -> bool:
    if isinstance(value, PlateauConfig):
        return True
    if isinstance(value, dict):
        return any(_holds_config(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_config(item) for item in value)
    return False
