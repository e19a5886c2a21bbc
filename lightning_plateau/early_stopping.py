"""PlateauEarlyStopping: stop training once the plateau scheduler has nothing left to cut."""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStopping
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from lightning_plateau._format import format_lr, format_lrs, format_steps, format_value, judged_subject
from lightning_plateau._lightning import EarlyStoppingReason, can_stop_early
from lightning_plateau.callback import PlateauCallback, _say
from lightning_plateau.config import PlateauConfig
from lightning_plateau.scheduler import PlateauEvaluation, PlateauScheduler

# Values of `stop_rule`: which rule stopped the run.
_LR_EXHAUSTED = "lr_exhausted"
_MAX_REDUCTIONS = "max_reductions"
_PATIENCE = "patience"
_NON_FINITE = "non_finite"
_STOPPING_THRESHOLD = "stopping_threshold"
_DIVERGENCE_THRESHOLD = "divergence_threshold"


class PlateauEarlyStopping(EarlyStopping):
    r"""Stop training when the plateau scheduler has nothing left to cut, deciding on the scheduler's own evaluations.

    Lightning's ``EarlyStopping`` beside a plateau scheduler can stop before any cut is possible, counts its
    patience on its own (stale) reads of ``callback_metrics`` and has its own idea of "improved". This subclass
    has none of its own: monitor, mode and the improvement rule (``threshold``, ``threshold_mode``) are the
    plateau's, read from the :class:`~lightning_plateau.PlateauCallback` in the Trainer (which the
    :class:`~lightning_plateau.PlateauMixin` adds), and it decides only when that callback has judged a fresh
    value: on the same value (the mean over ranks), right *after* the scheduler's decision for it. The value
    is identical on every rank, so the decision is too, without a collective of its own.

    Everything is counted in evaluations (fresh values of the monitor), never in epochs or checks. Rules:

    - default: stop once the LR of every param group is *exhausted* and the monitor has then not improved for
      ``patience`` more evaluations. A group is exhausted when a further cut would not change it, exactly the
      scheduler's rule: ``lr - max(lr * factor, min_lr) <= eps``. The count starts after the evaluation whose
      cut exhausted the LR (or at the first evaluation, if the LR starts at its floor) and restarts at each
      improvement. The default ``patience`` is the plateau's :attr:`~lightning_plateau.PlateauConfig.cut_period`,
      ``patience + 1 + cooldown`` (``max(patience + 1, 3) + cooldown`` with ``detector="slope"``, whose line
      needs 3 values): on a flat metric, the run stops at the evaluation where the scheduler would have made its
      next cut, had one been left. On a metric that still moves, the slope detector may call for that cut
      elsewhere: this count is of evaluations without improvement of the best, not the slope's. Training
      therefore never stops while the scheduler can still cut.
    - ``max_reductions=K``: stop at the evaluation where the plateau calls for its (K+1)-th cut. That cut is
      never applied: for the fit, the scheduler gets a limit of K cuts and records the cut over it in
      ``PlateauScheduler.withheld`` instead (the row of that evaluation has ``withheld=True``, ``cut=False``),
      so the optimizer, the checkpoint, ``scheduler.cuts``, the traces and the W&B summary all end at the
      K-th cut's LR. The message gives the detector's own reason for that cut. Checked besides the default rule,
      which still stops a run whose LR is exhausted after fewer cuts.
    - ``wait_for_min_lr=False``: Lightning's classic counting instead of the default rule: stop after
      ``patience`` evaluations without improvement, the count restarting at each cut too when
      ``reset_on_cut`` (the default).

    Before these, as with Lightning's ``EarlyStopping`` and on the same value: with ``check_finite`` a NaN or
    infinite value stops at once ("... is not finite"); ``stopping_threshold`` stops once the value is better
    than it ("Stopping threshold reached"), ``divergence_threshold`` once it is worse ("Divergence threshold
    reached").

    Evaluations the plateau records without judging them are not counted either: those of a warmup
    (``PlateauConfig(warmup_steps=...)``) are checked against ``check_finite`` and the thresholds only, and a
    non-finite value that ``PlateauConfig(on_nonfinite="skip")`` leaves out is ignored altogether (unless
    ``check_finite=True`` is given).

    ``trainer.early_stopping_callback``, ``stopped_epoch`` (0-based), ``stopping_reason`` (an
    ``EarlyStoppingReason``), ``stopping_reason_message`` and the checkpointed state work as for the parent;
    :attr:`stop_rule` names the rule that stopped the run. A run resumed from a checkpoint written after the
    stop stops again at once, before any batch, with a warning that says why. One instance can be used in
    several Trainers: each fit follows its own Trainer's plateau and counts from scratch (unless resumed).

    Of Lightning's other arguments, those the plateau decides are accepted only to state them: ``monitor``,
    ``mode``, ``strict`` (the plateau's ``PlateauConfig(strict=...)``) and ``min_delta`` (the plateau's
    ``PlateauConfig(threshold=..., threshold_mode="abs")``) must agree with the plateau, or fit fails naming
    where to set them. ``check_on_train_epoch_end`` is refused: the decision follows the fresh values. With
    ``PlateauConfig(window_steps=N)`` it decides at each window's end, mid-epoch: the run stops after that batch,
    and the messages name the window's steps ("lr exhausted: lr reached min_lr 1e-3 in steps 801-1000 ...").

    Worked example (one validation per epoch; epochs are Lightning's, counted from 0):
    ``PlateauConfig(patience=2, cooldown=1, factor=0.1, min_lr=1e-3)``, LR 0.1, ``val_loss`` improves until
    epoch 2 and is flat after it.

    - epochs 3, 4, 5: 1, 2, 3 evaluations without improvement; 3 > patience 2, so epoch 5 cuts 0.1 -> 0.01;
    - epoch 6 is the cooldown; epochs 7, 8, 9 are bad again and epoch 9 cuts 0.01 -> 1e-3 = min_lr. The LR
      is exhausted: a cut would give ``max(1e-4, 1e-3) = 1e-3``, no change;
    - default patience 2 + 1 + 1 = 4: epochs 10, 11, 12, 13 are 4 evaluations without improvement after the
      exhaustion, so training stops at epoch 13, exactly when the scheduler would have cut a third time.
      ``stopped_epoch == 13`` and the message reads "lr exhausted: lr reached min_lr 1e-3 at epoch 9 and
      val_loss did not improve on 0.5000 for 4 evaluations". An improvement at epoch 11 would restart the
      count: the run would then stop at epoch 15.

    Args:
        patience: evaluations without improvement tolerated, counted as the rule says. ``None``: the plateau's
            ``patience + 1 + cooldown`` (``max(patience + 1, 3) + cooldown`` with ``detector="slope"``). As with
            Lightning's ``EarlyStopping``, an evaluation that restarts the count (an improvement, and the cuts the
            rule counts from) never stops, so ``0`` stops at the first evaluation counted, as ``1`` does.
        max_reductions: stop when the plateau calls for cut number ``max_reductions + 1``, without applying it.
            ``None``: no limit.
        wait_for_min_lr: ``True``: count ``patience`` only once the LR is exhausted (the default rule).
            ``False``: classic counting from the best value.
        reset_on_cut: with ``wait_for_min_lr=False``, restart the count at each cut as well.
        monitor: only to state it: must equal the plateau's monitor. ``None``: the plateau's.
        mode: only to state it: must equal the plateau's mode. ``None``: the plateau's.
        min_delta: only to state it: the plateau must use ``threshold_mode="abs"`` with ``threshold`` equal
            to it. ``None``: the plateau's improvement rule, whatever it is.
        strict: only to state it: must equal the plateau's ``strict``. ``None``: the plateau's.
        check_finite: stop when the value judged is NaN or infinite. ``None``: yes, unless the plateau skips such
            values (``PlateauConfig(on_nonfinite="skip")``).
        stopping_threshold: stop once the value judged is better than this (``<`` for min, ``>`` for max).
        divergence_threshold: stop once the value judged is worse than this (``>`` for min, ``<`` for max).
        check_on_train_epoch_end: must be ``None``: there is no choice of where to decide.
        verbose: log the reason when training stops.
        log_rank_zero_only: log it on rank zero only (every rank takes the same decision). ``False``: on every
            rank, with its rank, as Lightning's ``EarlyStopping`` does by default.

    Raises:
        ValueError: if ``patience`` or ``max_reductions`` is not an int >= 0, ``monitor`` is an empty string,
            ``min_delta`` is not a finite number >= 0, a threshold is not a number, a flag is not a bool, or
            ``check_on_train_epoch_end`` is given.
        MisconfigurationException: if ``mode`` is not ``"min"`` or ``"max"``; at train start, if no PlateauCallback
            drives a plateau in the Trainer; once the plateau is known (setup or fit start), if ``monitor``, ``mode``,
            ``min_delta`` or ``strict`` contradicts the plateau's.

    Example::

        trainer = Trainer(callbacks=[PlateauEarlyStopping()])  # the module inherits PlateauMixin
        trainer.fit(model)
        print(trainer.early_stopping_callback.stopping_reason_message)
    """

    def __init__(
        self,
        patience: Optional[int] = None,
        *,
        max_reductions: Optional[int] = None,
        wait_for_min_lr: bool = True,
        reset_on_cut: bool = True,
        monitor: Optional[str] = None,
        mode: Optional[str] = None,
        min_delta: Optional[float] = None,
        strict: Optional[bool] = None,
        check_finite: Optional[bool] = None,
        stopping_threshold: Optional[float] = None,
        divergence_threshold: Optional[float] = None,
        check_on_train_epoch_end: Optional[bool] = None,
        verbose: bool = True,
        log_rank_zero_only: bool = True,
    ) -> None:
        if isinstance(patience, str):
            raise ValueError(
                f"`patience` must be an int >= 0 or None, got {patience!r}. PlateauEarlyStopping's first argument is"
                f" `patience`, not EarlyStopping's `monitor`: pass `monitor={patience!r}` by keyword (or drop it: the"
                " plateau's monitor is used)."
            )
        _check_optional_count("patience", patience)
        _check_optional_count("max_reductions", max_reductions)
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"`monitor` must be a metric name or None (the plateau's), got {monitor!r}")
        flags: list[tuple[str, Any]] = [("wait_for_min_lr", wait_for_min_lr), ("reset_on_cut", reset_on_cut)]
        if check_finite is not None:
            flags.append(("check_finite", check_finite))
        for name, flag in (*flags, ("log_rank_zero_only", log_rank_zero_only)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be True or False, got {flag!r}")
        _check_early_stopping_arguments(min_delta, strict, stopping_threshold, divergence_threshold)
        if check_on_train_epoch_end is not None:
            raise ValueError(
                f"PlateauEarlyStopping(check_on_train_epoch_end={check_on_train_epoch_end!r}): where it decides is"
                " not a setting. It decides once per fresh value of the plateau's monitor, right after the plateau"
                " scheduler: at validation end for a value logged in validation, at the training epoch end for one"
                " logged in `training_step` with `on_epoch=True`. Drop `check_on_train_epoch_end=`."
            )
        super().__init__(
            monitor=monitor or "",
            patience=0 if patience is None else patience,
            verbose=verbose,
            mode="min" if mode is None else mode,
            strict=True if strict is None else strict,
            check_finite=True if check_finite is None else check_finite,
            stopping_threshold=None if stopping_threshold is None else float(stopping_threshold),
            divergence_threshold=None if divergence_threshold is None else float(divergence_threshold),
            log_rank_zero_only=log_rank_zero_only,
        )
        # Lightning < 2.6 has neither; set here so every release reads them alike.
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: Optional[str] = None
        self.max_reductions = max_reductions
        self.wait_for_min_lr = wait_for_min_lr
        self.reset_on_cut = reset_on_cut
        #: the rule that stopped training: ``"lr_exhausted"``, ``"max_reductions"``, ``"patience"``,
        #: ``"non_finite"``, ``"stopping_threshold"``, ``"divergence_threshold"``; ``None`` before it stops
        self.stop_rule: Optional[str] = None
        self._requested_monitor = monitor
        self._requested_mode = mode
        self._requested_patience = patience
        self._requested_min_delta = min_delta
        self._requested_strict = strict
        self._requested_check_finite = check_finite
        self._plateau: Optional[PlateauCallback] = None
        self._config: Optional[PlateauConfig] = None
        # evaluation after which the LR was exhausted (0: from the start) and its epoch; None while it is not
        self._exhausted_at: Optional[int] = None
        self._exhausted_epoch: Optional[int] = None
        # with windows, the window whose cut exhausted the LR
        self._exhausted_window: Optional[tuple[int, int]] = None

    @property
    @override
    def state_key(self) -> str:
        # Built from constructor arguments only: the plateau's monitor may be known only at fit start, after
        # Lightning has restored callback states by this key.
        if self._requested_monitor is None and self._requested_mode is None:
            return self.__class__.__qualname__
        return self._generate_state_key(monitor=self._requested_monitor, mode=self._requested_mode)

    @property
    def config(self) -> Optional[PlateauConfig]:
        """The plateau this callback follows, ``None`` before the Trainer's fit starts."""
        return self._config

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._start_fit()
        # A PlateauCallback given with its config is followed now; one added for the user (by the mixin or
        # Lightning's entry point) announces itself at fit start, once it knows it drives a plateau.
        given = [cb for cb in trainer.callbacks if isinstance(cb, PlateauCallback) and not cb._implicit]  # type: ignore[attr-defined]
        if given and given[0].config is not None:
            self._follow(given[0])

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop at once, before any batch, when the checkpoint resumed from was written after the run stopped.

        Lightning restores this callback's state before this hook, and the fit loop checks ``should_stop``
        before its first epoch: a run that had stopped stays stopped, as the uninterrupted run did. With
        ``min_epochs``/``min_steps`` not yet met, Lightning goes on training, as it would have without a resume.
        """
        if self._plateau is None or self._plateau.scheduler is None:
            torch_class = [
                type(c.scheduler).__name__
                for c in trainer.lr_scheduler_configs
                if isinstance(c.scheduler, ReduceLROnPlateau) and not isinstance(c.scheduler, PlateauScheduler)
            ]
            fix = (
                f"`configure_optimizers` returns torch's {torch_class[0]}: write `PlateauScheduler(` in its place"
                " (same keywords)"
                if torch_class
                else "Inherit PlateauMixin in the LightningModule, return a PlateauScheduler from"
                " `configure_optimizers`, or pass `Trainer(callbacks=[PlateauCallback(PlateauConfig(...)),"
                " PlateauEarlyStopping()])`"
            )
            raise MisconfigurationException(
                "PlateauEarlyStopping stops on the plateau scheduler's evaluations, but no PlateauCallback drives a"
                f" plateau in this Trainer. {fix}. Without a plateau scheduler, use Lightning's EarlyStopping."
            )
        if self.stop_rule is None:
            return
        trainer.should_stop = True
        if can_stop_early(trainer):
            rank_zero_warn(
                f"PlateauEarlyStopping: the checkpoint was written after this run had stopped at epoch"
                f" {self.stopped_epoch} ({self.stopping_reason_message}); not training further. To train on,"
                " resume without PlateauEarlyStopping in the Trainer, or from a checkpoint written before the stop.",
                category=UserWarning,
            )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Does nothing: the decision is taken in :meth:`on_plateau_evaluation`, never on ``callback_metrics``."""

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Does nothing: the decision is taken in :meth:`on_plateau_evaluation`, never on ``callback_metrics``."""

    def on_plateau_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, plateau_callback: PlateauCallback
    ) -> None:
        """Called by the PlateauCallback at fit start, once its config is known: follow it.

        With ``max_reductions=K`` the scheduler gets a cut limit of ``K`` for this fit: the cut the plateau calls
        for beyond it is withheld (never applied) and the run stops at that evaluation.
        """
        self._follow(plateau_callback)
        scheduler = plateau_callback.scheduler
        if scheduler is not None and not getattr(trainer, "fast_dev_run", False):
            scheduler._cut_limit = self.max_reductions

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The cut limit belongs to this fit: a scheduler used again without this callback cuts freely.
        scheduler = None if self._plateau is None else self._plateau.scheduler
        if stage == "fit" and scheduler is not None:
            scheduler._cut_limit = None

    def on_plateau_evaluation(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        plateau_callback: PlateauCallback,
        row: PlateauEvaluation,
    ) -> None:
        """Decide whether to stop, right after the plateau scheduler judged ``row.value``.

        Called by :class:`~lightning_plateau.PlateauCallback` on every rank with the same ``row``.
        """
        if plateau_callback is not self._plateau or getattr(trainer, "fast_dev_run", False):
            return
        scheduler = plateau_callback.scheduler
        assert scheduler is not None
        should_stop, reason = self._evaluate_plateau_criteria(row, scheduler)
        if should_stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if should_stop and self.verbose and reason:
            if self.log_rank_zero_only:
                _say(trainer, reason)
            else:
                self._log_info(trainer, reason, log_rank_zero_only=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # The reason and its message as Lightning 2.6 saves them, on the Lightning releases that do not save them.
        state.update(
            stopping_reason=self.stopping_reason.value,
            stopping_reason_message=self.stopping_reason_message,
            stop_rule=self.stop_rule,
            exhausted_at=self._exhausted_at,
            exhausted_epoch=self._exhausted_epoch,
            exhausted_window=None if self._exhausted_window is None else list(self._exhausted_window),
        )
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stopping_reason = EarlyStoppingReason(
            state_dict.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value)
        )
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
        self.stop_rule = state_dict.get("stop_rule")
        self._exhausted_at = state_dict.get("exhausted_at")
        self._exhausted_epoch = state_dict.get("exhausted_epoch")
        window = state_dict.get("exhausted_window")
        self._exhausted_window = None if window is None else (int(window[0]), int(window[1]))

    def _start_fit(self) -> None:
        """Forget the previous fit's plateau and counters: a reused callback counts from scratch.

        Lightning restores a resumed fit's counters from the checkpoint after ``setup``.
        """
        self._plateau = None
        self._config = None
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message = None
        self.stop_rule = None
        self._exhausted_at = None
        self._exhausted_epoch = None
        self._exhausted_window = None
        self.best_score = torch.tensor(math.inf)

    def _follow(self, plateau_callback: PlateauCallback) -> None:
        """Take monitor, mode and default patience from ``plateau_callback``'s config; raise on contradictions."""
        config = plateau_callback.config
        assert config is not None
        if self._plateau is not None and self._plateau is not plateau_callback:
            raise MisconfigurationException(
                "PlateauEarlyStopping follows one PlateauCallback, but two in the Trainer claim it: keep one plateau."
            )
        for name, requested in (("monitor", self._requested_monitor), ("mode", self._requested_mode)):
            if requested is not None and requested != getattr(config, name):
                raise MisconfigurationException(
                    f"PlateauEarlyStopping({name}={requested!r}) contradicts the plateau it follows"
                    f" (PlateauCallback: {config.describe()}). PlateauEarlyStopping takes monitor and mode from"
                    f" the plateau: drop `{name}=` from PlateauEarlyStopping, or change the plateau's `{name}`."
                )
        self._plateau = plateau_callback
        self._use_config(config)

    def _use_config(self, config: PlateauConfig) -> None:
        """Take monitor, mode, strictness and default patience from ``config``; raise on a contradicting setting."""
        self._check_improvement_rule(config)
        self._config = config
        self.monitor = config.monitor
        self.mode = config.mode
        self.strict = config.strict
        requested = self._requested_check_finite
        self.check_finite = config.on_nonfinite != "skip" if requested is None else requested
        patience = self._requested_patience
        self.patience = config.cut_period if patience is None else patience
        if not self._seen_any_value():
            self.best_score = torch.tensor(math.inf if config.mode == "min" else -math.inf)

    def _check_improvement_rule(self, config: PlateauConfig) -> None:
        """Refuse a ``min_delta`` or ``strict`` of this callback's own that differs from the plateau's setting."""
        min_delta = self._requested_min_delta
        if min_delta is not None and (config.threshold_mode != "abs" or config.threshold != min_delta):
            raise MisconfigurationException(
                f"PlateauEarlyStopping(min_delta={min_delta!r}) contradicts the plateau it follows (threshold"
                f" {config.threshold:g}, threshold_mode {config.threshold_mode!r}): what counts as an improvement is"
                f" the plateau's rule. Drop `min_delta=`, or set it on the plateau:"
                f' PlateauConfig(threshold={min_delta!r}, threshold_mode="abs").'
            )
        strict = self._requested_strict
        if strict is not None and strict != config.strict:
            raise MisconfigurationException(
                f"PlateauEarlyStopping(strict={strict}) contradicts the plateau it follows"
                f" (PlateauConfig(strict={config.strict})): whether a monitor that is never logged is an error is the"
                f" plateau's setting. Drop `strict=`, or set it on the plateau: PlateauConfig(strict={strict})."
            )

    def _seen_any_value(self) -> bool:
        return bool(torch.isfinite(torch.as_tensor(self.best_score)).item())

    def _evaluate_plateau_criteria(
        self, row: PlateauEvaluation, scheduler: PlateauScheduler
    ) -> tuple[bool, Optional[str]]:
        """Apply the stop rules to the scheduler's state right after it judged ``row``: ``(should_stop, reason)``."""
        config = self._config
        assert config is not None
        if math.isfinite(row.best):
            self.best_score = torch.tensor(row.best)
        if not row.warmup:  # the LR is the warmup's: neither at nor below the floor the plateau cuts to
            self._track_exhaustion(row, scheduler)
        if self.check_finite and not math.isfinite(row.value):
            return self._stop(
                _NON_FINITE,
                EarlyStoppingReason.NON_FINITE_METRIC,
                f"non-finite metric: {config.monitor} = {row.value} is not finite, at {_where(row)};"
                f" best so far {format_value(row.best)}",
            )
        if row.skipped:
            return False, None
        sign = 1.0 if config.mode == "min" else -1.0
        better, worse = ("<", ">") if config.mode == "min" else (">", "<")
        if self.stopping_threshold is not None and sign * row.value < sign * self.stopping_threshold:
            return self._stop(
                _STOPPING_THRESHOLD,
                EarlyStoppingReason.STOPPING_THRESHOLD,
                f"Stopping threshold reached: {config.monitor} = {format_value(row.value)} {better}"
                f" {self.stopping_threshold:g} at {_where(row)}",
            )
        if self.divergence_threshold is not None and sign * row.value > sign * self.divergence_threshold:
            return self._stop(
                _DIVERGENCE_THRESHOLD,
                EarlyStoppingReason.DIVERGENCE_THRESHOLD,
                f"Divergence threshold reached: {config.monitor} = {format_value(row.value)} {worse}"
                f" {self.divergence_threshold:g} at {_where(row)}",
            )
        if row.warmup:
            # Patience counts what the plateau judges: nothing yet.
            self.wait_count = 0
            return False, None
        best_evaluation = scheduler.best_evaluation or 0
        if self.max_reductions is not None and row.withheld and scheduler.withheld is not None:
            self.wait_count = _judged(scheduler, best_evaluation, row.evaluation)
            # The detector's own words for the count that called for the cut: the slope's is no count since the best.
            called = scheduler._detector.stop_phrase(scheduler.withheld, config)
            return self._stop(
                _MAX_REDUCTIONS,
                EarlyStoppingReason.PATIENCE_EXHAUSTED,
                f"max reductions: {judged_subject(config)} {called} at {_where(row)}, which calls for cut"
                f" {scheduler.num_reductions + 1}; max_reductions={self.max_reductions}, so that cut was not"
                f" applied: lr stays {format_lrs(row.lrs)}",
            )
        if self.wait_for_min_lr:
            if self._exhausted_at is None:
                self.wait_count = 0
                return False, None
            self.wait_count = _judged(scheduler, max(best_evaluation, self._exhausted_at), row.evaluation)
            if not self._patience_exhausted():
                return False, None
            return self._stop(
                _LR_EXHAUSTED,
                EarlyStoppingReason.PATIENCE_EXHAUSTED,
                f"lr exhausted: {self._exhaustion_phrase(row, scheduler)} and {judged_subject(config)} did not"
                f" improve on {format_value(row.best)} for {self.wait_count} evaluations",
            )
        last_cut = scheduler.last_cut
        since_cut = self.reset_on_cut and last_cut is not None and last_cut.evaluation > best_evaluation
        start = last_cut.evaluation if since_cut and last_cut else best_evaluation
        self.wait_count = _judged(scheduler, start, row.evaluation)
        if not self._patience_exhausted():
            return False, None
        counted = " since the last cut" if since_cut else ""
        return self._stop(
            _PATIENCE,
            EarlyStoppingReason.PATIENCE_EXHAUSTED,
            f"patience exhausted: {judged_subject(config)} did not improve on {format_value(row.best)} for"
            f" {self.wait_count} evaluations{counted} (patience {self.patience})",
        )

    def _patience_exhausted(self) -> bool:
        # Lightning's counting: an evaluation that restarts the count (an improvement; a cut with `reset_on_cut`;
        # the cut that exhausts the LR) never stops, and the first one counted stops at patience 0 as at 1.
        return self.wait_count >= max(self.patience, 1)

    def _stop(self, rule: str, reason: EarlyStoppingReason, message: str) -> tuple[bool, str]:
        self.stop_rule = rule
        self.stopping_reason = reason
        return True, message

    def _track_exhaustion(self, row: PlateauEvaluation, scheduler: PlateauScheduler) -> None:
        if not scheduler.exhausted:
            self._exhausted_at = None
            self._exhausted_epoch = None
            self._exhausted_window = None
        elif self._exhausted_at is None:
            # Exhausted by this evaluation's cut: counting starts after it. Otherwise the LR was at its floor
            # before this evaluation (from the start, or set by other code), and this evaluation counts.
            self._exhausted_at = row.evaluation if row.cut else row.evaluation - 1
            self._exhausted_epoch = row.epoch if row.cut else None
            self._exhausted_window = row.window if row.cut else None

    def _exhaustion_phrase(self, row: PlateauEvaluation, scheduler: PlateauScheduler) -> str:
        min_lrs = scheduler.min_lr_bounds()
        if all(lr - floor <= scheduler.eps for lr, floor in zip(row.lrs, min_lrs, strict=True)):
            reached = f"lr reached min_lr {format_lrs(min_lrs)}"
        else:
            reached = f"lr {format_lrs(row.lrs)} cannot be cut by more than eps {format_lr(scheduler.eps)}"
        if self._exhausted_window is not None:
            return f"{reached} in {format_steps(self._exhausted_window)}"
        if self._exhausted_epoch is not None:
            return f"{reached} at epoch {self._exhausted_epoch}"
        if self._exhausted_at == 0:
            return f"{reached} from the start"
        return f"{reached} by evaluation {self._exhausted_at}"


def _judged(scheduler: PlateauScheduler, after: int, upto: int) -> int:
    """Evaluations the plateau judged in ``after < evaluation <= upto``: those of a warmup or skipped do not count."""
    return upto - after - scheduler.uncounted_between(after, upto)


def _where(row: PlateauEvaluation) -> str:
    if row.window is not None:
        return format_steps(row.window)
    return f"evaluation {row.evaluation}" if row.epoch is None else f"epoch {row.epoch}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_early_stopping_arguments(
    min_delta: Any, strict: Any, stopping_threshold: Any, divergence_threshold: Any
) -> None:
    """Validate the arguments shared with Lightning's ``EarlyStopping``."""
    if strict is not None and not isinstance(strict, bool):
        raise ValueError(f"`strict` must be True, False or None (the plateau's), got {strict!r}")
    if min_delta is not None and not (_is_number(min_delta) and 0 <= min_delta < math.inf):
        raise ValueError(f"`min_delta` must be a finite number >= 0 or None (the plateau's rule), got {min_delta!r}")
    for name, threshold in (("stopping_threshold", stopping_threshold), ("divergence_threshold", divergence_threshold)):
        if threshold is not None and not (_is_number(threshold) and not math.isnan(threshold)):
            raise ValueError(f"`{name}` must be a number or None, got {threshold!r}")


def _check_optional_count(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"`{name}` must be an int >= 0 or None, got {value!r}")
