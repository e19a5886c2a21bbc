"""PlateauEarlyStopping: stop training once the plateau scheduler has nothing left to cut."""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]
from typing_extensions import override

from lightning_plateau._format import format_lr, format_lrs, format_value
from lightning_plateau.callback import PlateauCallback
from lightning_plateau.config import PlateauConfig
from lightning_plateau.scheduler import PlateauEvaluation, PlateauScheduler

# Values of `stop_rule`: which rule stopped the run.
_LR_EXHAUSTED = "lr_exhausted"
_MAX_REDUCTIONS = "max_reductions"
_PATIENCE = "patience"
_NON_FINITE = "non_finite"


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
      improvement. The default ``patience`` is the plateau's ``patience + 1 + cooldown``: on a flat metric,
      the run stops at the evaluation where the scheduler would have made its next cut, had one been left.
      Training therefore never stops while the scheduler can still cut.
    - ``max_reductions=K``: stop at the evaluation where the plateau calls for its (K+1)-th cut. That cut is
      never applied: for the fit, the scheduler gets a limit of K cuts and records the cut over it in
      ``PlateauScheduler.withheld`` instead (the row of that evaluation has ``withheld=True``, ``cut=False``),
      so the optimizer, the checkpoint, ``scheduler.cuts``, the traces and the W&B summary all end at the
      K-th cut's LR. Checked besides the default rule, which still stops a run whose LR is exhausted after
      fewer cuts.
    - ``wait_for_min_lr=False``: Lightning's classic counting instead of the default rule: stop after
      ``patience`` evaluations without improvement, the count restarting at each cut too when
      ``reset_on_cut`` (the default).

    With ``check_finite`` a NaN or infinite value stops at once, as with Lightning's ``EarlyStopping``.
    ``trainer.early_stopping_callback``, ``stopped_epoch`` (0-based), ``stopping_reason`` (an
    ``EarlyStoppingReason``), ``stopping_reason_message`` and the checkpointed state work as for the parent;
    :attr:`stop_rule` names the rule that stopped the run.

    Worked example (one validation per epoch, epochs counted from 1): ``PlateauConfig(patience=2, cooldown=1,
    factor=0.1, min_lr=1e-3)``, LR 0.1, ``val_loss`` improves until epoch 3 and is flat after it.

    - epochs 4, 5, 6: 1, 2, 3 evaluations without improvement; 3 > patience 2, so epoch 6 cuts 0.1 -> 0.01;
    - epoch 7 is the cooldown; epochs 8, 9, 10 are bad again and epoch 10 cuts 0.01 -> 1e-3 = min_lr. The LR
      is exhausted: a cut would give ``max(1e-4, 1e-3) = 1e-3``, no change;
    - default patience 2 + 1 + 1 = 4: epochs 11, 12, 13, 14 are 4 evaluations without improvement after the
      exhaustion, so training stops at epoch 14, exactly when the scheduler would have cut a third time.
      ``stopped_epoch == 13`` and the message reads "lr exhausted: lr reached min_lr 1e-3 at epoch 10 and
      val_loss did not improve on 0.5000 for 4 evaluations". An improvement at epoch 12 would restart the
      count: the run would then stop at epoch 16.

    Args:
        patience: evaluations without improvement tolerated, counted as the rule says. ``None``: the plateau's
            ``patience + 1 + cooldown``. As with Lightning's ``EarlyStopping``, an evaluation that restarts the
            count (an improvement, and the cuts the rule counts from) never stops, so ``0`` stops at the first
            evaluation counted, as ``1`` does.
        max_reductions: stop when the plateau calls for cut number ``max_reductions + 1``, without applying it.
            ``None``: no limit.
        wait_for_min_lr: ``True``: count ``patience`` only once the LR is exhausted (the default rule).
            ``False``: classic counting from the best value.
        reset_on_cut: with ``wait_for_min_lr=False``, restart the count at each cut as well.
        monitor: only to state it: must equal the plateau's monitor. ``None``: the plateau's.
        mode: only to state it: must equal the plateau's mode. ``None``: the plateau's.
        check_finite: stop when the value judged is NaN or infinite.
        verbose: log the reason when training stops (once, on rank zero: every rank takes the same decision).

    Raises:
        ValueError: if ``patience`` or ``max_reductions`` is not an int >= 0 or ``monitor`` is an empty string.
        MisconfigurationException: if ``mode`` is not ``"min"`` or ``"max"``; at setup, if the Trainer has no
            PlateauCallback; once the plateau is known (setup or fit start), if ``monitor`` or ``mode``
            contradicts the plateau's.

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
        check_finite: bool = True,
        verbose: bool = True,
    ) -> None:
        _check_optional_count("patience", patience)
        _check_optional_count("max_reductions", max_reductions)
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"`monitor` must be a metric name or None (the plateau's), got {monitor!r}")
        for name, flag in (("wait_for_min_lr", wait_for_min_lr), ("reset_on_cut", reset_on_cut)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be True or False, got {flag!r}")
        super().__init__(
            monitor=monitor or "",
            patience=0 if patience is None else patience,
            verbose=verbose,
            mode="min" if mode is None else mode,
            check_finite=check_finite,
            log_rank_zero_only=True,
        )
        self.max_reductions = max_reductions
        self.wait_for_min_lr = wait_for_min_lr
        self.reset_on_cut = reset_on_cut
        #: the rule that stopped training: ``"lr_exhausted"``, ``"max_reductions"``, ``"patience"``,
        #: ``"non_finite"``, or ``None`` while it has not stopped
        self.stop_rule: Optional[str] = None
        self._requested_monitor = monitor
        self._requested_mode = mode
        self._requested_patience = patience
        self._plateau: Optional[PlateauCallback] = None
        self._config: Optional[PlateauConfig] = None
        # evaluation after which the LR was exhausted (0: from the start) and its epoch; None while it is not
        self._exhausted_at: Optional[int] = None
        self._exhausted_epoch: Optional[int] = None

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
        plateaus = [cb for cb in trainer.callbacks if isinstance(cb, PlateauCallback)]  # type: ignore[attr-defined]
        if not plateaus:
            raise MisconfigurationException(
                "PlateauEarlyStopping stops on the plateau scheduler's evaluations, but the Trainer has no"
                " PlateauCallback. Inherit PlateauMixin in the LightningModule (it adds one), or pass"
                " `Trainer(callbacks=[PlateauCallback(PlateauConfig(...)), PlateauEarlyStopping()])`. Without a"
                " plateau scheduler, use Lightning's EarlyStopping."
            )
        if plateaus[0].config is not None:
            self._follow(plateaus[0])

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop at once, before any batch, when the checkpoint resumed from was written after the run stopped.

        Lightning restores this callback's state before this hook, and the fit loop checks ``should_stop``
        before its first epoch: a run that had stopped stays stopped, as the uninterrupted run did. With
        ``min_epochs``/``min_steps`` not yet met, Lightning goes on training, as it would have without a resume.
        """
        if self.stop_rule is None:
            return
        trainer.should_stop = True
        if trainer.fit_loop._can_stop_early:
            rank_zero_warn(
                f"PlateauEarlyStopping: the checkpoint was written after this run had stopped at epoch"
                f" {self.stopped_epoch + 1} ({self.stopping_reason_message}); not training further. To train on,"
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
            rank_zero_info(reason)

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(stop_rule=self.stop_rule, exhausted_at=self._exhausted_at, exhausted_epoch=self._exhausted_epoch)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stop_rule = state_dict.get("stop_rule")
        self._exhausted_at = state_dict.get("exhausted_at")
        self._exhausted_epoch = state_dict.get("exhausted_epoch")

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
        self._config = config
        self.monitor = config.monitor
        self.mode = config.mode
        patience = self._requested_patience
        self.patience = config.patience + 1 + config.cooldown if patience is None else patience
        if not self._seen_any_value():
            self.best_score = torch.tensor(math.inf if config.mode == "min" else -math.inf)

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
        self._track_exhaustion(row, scheduler)
        if self.check_finite and not math.isfinite(row.value):
            return self._stop(
                _NON_FINITE,
                EarlyStoppingReason.NON_FINITE_METRIC,
                f"non-finite metric: {config.monitor} = {row.value} at {_where(row)};"
                f" best so far {format_value(row.best)}",
            )
        best_evaluation = scheduler.best_evaluation or 0
        if self.max_reductions is not None and row.withheld and scheduler.withheld is not None:
            self.wait_count = row.evaluation - best_evaluation
            return self._stop(
                _MAX_REDUCTIONS,
                EarlyStoppingReason.PATIENCE_EXHAUSTED,
                f"max reductions: {config.monitor} did not improve on {format_value(row.best)} for"
                f" {scheduler.withheld.num_bad} evaluations at {_where(row)}, which calls for cut"
                f" {scheduler.num_reductions + 1}; max_reductions={self.max_reductions}, so that cut was not"
                f" applied: lr stays {format_lrs(row.lrs)}",
            )
        if self.wait_for_min_lr:
            if self._exhausted_at is None:
                self.wait_count = 0
                return False, None
            self.wait_count = row.evaluation - max(best_evaluation, self._exhausted_at)
            if not self._patience_exhausted():
                return False, None
            return self._stop(
                _LR_EXHAUSTED,
                EarlyStoppingReason.PATIENCE_EXHAUSTED,
                f"lr exhausted: {self._exhaustion_phrase(row, scheduler)} and {config.monitor} did not improve on"
                f" {format_value(row.best)} for {self.wait_count} evaluations",
            )
        last_cut = scheduler.last_cut
        since_cut = self.reset_on_cut and last_cut is not None and last_cut.evaluation > best_evaluation
        self.wait_count = row.evaluation - (last_cut.evaluation if since_cut and last_cut else best_evaluation)
        if not self._patience_exhausted():
            return False, None
        counted = " since the last cut" if since_cut else ""
        return self._stop(
            _PATIENCE,
            EarlyStoppingReason.PATIENCE_EXHAUSTED,
            f"patience exhausted: {config.monitor} did not improve on {format_value(row.best)} for"
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
        elif self._exhausted_at is None:
            # Exhausted by this evaluation's cut: counting starts after it. Otherwise the LR was at its floor
            # before this evaluation (from the start, or set by other code), and this evaluation counts.
            self._exhausted_at = row.evaluation if row.cut else row.evaluation - 1
            self._exhausted_epoch = row.epoch if row.cut else None

    def _exhaustion_phrase(self, row: PlateauEvaluation, scheduler: PlateauScheduler) -> str:
        min_lrs = scheduler.min_lr_bounds()
        if all(lr - floor <= scheduler.eps for lr, floor in zip(row.lrs, min_lrs, strict=True)):
            reached = f"lr reached min_lr {format_lrs(min_lrs)}"
        else:
            reached = f"lr {format_lrs(row.lrs)} cannot be cut by more than eps {format_lr(scheduler.eps)}"
        if self._exhausted_epoch is not None:
            return f"{reached} at epoch {self._exhausted_epoch + 1}"
        if self._exhausted_at == 0:
            return f"{reached} from the start"
        return f"{reached} by evaluation {self._exhausted_at}"


def _where(row: PlateauEvaluation) -> str:
    return f"evaluation {row.evaluation}" if row.epoch is None else f"epoch {row.epoch + 1}"


def _check_optional_count(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"`{name}` must be an int >= 0 or None, got {value!r}")
