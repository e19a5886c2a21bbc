"""PlateauCallback: steps the plateau scheduler once per fresh value, identically on every rank."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from lightning_plateau._checks import check_restore, check_setup
from lightning_plateau._format import format_cut, format_lrs, format_steps
from lightning_plateau._lightning import StepValueReader, batches_started, fresh_metrics
from lightning_plateau._restore import BestState
from lightning_plateau._window import _StepWindow
from lightning_plateau.config import PlateauConfig
from lightning_plateau.scheduler import PlateauEvaluation, PlateauScheduler
from lightning_plateau.traces import _summary_message, _Traces

if TYPE_CHECKING:
    from pathlib import Path


# Where a monitor's fresh values come from, learned from the first one.
_VALIDATION = "validation"
_TRAINING = "training"
# Per-step training values, judged as the mean of each window of `window_steps` optimizer steps.
_WINDOWS = "windows"


class PlateauCallback(Callback):
    r"""Owns *when* the plateau scheduler steps: once per fresh value of the monitor, the same on every rank.

    Lightning steps a ``ReduceLROnPlateau`` from its training loop on ``trainer.callback_metrics``, which
    are never cleared: stale values are judged again, strict mode crashes before the first validation,
    a resume loses a step, and each DDP rank judges its own value. This callback takes the stepping over:

    - a value is *fresh* when the loop that just ended logged it: a validation run (any
      ``val_check_interval``, ``check_val_every_n_epoch``, ``limit_val_batches``), or a training epoch
      for a metric logged with ``on_epoch=True``. Sanity checks and stale values are never judged;
    - the value judged is the mean over ranks (one collective per evaluation), so every rank takes the
      same decision whether or not the metric was logged with ``sync_dist``;
    - the step happens in ``on_validation_end`` / ``on_train_epoch_end``, before ``ModelCheckpoint``
      writes, so a checkpoint holds the state after that evaluation and a resume repeats nothing;
    - with ``PlateauConfig(warmup_steps=N)``, after every training batch (``on_train_batch_end``) the scheduler
      sets the LR of optimizer step ``trainer.global_step`` until the warmup is over: a few float operations,
      no tensor, no collective. Between batches the param groups then always hold the LR the next optimizer step
      uses, as Lightning's own step-interval schedulers leave them, so evaluations, checkpoints and
      ``LearningRateMonitor`` see it;
    - with ``PlateauConfig(window_steps=N)`` the monitor is a training metric logged per step: every value
      logged is added to a running sum on its own device (no sync), and the mean of a window is judged in
      ``on_train_batch_end`` once the optimizer-step count reaches a multiple of N (one collective per window).
      The partial window is in the checkpoint. With ``window_steps=0`` no per-step hook does any work;
    - with ``restore_best_on_cut``, a cut loads the module's weights and the optimizers' per-parameter state
      of the best evaluation (kept on CPU, taken at each new best), on every rank, before ``ModelCheckpoint``
      writes: the checkpoint of that evaluation holds the restored weights, the cut LR and the kept copy.

    With :class:`~lightning_plateau.PlateauMixin` the callback is added for you. Without it, give a
    ``config``: the callback attaches a :class:`~lightning_plateau.PlateauScheduler` to the optimizer
    that ``configure_optimizers`` returns.

    Args:
        config: the policy, a :class:`~lightning_plateau.PlateauConfig` or a dict of its fields. ``None``:
            take it from the keyword fields below, else from the module's ``PlateauScheduler`` (the mixin's).
        monitor: shorthand for ``PlateauConfig(monitor=...)``, as ``EarlyStopping(monitor=...)`` is written;
            likewise ``mode``, ``factor``, ``patience``, ``threshold``, ``threshold_mode``, ``cooldown``,
            ``min_lr``, ``eps``, ``strict``, ``warmup_steps``, ``warmup_start_factor``, ``on_nonfinite``,
            ``window_steps``, ``restore_best_on_cut``, ``smoothing``, ``detector``, ``slope_window``,
            ``slope_confidence`` and ``slope_robust``. Fields not given take PlateauConfig's defaults. Give these
            or ``config``, not both.
        verbose: log a rank-zero message at each cut, and one at the end of fit naming the chart; show the
            plateau's state in Lightning's progress bar (``plateau=lr 1e-3 · bad 2/3``; a slope count past
            ``patience + 1`` at a cut as ``bad 6 > patience 3``; ``· cut withheld`` where ``max_reductions`` held
            a cut back).
        log_traces: at each evaluation, log ``plateau/value`` (and with ``smoothing`` ``plateau/smoothed``, the
            average judged), ``plateau/best``, ``plateau/num_bad``,
            ``plateau/cooldown``, ``plateau/reductions``, ``plateau/evaluation`` and the LR after the decision
            (``plateau/lr``, or ``plateau/lr/pg0``, ... for several param groups) to every logger of the Trainer,
            on rank zero, at Lightning's step; at the end of fit write ``plateau.png`` beside the first logger's
            files (needs matplotlib; no file without a logger; drawn on a background thread, see :attr:`chart_path`)
            and, with a ``WandbLogger``, add the best value,
            the final LRs and the number of cuts to the run's summary, a table of cuts and the chart. ``False``:
            none of this.

    Raises:
        MisconfigurationException: at fit start, if the module already returns a plain ``ReduceLROnPlateau``
            (it would be stepped twice), if no config is known, if this callback's config contradicts
            the module's, or with ``restore_best_on_cut`` under a strategy that shards the module (FSDP,
            DeepSpeed, ModelParallel).
        RuntimeError: with ``strict=True``, after the first evaluation that should have produced the
            monitor when it was not logged (the message lists the metrics that were); with windows, at the end of
            the first window if no step logged the monitor.
        MisconfigurationException: with windows, if the monitor turns out to be logged in validation, or in
            training without ``on_step=True``.
        ValueError: if ``log_traces`` is not a bool, or a keyword field is outside its allowed range.
        TypeError: if ``config`` and keyword fields are both given.

    Example::

        trainer = Trainer(callbacks=[PlateauCallback(monitor="val_acc", mode="max", patience=3)])
        trainer = Trainer(callbacks=[PlateauCallback(PlateauConfig(monitor="val_loss", patience=5))])
    """

    def __init__(
        self,
        config: PlateauConfig | Mapping[str, Any] | None = None,
        *,
        monitor: Optional[str] = None,
        mode: Optional[Literal["min", "max"]] = None,
        factor: Optional[float] = None,
        patience: Optional[int] = None,
        threshold: Optional[float] = None,
        threshold_mode: Optional[Literal["rel", "abs"]] = None,
        cooldown: Optional[int] = None,
        min_lr: Optional[Union[float, list[float]]] = None,
        eps: Optional[float] = None,
        strict: Optional[bool] = None,
        warmup_steps: Optional[int] = None,
        warmup_start_factor: Optional[float] = None,
        on_nonfinite: Optional[Literal["bad", "skip", "raise"]] = None,
        window_steps: Optional[int] = None,
        restore_best_on_cut: Optional[bool] = None,
        smoothing: Optional[float] = None,
        detector: Optional[Literal["best", "slope"]] = None,
        slope_window: Optional[int] = None,
        slope_confidence: Optional[float] = None,
        slope_robust: Optional[bool] = None,
        verbose: bool = True,
        log_traces: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(log_traces, bool):
            raise ValueError(f"`log_traces` must be True or False, got {log_traces!r}")
        self.log_traces = log_traces
        self._traces = _Traces()
        fields = PlateauConfig.keyword_fields(locals())
        self.config: Optional[PlateauConfig] = None
        if config is not None or any(value is not None for value in fields.values()):
            self.config = PlateauConfig.from_arguments("PlateauCallback", config, fields)
        # The checkpoint key comes from this config only, never from one adopted later: Lightning restores callback
        # state before `on_fit_start` (where a module's own PlateauScheduler is adopted), so a key that changed on
        # adoption would differ between saving and restoring, and a resumed run would silently lose its history.
        self._key_config = self.config
        self.verbose = verbose
        # Added for the user (by PlateauMixin or Lightning's callbacks_factory entry point), not given by them: it
        # stands down when the Trainer has no plateau or the user gave a PlateauCallback of their own.
        self._implicit = False
        self.scheduler: Optional[PlateauScheduler] = None
        # the LR of each param group as the plateau last left it, to notice changes made by anything else
        self._expected_lrs: Optional[tuple[float, ...]] = None
        self._source: Optional[str] = None
        self._validation_runs = 0
        self._train_epochs = 0
        self._epoch_start: Optional[int] = None
        self._missing_reported = False
        self._skip_warned = False
        # training batches started when the latest value was judged (a validation run again after a resume is not)
        self._judged_at: Optional[int] = None
        # the state a checkpoint restored into this callback in this fit, and every PlateauCallback state the
        # checkpoint holds, until train start
        self._restored_state: Optional[dict[str, Any]] = None
        self._checkpoint_states: list[dict[str, Any]] = []
        #: with restore_best_on_cut, the best evaluation's weights and optimizer state kept for this fit (on CPU)
        self.best_state: Optional[BestState] = None
        #: every evaluation judged in this fit (restored on resume), oldest first
        self.history: list[PlateauEvaluation] = []
        # With window_steps: the open window, the reader of the per-step value, the Trainer (for the collective a
        # checkpoint of the partial window needs), the window a checkpoint restored; all None without windows.
        self._window: Optional[_StepWindow] = None
        self._reader: Optional[StepValueReader] = None
        self._window_trainer: Optional[pl.Trainer] = None
        self._restored_window: Optional[dict[str, Any]] = None
        self._empty_window_warned = False

    @property
    @override
    def state_key(self) -> str:
        if self._implicit:
            # Apart from a config-less PlateauCallback the user gives: Lightning refuses two stateful callbacks
            # with one key. The implicit one follows whichever module it is fitted with, so its key names no config.
            return self._generate_state_key(implicit=True)
        if self._key_config is None:
            return self.__class__.__qualname__
        return self._generate_state_key(monitor=self._key_config.monitor, mode=self._key_config.mode)

    @classmethod
    def _implicit_instance(cls) -> PlateauCallback:
        """A config-less callback added for the user: it drives the Trainer's plateau, if any, else does nothing."""
        callback = cls()
        callback._implicit = True
        return callback

    @property
    def monitor(self) -> str:
        """The monitored metric's name."""
        return self._require_config().monitor

    @property
    def chart_path(self) -> Optional[Path]:
        """The plateau chart written at the end of the last fit (rank zero), ``None`` before or without one.

        Without a ``WandbLogger`` the chart is drawn on a background thread after ``fit`` returns: this waits for it.
        """
        return self._traces.chart_path

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A config adopted from an earlier module (of a reused Trainer) is forgotten: only the one given here stays.
        self.config = self._key_config
        if stage == "fit":
            # A new fit starts a new history; Lightning restores a resumed one from the checkpoint after setup.
            self.history = []
            self._source = None
            self._missing_reported = False
            self._skip_warned = False
            self._judged_at = None
            self._restored_state = None
            self._checkpoint_states = []
            self._restored_window = None
        module_config = getattr(pl_module, "plateau_config", None)
        if isinstance(module_config, PlateauConfig):
            self._adopt(module_config, source=f"{type(pl_module).__name__}.plateau")
        if stage == "fit" and self.config is not None:
            # Before the strategy wraps the module (FSDP shards it then): refused before anything is allocated.
            check_restore(trainer.strategy, self.config)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.scheduler = None
        self.best_state = None
        self._expected_lrs = None
        if not self._drives_this_fit(trainer):
            return
        self.scheduler = self._own_scheduler(trainer)
        # Callbacks that follow the plateau (PlateauEarlyStopping) take its config before any check runs.
        self._notify(trainer, "on_plateau_start", pl_module, self)
        config = self._require_config()
        check_setup(trainer, config)
        # Again for a config adopted from the module's PlateauScheduler, known only now.
        check_restore(trainer.strategy, config)
        # Every optimizer trains the module whose weights go back: all of them go back with it.
        self.best_state = BestState(pl_module, trainer.optimizers) if config.restore_best_on_cut else None
        self.scheduler._best_state = self.best_state
        self._validation_runs = 0
        self._train_epochs = 0
        self._epoch_start = None
        self._window = self._reader = self._window_trainer = None
        window_steps = self._require_config().window_steps
        if window_steps:
            self._window = _StepWindow(window_steps)
            self._reader = StepValueReader(self.monitor)
            self._window_trainer = trainer
            self._empty_window_warned = False

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scheduler is None:
            return
        if self._restored_state is None and self._checkpoint_states:
            self._take_checkpoint_state()
        saved_monitor = (self._restored_state or {}).get("monitor")
        if saved_monitor is not None and saved_monitor != self.monitor:
            # Another metric's history (the scheduler warns and starts afresh too): not this plateau's.
            self.history, self._source, self._judged_at = [], None, None
        elif self.best_state is not None:
            self._resume_best_state((self._restored_state or {}).get("best_state") or {})
        self._restored_state = None
        self._checkpoint_states = []
        # The warmup's LR of the step training starts (or resumes) at: the checkpoint's own LR, set again. A fresh fit
        # of a reused Trainer starts past step 0 and warms up from there, as a LinearLR built for it would.
        self.scheduler._start_warmup_at(trainer.global_step)
        # After the checkpoint's optimizer state is restored: the LRs the plateau leaves the run with.
        self._expected_lrs = _lrs(self.scheduler)
        self._restore_window(trainer)

    def _restore_window(self, trainer: pl.Trainer) -> None:
        """Take the checkpoint's partial window: its sum over ranks goes to rank 0, so the ranks' sum is the saved."""
        window, saved = self._window, self._restored_window
        self._restored_window = None
        if window is None:
            if saved:
                rank_zero_warn(
                    f"The checkpoint's plateau judged windows of {saved.get('steps')} steps, this one judges one value"
                    " per evaluation (window_steps=0): the partial window in the checkpoint is dropped.",
                    category=UserWarning,
                )
            return
        if not saved:
            # A fresh fit, or a checkpoint of a plateau without windows: the first window starts here.
            window.closed_at = trainer.global_step
            return
        if saved.get("steps") != window.steps:
            rank_zero_warn(
                f"The checkpoint's plateau judged windows of {saved.get('steps')} steps, this one of {window.steps}:"
                f" the values logged since step {saved.get('closed_at', 0)} are judged with the window that ends at"
                f" the next multiple of {window.steps}.",
                category=UserWarning,
            )
        window.load_state_dict(saved, keep_partial=trainer.global_rank == 0)

    def _resume_best_state(self, saved: dict[str, Any]) -> None:
        """Hold the best state a resumed checkpoint kept; say so when it kept none though a best is known."""
        assert self.best_state is not None
        assert self.scheduler is not None
        self.best_state.load_state_dict(saved)
        best = self.scheduler.best_evaluation
        if self.best_state.held or best is None:
            return
        rank_zero_warn(
            f"PlateauConfig(restore_best_on_cut=True), but the checkpoint holds no best weights (it was written"
            f" without the setting, or by an older version): the best '{self.monitor}' so far, of evaluation"
            f" {best}, cannot be restored. Until '{self.monitor}' improves again, a cut lowers the LR only (its"
            " message says so); from the next best on, the best weights are kept and restored.",
            category=UserWarning,
        )

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Every PlateauCallback state in the checkpoint, whatever its key: the one added for the user and one the user
        # gives save under different keys, and a run may be resumed with the other kind.
        states = checkpoint.get("callbacks") or {}
        self._checkpoint_states = [
            state for key, state in states.items() if isinstance(key, str) and key.startswith(type(self).__name__)
        ]

    def _take_checkpoint_state(self) -> None:
        """Take the checkpoint's plateau state saved under another key (the only one it holds), if this got none.

        Without it a run resumed with the other kind of PlateauCallback would lose its history and, before
        Lightning 2.6, the mark that stops a validation repeated on resume from being judged twice.
        """
        if len(self._checkpoint_states) == 1:
            self.load_state_dict(self._checkpoint_states[0])
            return
        rank_zero_warn(
            f"The checkpoint holds {len(self._checkpoint_states)} PlateauCallback states, none under this callback's"
            f" key {self.state_key!r}: the plateau history starts anew (the scheduler's counters are restored).",
            category=UserWarning,
        )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = batches_started(trainer)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # After the batch's optimizer step (if it made one), the warmup's LR of the next step, `global_step` steps
        # taken. Here rather than before the step: an evaluation or a checkpoint after this batch then sees that LR
        # too, under gradient accumulation the batches that do not step set the same LR again, and a window judged
        # below judges at that LR, so a cut it makes is never overwritten by the warmup.
        scheduler = self.scheduler
        if scheduler is not None and not scheduler.warmup_done and scheduler.apply_warmup(trainer.global_step):
            self._expected_lrs = _lrs(scheduler)
            if scheduler.warmup_done:
                self._show_warmup_end(trainer)
        window = self._window
        if window is None:
            return  # the default: no work per step beyond the checks above
        assert self._reader is not None
        try:
            value = self._reader.read(trainer)
        except ValueError as error:
            raise MisconfigurationException(f"PlateauCallback(window_steps={window.steps}): {error}.") from None
        if value is not None:
            # A tensor add on the value's own device: no host-device sync, no collective.
            window.add(value.detach().to(_float_dtype(trainer)))
        if window.is_due(trainer.global_step):
            self._judge_window(trainer, pl_module, window)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if self._window is not None:
            self._refuse_validation_monitor(trainer)
            return
        if trainer.sanity_checking:
            return
        self._validation_runs += 1
        self._evaluate(trainer, pl_module, _VALIDATION)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only an epoch trained from its start in this fit counts as one that should have logged the monitor: a
        # resume from a checkpoint written at validation end ends the restored epoch again, without its training
        # values (Lightning does not checkpoint them), and must not raise a false "never logged". (Lightning before
        # 2.6 starts that epoch again without training a batch in it.)
        if self._epoch_start is not None and batches_started(trainer) > self._epoch_start:
            self._train_epochs += 1
        self._epoch_start = None
        if self._window is None:
            self._evaluate(trainer, pl_module, _TRAINING)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scheduler is None or self.config is None:
            return
        # An LR written by other code after the last evaluation: named in the summary, which reports the final LR.
        self._notice_outside_changes(at_end=True)
        # Rank zero only, and no collective: this runs after the strategy's teardown.
        written = self._traces.finish(trainer, self.scheduler, self.history, self.config) if self.log_traces else []
        unjudged = None if self._window is None else self._window.pending(trainer.global_step)
        if self.verbose:
            # The bars are closed by now (Lightning's print would drop the text): a plain message.
            rank_zero_info(_summary_message(self.config, self.scheduler, self.history, written, unjudged))

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._window_trainer = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is None:
            return {}  # standing down (or not fitting): nothing of a plateau to keep in the checkpoint
        return {
            "monitor": self.monitor,
            "source": self._source,
            "missing_reported": self._missing_reported,
            "judged_at": self._judged_at,
            "history": [asdict(row) for row in self.history],
            **({} if self._window is None else {"window": self._window_state()}),
            # Only with the setting: a copy of the weights and optimizer state (the checkpoint grows by as much).
            **({"best_state": self.best_state.state_dict()} if self.best_state is not None else {}),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_state = dict(state_dict)
        self._source = state_dict.get("source", self._source)
        self._missing_reported = state_dict.get("missing_reported", self._missing_reported)
        self._judged_at = state_dict.get("judged_at")
        self.history = [_row(row) for row in state_dict.get("history", [])]
        self._restored_window = state_dict.get("window")

    def _window_state(self) -> dict[str, Any]:
        """The partial window for the checkpoint: its sum and count over all ranks (one collective under DDP).

        Lightning calls ``state_dict`` on every rank when it writes a checkpoint; each rank's partial sum differs,
        so the sum over ranks is saved, and a resume gives it to rank 0: the ranks' sum at the window's end, the
        only number judged, is the uninterrupted run's (with any number of ranks).
        """
        window = self._window
        assert window is not None
        trainer = self._window_trainer
        if trainer is None:
            return window.state_dict(float(window.total), window.count)
        total, count, _ = self._sum_over_ranks(trainer, window)
        return window.state_dict(total, int(count))

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, where: str) -> None:
        if self.scheduler is None or self._source not in (None, where):
            return
        position = batches_started(trainer)
        if where == _VALIDATION and self.history and position == self._judged_at:
            # Lightning before 2.6, resumed from a checkpoint written at a validation's end, runs that validation
            # again before training on: the uninterrupted run judged it once, so the resumed one does not judge it.
            # Identical on every rank (the batch count is), so no rank waits in a collective the others skip.
            return
        value = self._fresh_value(trainer)
        # Every rank enters the reduction at the same hook until the source is known, so none can hang.
        mean = self._reduce_over_ranks(trainer, value)
        if mean is None:
            self._check_missing(trainer)
            return
        self._source = where
        self._judged_at = position
        self._judge(trainer, pl_module, mean)

    def _judge_window(self, trainer: pl.Trainer, pl_module: pl.LightningModule, window: _StepWindow) -> None:
        """Judge the mean over ranks of every value logged in the window that ends at this step."""
        total, count, ranks = self._sum_over_ranks(trainer, window)
        logged_here = window.count > 0
        span = window.close(trainer.global_step)
        if ranks and ranks != trainer.world_size:
            # Identical on every rank (the counts are summed), so all raise together; none waits in a collective.
            self._raise_partial(trainer, logged_here)
        if not count:
            self._report_empty_window(trainer, span)
            return
        self._source = _WINDOWS
        self._judged_at = batches_started(trainer)
        self._judge(trainer, pl_module, total / count, span)

    def _sum_over_ranks(self, trainer: pl.Trainer, window: _StepWindow) -> tuple[float, float, int]:
        """(sum, count, ranks with a value) of the window's values over all ranks; one collective for the three."""
        packed = torch.zeros(3, dtype=_float_dtype(trainer), device=trainer.strategy.root_device)
        if window.count:
            packed[0] = window.total  # on the device: the one host-device sync is `tolist` below
            packed[1] = window.count
            packed[2] = 1.0
        if trainer.world_size > 1:
            packed = _all_reduce_sum(trainer, packed)
        total, count, ranks = packed.tolist()
        return float(total), float(count), round(ranks)

    def _report_empty_window(self, trainer: pl.Trainer, span: tuple[int, int]) -> None:
        scheduler = self.scheduler
        assert scheduler is not None
        config = self._require_config()
        steps = format_steps(span)
        if scheduler.num_evaluations == 0 and not self._missing_reported:
            self._missing_reported = True
            message = (
                f"PlateauCallback monitors '{self.monitor}' with window_steps={config.window_steps}, but no training"
                f" step logged it in {steps}. Available metrics are: {sorted(trainer.callback_metrics)}. Log it per"
                f" step in `training_step` with `self.log('{self.monitor}', value)` (on_step=True is the default"
                " there). A metric logged in validation, or once per training epoch, is no per-step value: set"
                " window_steps=0 to judge it once per validation run or training epoch."
            )
            if config.strict:
                raise RuntimeError(message)
            rank_zero_warn(message + " The learning rate stays unchanged (strict=False).", category=RuntimeWarning)
        elif not self._empty_window_warned:
            self._empty_window_warned = True
            rank_zero_warn(
                f"PlateauCallback: no training step logged '{self.monitor}' in {steps}: that window is not judged"
                " (later empty windows are not reported).",
                category=RuntimeWarning,
            )

    def _refuse_validation_monitor(self, trainer: pl.Trainer) -> None:
        if self.monitor in fresh_metrics(trainer):
            raise MisconfigurationException(
                f"PlateauCallback(window_steps={self._require_config().window_steps}) judges the mean of a training"
                f" metric logged per step, but '{self.monitor}' is logged in validation, where one value per"
                " validation run is judged. Set window_steps=0 (the default) to judge it per validation run, or"
                " monitor a metric logged in `training_step`."
            )

    def _judge(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, value: float, window: Optional[tuple[int, int]] = None
    ) -> None:
        """Step the scheduler on a fresh value (the mean over ranks); record, trace, show and announce the decision."""
        self._notice_outside_changes()
        row = self._step(trainer, value, window)
        self._expected_lrs = row.lrs
        self.history.append(row)
        if row.skipped and not self._skip_warned and self.scheduler is not None:
            self._skip_warned = True
            rank_zero_warn(self.scheduler.skip_message(), category=UserWarning)
        if self.log_traces and self.scheduler is not None:
            self._traces.log_evaluation(trainer, self.scheduler, row)
        self._show_in_progress_bar(trainer, row)
        # Callbacks that decide on the same evaluation (PlateauEarlyStopping) do so after the scheduler.
        self._notify(trainer, "on_plateau_evaluation", pl_module, self, row)

    def _show_in_progress_bar(self, trainer: pl.Trainer, row: PlateauEvaluation) -> None:
        """The plateau's state at a glance beside the bar's metrics: ``plateau=lr 1e-3 · bad 2/3``.

        Written once per evaluation into the metrics the bar shows (``trainer.progress_bar_metrics``), so the bar
        keeps showing it until the next evaluation, with no work at each step.
        """
        if not self.verbose or trainer.progress_bar_callback is None:
            return
        scheduler = self.scheduler
        last_cut = None if scheduler is None else scheduler.last_cut
        # At a cut the count that called for it (the row's is 0 again); a withheld cut's row keeps its count.
        count = last_cut.num_bad if row.cut and last_cut is not None else row.num_bad
        state = f"lr {format_lrs(row.lrs)} · {_bad_count(count, self._require_config().patience)}"
        if row.withheld:
            state += " · cut withheld"
        if row.warmup or row.skipped:
            state = f"lr {format_lrs(row.lrs)} · {'warmup' if row.warmup else 'skipped'}"
        trainer.progress_bar_metrics["plateau"] = state  # type: ignore[index,assignment]

    def _show_warmup_end(self, trainer: pl.Trainer) -> None:
        """At the step the warmup ends, a bar that says ``· warmup`` (from an evaluation in it) shows the new state.

        Once per fit: the bar would otherwise name the warmup's LR and state until the next evaluation.
        """
        metrics: dict[str, Any] = trainer.progress_bar_metrics
        if not self.verbose or trainer.progress_bar_callback is None or "plateau" not in metrics:
            return
        scheduler = self.scheduler
        assert scheduler is not None
        count = _bad_count(scheduler.num_bad_epochs, self._require_config().patience)
        metrics["plateau"] = f"lr {format_lrs(_lrs(scheduler))} · {count}"

    def _notify(self, trainer: pl.Trainer, hook_name: str, *args: Any) -> None:
        """Call ``hook_name(trainer, *args)`` on every other callback that defines it."""
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            hook = getattr(callback, hook_name, None)
            if callback is not self and callable(hook):
                hook(trainer, *args)

    def _fresh_value(self, trainer: pl.Trainer) -> Optional[float]:
        value = fresh_metrics(trainer).get(self.monitor)
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise MisconfigurationException(
                    f"PlateauCallback monitors '{self.monitor}', which was logged as a tensor of shape"
                    f" {tuple(value.shape)}; log one scalar per evaluation."
                )
            return float(value.item())
        return float(value)

    def _reduce_over_ranks(self, trainer: pl.Trainer, value: Optional[float]) -> Optional[float]:
        """Mean of ``value`` over ranks, or ``None`` where no rank has one; one collective for both."""
        world_size = trainer.world_size
        if world_size == 1:
            return value
        present = value is not None
        packed = torch.tensor(
            [value if present else 0.0, 1.0 if present else 0.0],
            dtype=torch.float64 if trainer.strategy.root_device.type != "mps" else torch.float32,
            device=trainer.strategy.root_device,
        )
        value_sum, count_sum = _all_reduce_sum(trainer, packed).tolist()
        count = round(float(count_sum))
        if count == 0:
            return None
        if count != world_size:
            self._raise_partial(trainer, present)
        return float(value_sum) / count

    def _raise_partial(self, trainer: pl.Trainer, present: bool) -> None:
        flags = trainer.strategy.all_gather(torch.tensor([1 if present else 0], device=trainer.strategy.root_device))
        missing = [rank for rank, flag in enumerate(flags.reshape(-1).tolist()) if not flag]
        raise RuntimeError(
            f"PlateauCallback: '{self.monitor}' was logged on some ranks but not on rank(s) {missing} of"
            f" {trainer.world_size}. Every rank must log it at the same point, e.g. `self.log('{self.monitor}',"
            " value)` outside any `if self.global_rank == 0` branch; the plateau decision is taken on the"
            " mean over all ranks."
        )

    def _check_missing(self, trainer: pl.Trainer) -> None:
        if self._source is not None or self._missing_reported or self.scheduler is None:
            return
        if self.scheduler.num_evaluations > 0 or self._train_epochs == 0:
            return
        if self._validation_runs == 0 and trainer.enable_validation:
            return  # a validation that may log it is still to come
        self._missing_reported = True
        available = sorted(trainer.callback_metrics)
        so_far = f"({self._validation_runs} validation run(s), {self._train_epochs} training epoch(s) so far)"
        if self.monitor in available:
            # Logged, but never as one value per evaluation: per step only (`on_step=True, on_epoch=False`).
            message = (
                f"PlateauCallback monitors '{self.monitor}', which is logged, but only per step: no evaluation"
                f" produced one value of it {so_far}. The plateau judges one value per evaluation, so log the"
                f" epoch's mean with `self.log('{self.monitor}', value, on_epoch=True)` (in `training_step`), or"
                " log it in `validation_step` without `on_step=True`."
            )
        else:
            message = (
                f"PlateauCallback monitors '{self.monitor}', but no evaluation logged it {so_far}."
                f" Available metrics are: {available}. Log it with `self.log('{self.monitor}', value)` in"
                " `validation_step` (or in `training_step` with `on_epoch=True`), or set `PlateauConfig(monitor=...)`"
                " to one of the available metrics. A value logged in `LightningModule.on_train_epoch_end` is not"
                " seen: Lightning calls it after this callback's `on_train_epoch_end`."
            )
        if self._require_config().strict:
            raise RuntimeError(message)
        rank_zero_warn(message + " The learning rate stays unchanged (strict=False).", category=RuntimeWarning)

    def _step(self, trainer: pl.Trainer, value: float, window: Optional[tuple[int, int]] = None) -> PlateauEvaluation:
        scheduler = self.scheduler
        assert scheduler is not None
        scheduler._context = (trainer.current_epoch, trainer.global_step)
        scheduler._window = window
        cuts_before = scheduler.num_reductions
        # The raw step: `step()` itself refuses values while this callback drives the scheduler.
        scheduler._judge(value)
        if self.verbose and scheduler.num_reductions > cuts_before:
            _say(trainer, format_cut(scheduler.cuts[-1], self._require_config()))
        return scheduler.snapshot()

    def _own_scheduler(self, trainer: pl.Trainer) -> PlateauScheduler:
        configs = [c for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, ReduceLROnPlateau)]
        foreign = [c for c in configs if not isinstance(c.scheduler, PlateauScheduler)]
        if foreign:
            raise MisconfigurationException(
                f"`configure_optimizers` returns a {type(foreign[0].scheduler).__name__} and PlateauCallback is"
                " in the Trainer: both would step the learning rate. Either return the optimizer alone and let"
                " PlateauCallback(config=PlateauConfig(...)) attach a PlateauScheduler, or return a"
                " PlateauScheduler instead of torch's class."
            )
        if len(configs) > 1:
            raise MisconfigurationException(
                f"`configure_optimizers` returns {len(configs)} PlateauSchedulers; one PlateauCallback drives one."
            )
        if configs:
            scheduler_config = configs[0]
            scheduler = scheduler_config.scheduler
            assert isinstance(scheduler, PlateauScheduler)
            if scheduler_config.monitor is not None:
                # `PlateauScheduler(optimizer, patience=...)` written as torch's class is: the dict names the metric.
                scheduler._take_monitor(scheduler_config.monitor)
            elif not scheduler._monitor_given:
                # Manual optimization: Lightning drops the dict's "monitor", and nothing else names the metric.
                raise MisconfigurationException(
                    "`configure_optimizers` returns a PlateauScheduler that names no monitor, and Lightning passes"
                    ' none on (with manual optimization it drops the scheduler dict\'s "monitor"): the plateau'
                    f" would judge the default '{scheduler.monitor}' without a word. Name the metric on the"
                    " scheduler: PlateauScheduler(optimizer, monitor='val_acc', ...)."
                )
            self._check_scheduler_dict(scheduler_config, scheduler)
            self._adopt(scheduler.config, source="the module's PlateauScheduler")
        else:
            config = self._require_config()
            if len(trainer.optimizers) != 1:
                raise MisconfigurationException(
                    f"PlateauCallback attaches a PlateauScheduler to the optimizer from `configure_optimizers`,"
                    f" which returned {len(trainer.optimizers)} optimizers. Return a PlateauScheduler for the one"
                    " whose LR should follow the plateau."
                )
            scheduler = PlateauScheduler(trainer.optimizers[0], config)
            scheduler_config = LRSchedulerConfig(scheduler, monitor=config.monitor, strict=config.strict)
            trainer.strategy.lr_scheduler_configs.append(scheduler_config)
        _check_no_other_scheduler(trainer, scheduler)
        # Lightning's loop would step a plateau scheduler on stale `callback_metrics`; as a plain epoch
        # scheduler it only calls `step()` without a value, which the scheduler ignores while we drive it.
        scheduler_config.reduce_on_plateau = False
        scheduler._driver = self
        return scheduler

    def _drives_this_fit(self, trainer: pl.Trainer) -> bool:
        """Whether this callback drives the plateau of this fit; refuse two that would both drive it."""
        plateaus = [cb for cb in trainer.callbacks if isinstance(cb, PlateauCallback)]  # type: ignore[attr-defined]
        given = [cb for cb in plateaus if not cb._implicit]
        if len(given) > 1:
            raise MisconfigurationException(
                f"The Trainer has {len(given)} PlateauCallbacks: each would step the plateau scheduler at every"
                " evaluation, so every value would be judged twice. Keep one PlateauCallback (a PlateauMixin"
                " module needs none: it adds its own)."
            )
        if not self._implicit:
            return True
        if given or next(cb for cb in plateaus if cb._implicit) is not self:
            return False
        # Added for the user: drive only a plateau the Trainer really has, and never torch's own class.
        return self.config is not None or any(
            isinstance(c.scheduler, PlateauScheduler) for c in trainer.lr_scheduler_configs
        )

    def _check_scheduler_dict(self, scheduler_config: LRSchedulerConfig, scheduler: PlateauScheduler) -> None:
        """Refuse a scheduler dict whose ``monitor`` contradicts the config's; say which keys are overridden."""
        config = scheduler.config
        if scheduler_config.monitor is not None and scheduler_config.monitor != config.monitor:
            raise MisconfigurationException(
                f"`configure_optimizers` returns a PlateauScheduler watching '{config.monitor}' (its PlateauConfig)"
                f" in a dict with \"monitor\": '{scheduler_config.monitor}'. The plateau judges one metric: make both"
                f" the same, e.g. PlateauScheduler(optimizer, PlateauConfig(monitor='{scheduler_config.monitor}'))"
                f" with \"monitor\": '{scheduler_config.monitor}'."
            )
        overridden = []
        if scheduler_config.interval != "epoch":
            overridden.append(f'"interval": {scheduler_config.interval!r}')
        if scheduler_config.frequency != 1:
            overridden.append(f'"frequency": {scheduler_config.frequency!r}')
        if not scheduler_config.strict and config.strict:
            overridden.append('"strict": False')
        if overridden:
            rank_zero_warn(
                f"PlateauCallback steps the PlateauScheduler once per fresh value of '{config.monitor}', whatever"
                f" the scheduler dict says: its {', '.join(overridden)} are ignored. Remove them; a missing"
                " monitor is reported as PlateauConfig(strict=...) says.",
                category=UserWarning,
            )

    def _notice_outside_changes(self, at_end: bool = False) -> None:
        """Warn once when something other than the plateau changed an LR since the last decision; keep a record.

        ``at_end``: at the end of fit, after the last evaluation (recorded as noticed before evaluation
        ``num_evaluations + 1``, which never came).
        """
        scheduler = self.scheduler
        if scheduler is None or self._expected_lrs is None:
            return
        now = _lrs(scheduler)
        # Groups added since (BaseFinetuning) have no LR the plateau set: only the existing ones are compared.
        changed = any(a != b for a, b in zip(self._expected_lrs, now, strict=False))
        if not changed:
            return
        evaluation = scheduler.num_evaluations + 1
        before = self._expected_lrs[: len(now)]
        self._expected_lrs = now
        if not scheduler.outside_changes:
            when = "after the last evaluation" if at_end else f"before evaluation {evaluation}"
            rank_zero_warn(
                f"The learning rate changed from {format_lrs(before)} to {format_lrs(now[: len(before)])} {when}"
                f" of '{self.monitor}', and not by the plateau: something else writes"
                " `param_group['lr']` (your code, another scheduler or callback). The plateau's cuts apply to"
                " whatever LR it finds; the end-of-fit summary lists these changes. Warned once.",
                category=UserWarning,
            )
        scheduler.outside_changes.append((evaluation, before, now[: len(before)]))

    def _adopt(self, config: PlateauConfig, source: str) -> None:
        if self.config is None:
            self.config = config
        elif self.config != config:
            raise MisconfigurationException(
                f"PlateauCallback(config={self.config}) contradicts the plateau of {source} ({config})."
                " Configure the plateau in one place: drop the callback's config, or make both the same."
            )

    def _require_config(self) -> PlateauConfig:
        if self.config is None:
            raise MisconfigurationException(
                "PlateauCallback has no PlateauConfig: pass `PlateauCallback(config=PlateauConfig(...))`, inherit"
                " PlateauMixin in the LightningModule, or return a PlateauScheduler from `configure_optimizers`."
            )
        return self.config


def _say(trainer: pl.Trainer, message: str) -> None:
    """A rank-zero message, during training, that does not tear the progress bar: written through the bar if shown."""
    bar = trainer.progress_bar_callback
    if bar is not None and getattr(bar, "is_enabled", False):
        if trainer.is_global_zero:
            bar.print(message)
    else:
        rank_zero_info(message)


def _row(data: Mapping[str, Any]) -> PlateauEvaluation:
    """A history row from a checkpoint (lists for the LRs and the window there)."""
    window = data.get("window")
    return PlateauEvaluation(
        **{**data, "lrs": tuple(data["lrs"]), "window": None if window is None else (int(window[0]), int(window[1]))}
    )


def _float_dtype(trainer: pl.Trainer) -> torch.dtype:
    # float64 keeps a long window's sum exact enough; MPS has no float64.
    return torch.float64 if trainer.strategy.root_device.type != "mps" else torch.float32


def _bad_count(count: int, patience: int) -> str:
    """The count beside the bar: ``bad 2/3`` of the ``patience + 1`` that cut, or ``bad 6 > patience 3`` above it.

    The slope detector's count can jump past ``patience + 1`` at the evaluation that calls for a cut (a stretch of
    6 values without decrease, at patience 3): "6/4" would read as more than the whole.
    """
    needed = patience + 1
    return f"bad {count}/{needed}" if count <= needed else f"bad {count} > patience {patience}"


def _lrs(scheduler: PlateauScheduler) -> tuple[float, ...]:
    return tuple(float(group["lr"]) for group in scheduler.optimizer.param_groups)


def _check_no_other_scheduler(trainer: pl.Trainer, scheduler: PlateauScheduler) -> None:
    """Refuse any other LR scheduler on the plateau's optimizer: both would move its LR."""
    for other in trainer.lr_scheduler_configs:
        if other.scheduler is scheduler or getattr(other.scheduler, "optimizer", None) is not scheduler.optimizer:
            continue
        name = type(other.scheduler).__name__
        raise MisconfigurationException(
            f"`configure_optimizers` returns a {name} on the same optimizer as the PlateauScheduler: both would"
            f" move its learning rate, and the plateau's cuts, traces and summary would not tell which did what."
            f" The plateau must be the only scheduler of its optimizer: remove the {name}, or give it an optimizer"
            " of its own. For a warmup before the plateau, set PlateauConfig(warmup_steps=..., warmup_start_factor=...)"
            " (the same ramp as torch's LinearLR): the plateau's scheduler then sets the warmup's LR itself."
        )


def _all_reduce_sum(trainer: pl.Trainer, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place, with a single collective."""
    # Lightning's `strategy.reduce` runs a barrier before its all-reduce: a second round trip per evaluation
    # that the all-reduce, blocking by itself, does not need. Strategies without a torch process group
    # (XLA, custom ones) keep their own reduce.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor
    return trainer.strategy.reduce(tensor, reduce_op="sum")


def _callbacks_factory() -> list[Callback]:
    """Lightning's ``lightning.pytorch.callbacks_factory`` entry point: one implicit PlateauCallback per Trainer.

    It drives a ``PlateauScheduler`` that a module returns without a PlateauCallback in the Trainer (Lightning's
    own loop would step it on stale values) and does nothing at all in a Trainer without one.
    """
    return [PlateauCallback._implicit_instance()]
