"""Every private Lightning internal the package reads, and what differs between Lightning releases, in one place.

Checked against lightning 2.4.0, 2.5.6 and 2.6.6. When a Lightning release moves one of these, this is the file to
change; the rest of the package uses public Lightning API only.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional

import lightning.pytorch as pl

try:
    from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason as EarlyStoppingReason
except ImportError:  # Lightning < 2.6 has no reasons: the same names and values, so code and checks read alike

    class EarlyStoppingReason(Enum):  # type: ignore[no-redef]
        """Why early stopping stopped training, as Lightning 2.6 names it."""

        NOT_STOPPED = 0
        STOPPING_THRESHOLD = 1
        DIVERGENCE_THRESHOLD = 2
        PATIENCE_EXHAUSTED = 3
        NON_FINITE_METRIC = 4


def fresh_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    """The values logged for the callbacks since the running loop's result collection was last reset.

    ``trainer.callback_metrics`` keeps every value ever logged, so it cannot tell fresh from stale. The running
    loop's result collection holds only what was logged since its last reset, which Lightning does after each
    validation run and each training epoch: exactly one evaluation's worth.

    With several validation dataloaders, Lightning sets the collection's ``dataloader_idx`` back to ``None`` once
    the loaders have run, which hides every value logged from inside a loader (``val_loss/dataloader_idx_0``, or
    ``val_loss`` logged with ``add_dataloader_idx=False``). The collection is read once per dataloader index here,
    so those values are seen exactly as Lightning names them in ``callback_metrics``.
    """
    results = trainer._results
    if results is None:
        return {}
    connector = trainer._logger_connector
    current = results.dataloader_idx
    indices = {item.meta.dataloader_idx for item in results.values()}
    metrics: dict[str, Any] = {}
    try:
        for index in sorted(indices - {current}, key=lambda i: -1 if i is None else i):
            results.dataloader_idx = index
            metrics.update(connector.metrics["callback"])
    finally:
        results.dataloader_idx = current
    # The values of the current index last: with one dataloader these are all there is.
    metrics.update(connector.metrics["callback"])
    return metrics


def logging_step(trainer: pl.Trainer, batch_end: bool = False) -> int:
    """The step Lightning's logger connector gives a value logged now, so traces line up with the monitor.

    It counts batches that stepped, and validation is logged before the batch that ran it is counted; epoch-end
    training metrics are logged one back, at the epoch's last batch (``fit_loop.on_advance_end``). At a training
    batch's end (``batch_end``) the batch is not counted yet either: its per-step metrics are logged at the count.
    """
    step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", None)
    if not isinstance(step, int):
        return trainer.global_step
    return max(step - 1, 0) if trainer.training and not batch_end else step


class StepValueReader:
    """Reads the value of one metric logged per step in the training batch that just ended, if it was logged.

    Lightning keeps a value logged with ``on_step=True`` in the training loop's result collection
    (``trainer._results``, a dict of ``_ResultMetric``), as ``_forward_cache``: a new tensor at each ``self.log``
    call, kept until the next one. ``trainer.callback_metrics`` is filled only after the callbacks'
    ``on_train_batch_end`` and keeps stale values, so neither it nor the logged step tells a fresh value from
    the previous batch's; the tensor's identity does. Reading it is a dict lookup: no copy, no host-device sync.

    Checked against lightning 2.4.0 and 2.6.6 (``_ResultMetric.meta.name``/``on_step``/``on_epoch``/``forked``,
    ``_forward_cache``, ``_ResultCollection`` keyed ``"<hook>.<name>"``).
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self._key: Optional[str] = None
        self._last: Any = None

    def read(self, trainer: pl.Trainer) -> Optional[Any]:
        """The monitor's value logged in this batch (a tensor), ``None`` if this batch logged none.

        Raises:
            ValueError: if the monitor is logged in training, but not per step (the message says how to log it).
        """
        results = trainer._results
        if results is None:
            return None
        item = results.get(self._key) if self._key is not None else None
        if item is None:
            item = self._find(results)
            if item is None:
                return None
        value = item._forward_cache
        if value is None or value is self._last or item.has_reset:
            return None
        self._last = value
        return value

    def _find(self, results: Any) -> Optional[Any]:
        for key, item in results.items():
            meta = item.meta
            if meta.dataloader_idx is not None:
                continue
            step_name = meta.forked_name(True)
            if meta.fx == "on_train_batch_end" and self.monitor in (meta.name, step_name):
                # Lightning calls the module's hook after the callbacks': the value would land in the next batch.
                raise ValueError(
                    f"'{self.monitor}' is logged in `on_train_batch_end`, which Lightning calls after this callback's"
                    f" own: a window would take it one batch late. Log it in `training_step`"
                )
            if meta.on_step and self.monitor in (meta.name, step_name):
                self._key = key
                return item
            if self.monitor in (meta.name, meta.forked_name(False)):
                raise ValueError(_not_per_step(self.monitor, meta.name, meta.fx, meta.on_step))
        return None


def _not_per_step(monitor: str, name: str, hook: str, on_step: bool) -> str:
    if on_step:  # `<name>_epoch` of a value logged with on_step=True and on_epoch=True
        return (
            f"'{monitor}' is the epoch mean of '{name}', logged in `{hook}`; a window judges the values logged per"
            f" step: monitor '{name}' (or '{name}_step') with window_steps, or '{monitor}' without"
        )
    return (
        f"'{monitor}' is logged in `{hook}` with on_step=False (one value per epoch); a window judges the values"
        f" logged per step: log it with `self.log('{monitor}', value, on_step=True)`, or set window_steps=0"
    )


def can_stop_early(trainer: pl.Trainer) -> bool:
    """Whether ``trainer.should_stop`` ends the fit now (``min_epochs`` and ``min_steps`` are met)."""
    return bool(trainer.fit_loop._can_stop_early)


def batches_started(trainer: pl.Trainer) -> int:
    """Training batches started in this fit so far, counting those before a resume (restored from the checkpoint)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)
