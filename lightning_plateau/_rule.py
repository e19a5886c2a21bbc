"""The plateau rule: torch's ReduceLROnPlateau, exactly, with its known bugs fixed and every cut recorded.

Torch-only: ``replay`` and ``lightning-plateau explain`` use it without importing Lightning.
"""

# No `from __future__ import annotations` here: LightningCLI's parser reads the ranges from the keyword types
# themselves (`--lr_scheduler.factor 1.5` is refused while parsing); postponed annotations would lose them.
import bisect
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional, SupportsFloat, Union

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from lightning_plateau._detectors import make_detector, make_smoothing
from lightning_plateau._restore import BestState
from lightning_plateau.config import (
    PlateauConfig,
    _Bounds,
    _Confidence,
    _Count,
    _Factor,
    _NonNegative,
    _Smoothing,
    _StartFactor,
)

# Attributes that belong to the running object, not to the decision state a checkpoint must restore.
_TRANSIENT = frozenset(
    {
        "optimizer",
        "config",
        "_driver",
        "_context",
        "_window",
        "_cut_limit",
        "_monitor_given",
        "_best_state",
        "_plain",
        "_flags",
        "_detector",
        "_smoothing",
        "_restored",
        "_warmup_at",
        "_stepped_at",
    }
)
# The policy comes from the config the scheduler is built with; a checkpoint brings back the counters only.
_POLICY = (
    "mode",
    "factor",
    "patience",
    "threshold",
    "threshold_mode",
    "cooldown",
    "eps",
    "warmup_steps",
    "warmup_start_factor",
    "on_nonfinite",
    "smoothing",
    "detector",
    "slope_window",
    "slope_confidence",
    "slope_robust",
)
_DERIVED_FROM_POLICY = frozenset({"min_lrs", "default_min_lr", "mode_worse", "monitor"})


@dataclass(frozen=True)
class PlateauCut:
    """One learning-rate cut, as the scheduler saw it.

    Attributes:
        evaluation: 1-based index of the evaluation (fresh value) that caused the cut.
        epoch: the trainer's epoch at that evaluation (0-based), ``None`` outside a Trainer.
        global_step: the trainer's global step at that evaluation, ``None`` outside a Trainer.
        value: the monitored value at that evaluation (the mean over ranks, or a window's mean).
        best: the best value judged so far (the one it failed to improve on; with ``smoothing``, the best average).
        best_evaluation: evaluation index at which ``best`` was reached, ``None`` if no value ever improved.
        best_epoch: epoch at which ``best`` was reached, ``None`` when unknown.
        num_bad: evaluations without improvement that triggered the cut (``patience + 1``); with
            ``detector="slope"``, the count of evaluations without decrease.
        lrs_before: LR of each param group before the cut.
        lrs_after: LR of each param group after the cut.
        window: with ``PlateauConfig(window_steps=N)``, the first and last optimizer step (1-based) of the window
            whose mean was judged, e.g. ``(4001, 5000)``; ``None`` otherwise.
        best_window: with windows, the window in which ``best`` was reached, ``None`` when unknown.
        restored_from: with ``restore_best_on_cut``, the evaluation whose weights and optimizer state training went
            on from after this cut; ``None`` without the setting, or when no state was held (no value had
            improved, or a resume from a checkpoint that held none).
        restored_epoch: the epoch of ``restored_from``, ``None`` when unknown.
        smoothed: with ``smoothing``, the moving average judged at that evaluation; ``None`` otherwise.
    """

    evaluation: int
    epoch: Optional[int]
    global_step: Optional[int]
    value: float
    best: float
    best_evaluation: Optional[int]
    best_epoch: Optional[int]
    num_bad: int
    lrs_before: tuple[float, ...]
    lrs_after: tuple[float, ...]
    window: Optional[tuple[int, int]] = None
    best_window: Optional[tuple[int, int]] = None
    restored_from: Optional[int] = None
    restored_epoch: Optional[int] = None
    smoothed: Optional[float] = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists for the LRs and windows), safe in any checkpoint and in JSON."""
        data = asdict(self)
        data["lrs_before"] = list(self.lrs_before)
        data["lrs_after"] = list(self.lrs_after)
        data["window"] = _span_list(self.window)
        data["best_window"] = _span_list(self.best_window)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlateauCut":
        """Inverse of :meth:`as_dict`."""
        fields = dict(data)
        fields["lrs_before"] = tuple(fields["lrs_before"])
        fields["lrs_after"] = tuple(fields["lrs_after"])
        fields["window"] = _span(fields.get("window"))
        fields["best_window"] = _span(fields.get("best_window"))
        return cls(**fields)


def _span_list(span: Optional[tuple[int, int]]) -> Optional[list[int]]:
    return None if span is None else list(span)


def _span(span: Any) -> Optional[tuple[int, int]]:
    """A window's (first, last) steps from a checkpoint or JSON (a list there), ``None`` for none."""
    if span is None:
        return None
    first, last = span
    return int(first), int(last)


@dataclass(frozen=True)
class PlateauEvaluation:
    """The scheduler's state right after judging one value: one row of a plateau history.

    Attributes:
        evaluation: 1-based index of the evaluation.
        epoch: the trainer's epoch (0-based), ``None`` outside a Trainer.
        global_step: the trainer's global step, ``None`` outside a Trainer.
        value: the monitored value (the mean over ranks, or a window's mean): the value judged, unless ``smoothed``.
        best: best value judged so far, after this evaluation.
        num_bad: evaluations without improvement counted so far (0 right after a cut); with ``detector="slope"``,
            the count of evaluations without decrease.
        cooldown: evaluations of cooldown left.
        lrs: LR of each param group after the decision.
        cut: whether this evaluation cut the LR.
        withheld: whether the plateau called for a cut here that was not applied, because the cut limit of
            ``PlateauEarlyStopping(max_reductions=...)`` was reached (the run stops at this evaluation).
        window: with ``PlateauConfig(window_steps=N)``, the first and last optimizer step (1-based) of the window
            whose mean was judged, e.g. ``(4001, 5000)``; ``None`` otherwise.
        restored_from: with ``restore_best_on_cut``, at a cut: the evaluation whose weights training went on from.
        warmup: whether it was judged during the warmup (``global_step < warmup_steps``): recorded, not judged
            (``best``, ``num_bad`` and ``cooldown`` are left as they were, ``lrs`` is the warmup's LR).
        skipped: whether its value was NaN or infinite and ``on_nonfinite="skip"`` left it out of the rule.
        smoothed: with ``smoothing``, the moving average the rule judged in place of ``value``; ``None`` otherwise,
            and for an evaluation recorded but not judged (warmup, skipped).
    """

    evaluation: int
    epoch: Optional[int]
    global_step: Optional[int]
    value: float
    best: float
    num_bad: int
    cooldown: int
    lrs: tuple[float, ...]
    cut: bool
    withheld: bool = False
    window: Optional[tuple[int, int]] = None
    restored_from: Optional[int] = None
    warmup: bool = False
    skipped: bool = False
    smoothed: Optional[float] = None


def warmup_lrs(base_lrs: Sequence[float], step: int, warmup_steps: int, start_factor: float) -> tuple[float, ...]:
    """The LR of each param group at optimizer step ``step`` (steps already taken) of a linear warmup.

    ``base * (start_factor + (1 - start_factor) * step / warmup_steps)`` before ``warmup_steps``, ``base`` from
    there on: the closed form of torch's ``LinearLR(start_factor=start_factor, total_iters=warmup_steps)`` after
    ``step`` steps. Computed from the base each time, so no rounding error builds up over the steps.
    """
    if step >= warmup_steps:
        return tuple(base_lrs)
    scale = start_factor + (1.0 - start_factor) * step / warmup_steps
    return tuple(base * scale for base in base_lrs)


def _warmup_end_of(state: Mapping[str, Any]) -> Optional[int]:
    """Where the warmup of a checkpoint written before ``warmup_end_step`` was kept ended; ``None``: not, or none."""
    steps = int(state.get("warmup_steps") or 0)
    if not state.get("warmup_done") or steps == 0:
        return None
    return int(state.get("warmup_start_step", 0)) + steps


class _PlateauRule(ReduceLROnPlateau):
    """Everything :class:`~lightning_plateau.PlateauScheduler` does, with no import of Lightning.

    ``replay`` (and so ``lightning-plateau explain``) steps this class: the same rule, started in a fraction of
    the time Lightning's import takes. PlateauScheduler adds only the Lightning class that LightningCLI knows.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        config: PlateauConfig | Mapping[str, Any] | None = None,
        *,
        monitor: Optional[str] = None,
        mode: Optional[Literal["min", "max"]] = None,
        factor: Optional[_Factor] = None,
        patience: Optional[_Count] = None,
        threshold: Optional[_NonNegative] = None,
        threshold_mode: Optional[Literal["rel", "abs"]] = None,
        cooldown: Optional[_Count] = None,
        min_lr: Optional[Union[_NonNegative, _Bounds]] = None,
        eps: Optional[_NonNegative] = None,
        strict: Optional[bool] = None,
        warmup_steps: Optional[_Count] = None,
        warmup_start_factor: Optional[_StartFactor] = None,
        on_nonfinite: Optional[Literal["bad", "skip", "raise"]] = None,
        window_steps: Optional[_Count] = None,
        restore_best_on_cut: Optional[bool] = None,
        smoothing: Optional[_Smoothing] = None,
        detector: Optional[Literal["best", "slope"]] = None,
        slope_window: Optional[_Count] = None,
        slope_confidence: Optional[_Confidence] = None,
        slope_robust: Optional[bool] = None,
    ) -> None:
        if isinstance(config, str):
            raise TypeError(
                f"PlateauScheduler(optimizer, {config!r}): the second argument is a PlateauConfig. Pass torch's"
                f" ReduceLROnPlateau arguments by keyword, e.g. PlateauScheduler(optimizer, mode={config!r})."
            )
        fields = PlateauConfig.keyword_fields(locals())
        # Whether the monitor was named (a config, or `monitor=`): torch's keywords name none, and then the
        # "monitor" of Lightning's scheduler dict says which metric this scheduler watches.
        monitor_given = (
            monitor is not None
            or isinstance(config, PlateauConfig)
            or (isinstance(config, Mapping) and "monitor" in config)
        )
        config = PlateauConfig.from_arguments("PlateauScheduler", config, fields)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"PlateauScheduler needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        # torch's initializer by name: in PlateauScheduler the next class is Lightning's, which wants a monitor.
        ReduceLROnPlateau.__init__(
            self,
            optimizer,
            mode=config.mode,
            factor=config.factor,
            patience=config.patience,
            threshold=config.threshold,
            threshold_mode=config.threshold_mode,
            cooldown=config.cooldown,
            min_lr=config.min_lr_for(len(optimizer.param_groups)),
            eps=config.eps,
        )
        self.config = config
        self._monitor_given = monitor_given
        # torch < 2.6 has no `default_min_lr`; `_reduce_lr` below needs it to extend min_lr to new groups.
        self.default_min_lr = None if isinstance(config.min_lr, list) else config.min_lr
        self.num_evaluations = 0
        self.best_evaluation: Optional[int] = None
        self.best_epoch: Optional[int] = None
        #: with windows, the window in which ``best`` was reached (a list in checkpoints)
        self.best_window: Optional[tuple[int, int]] = None
        self.cuts: list[PlateauCut] = []
        #: LR changes made by something other than the plateau, as (evaluation they were noticed at, LRs the plateau
        #: had left, LRs found), recorded by the PlateauCallback so summaries name them beside the cuts
        self.outside_changes: list[tuple[int, tuple[float, ...], tuple[float, ...]]] = []
        #: the latest cut the plateau called for beyond the cut limit: not applied (``lrs_after`` is what it would
        #: have set), ``None`` if there was none
        self.withheld: Optional[PlateauCut] = None
        # How many cuts may be applied, ``None``: no limit. Set for one fit by PlateauEarlyStopping(max_reductions=K),
        # which stops the run at the evaluation that calls for cut K+1, so that cut is never applied.
        self._cut_limit: Optional[int] = None
        self._warned_new_groups = False
        self._value = math.nan
        # (epoch, global_step) of the evaluation being judged; set by the callback
        self._context: tuple[Optional[int], Optional[int]] = (None, None)
        # with windows, (first, last) optimizer step of the window being judged; set by the callback and replay
        self._window: Optional[tuple[int, int]] = None
        # the PlateauCallback that owns stepping inside a Trainer, if any
        self._driver: Optional[object] = None
        # With restore_best_on_cut, the module's and optimizers' state the PlateauCallback keeps for this fit:
        # taken at each new best, loaded at each cut. None in a replay, which has no weights.
        self._best_state: Optional[BestState] = None
        self.warmup_steps = config.warmup_steps
        self.warmup_start_factor = config.warmup_start_factor
        self.on_nonfinite = config.on_nonfinite
        #: each param group's LR when the scheduler was built: the LR the warmup rises to
        self.warmup_base_lrs = tuple(float(group["lr"]) for group in optimizer.param_groups)
        #: whether the warmup is over (or there is none): from then on the LR moves by the plateau's cuts only
        self.warmup_done = config.warmup_steps == 0
        #: the step the warmup counts from: 0 outside a Trainer; inside one, the global step its fit started at (a
        #: reused Trainer's second fit starts past 0, and warms up from there, as a LinearLR built for it does)
        self.warmup_start_step = 0
        #: the step at which the warmup ended (``warmup_start_step + warmup_steps`` of the fit that ran it), ``None``
        #: while it runs or when this run had none: what the summary reports, whatever ``warmup_steps`` says later
        self.warmup_end_step: Optional[int] = None
        # Whether `load_state_dict` brought the warmup's progress from a checkpoint: a resumed fit goes on from it,
        # a fresh one starts its warmup at its own first step.
        self._restored = False
        # The latest step `apply_warmup` was given, and where it stood at the previous `step(value)` by hand: a
        # warmup that never advances between two values would leave every value unjudged.
        self._warmup_at = 0
        self._stepped_at: Optional[int] = None
        # 1-based evaluations recorded but not judged (during warmup, or skipped as non-finite), oldest first
        self._uncounted: list[int] = []
        self._warned_skip = False
        # (warmup, skipped) of the latest evaluation
        self._flags = (False, False)
        # No warmup and torch's NaN rule: every value goes straight to the detector.
        self._plain = config.warmup_steps == 0 and config.on_nonfinite == "bad"
        self.smoothing = config.smoothing
        self.detector = config.detector
        self.slope_window = config.slope_window
        self.slope_confidence = config.slope_confidence
        self.slope_robust = config.slope_robust
        # What judges each value (torch's comparison, or the slope's count), and the average judged in its place.
        self._detector = make_detector(config)
        self._smoothing = make_smoothing(config)
        # the average judged at the latest evaluation, None without smoothing or when it was not judged
        self._smoothed: Optional[float] = None
        # As torch's LinearLR does, the first step's LR is set at once.
        self.apply_warmup(0)

    @property
    def monitor(self) -> str:
        """The monitored metric's name, from the config."""
        return self.config.monitor

    def _take_monitor(self, monitor: str) -> bool:
        """Watch ``monitor`` (the scheduler dict's) when none was named at construction; whether it was taken."""
        if self._monitor_given or monitor == self.config.monitor:
            return False
        self.config = dataclasses.replace(self.config, monitor=monitor)
        return True

    @property
    def num_reductions(self) -> int:
        """How many cuts have been applied so far."""
        return len(self.cuts)

    @property
    def last_cut(self) -> Optional[PlateauCut]:
        """The latest cut, ``None`` before the first."""
        return self.cuts[-1] if self.cuts else None

    def snapshot(self) -> PlateauEvaluation:
        """The state after the latest evaluation, as a :class:`PlateauEvaluation` row."""
        last = self.last_cut
        cut = last is not None and last.evaluation == self.num_evaluations
        epoch, global_step = self._context
        return PlateauEvaluation(
            evaluation=self.num_evaluations,
            epoch=epoch,
            global_step=global_step,
            value=self._value,
            best=float(self.best),
            num_bad=int(self.num_bad_epochs),
            cooldown=int(self.cooldown_counter),
            lrs=tuple(float(group["lr"]) for group in self.optimizer.param_groups),
            cut=cut,
            withheld=self.withheld is not None and self.withheld.evaluation == self.num_evaluations,
            window=self._window,
            restored_from=last.restored_from if cut and last is not None else None,
            warmup=self._flags[0],
            skipped=self._flags[1],
            smoothed=self._smoothed,
        )

    def apply_warmup(self, step: int) -> bool:
        """Set each param group's LR for optimizer step ``step`` (the steps already taken) of the warmup.

        The LR is ``lr * (start + (1 - start) * k / warmup_steps)`` with ``k = step - warmup_start_step``, ``lr``
        being the group's LR when the scheduler was built (:attr:`warmup_base_lrs`); from ``k >= warmup_steps`` on it
        is ``lr``, the warmup is over and this does nothing any more. A few float operations, no tensor. Inside a
        Trainer the :class:`~lightning_plateau.PlateauCallback` calls it after every training batch with
        ``trainer.global_step``, and the warmup counts from the step its fit started at (:attr:`warmup_start_step`).
        Outside one ``warmup_start_step`` is 0: call it after each optimizer step with the number of optimizer steps
        taken so far, before the next ``step(value)``. Param groups added after the scheduler was built
        (``BaseFinetuning``) keep their own LR.

        Args:
            step: optimizer steps taken so far.

        Returns:
            Whether it set the LR (``False`` once the warmup is over, or without one).

        Raises:
            ValueError: if ``step`` is before the warmup's start (below 0 outside a Trainer).
        """
        if self.warmup_done:
            return False
        taken = step - self.warmup_start_step
        if taken < 0:
            raise ValueError(
                f"PlateauScheduler.apply_warmup({step}): the warmup starts at step {self.warmup_start_step}; pass the"
                " number of optimizer steps taken so far (0 or more)."
            )
        self._warmup_at = step
        lrs = warmup_lrs(self.warmup_base_lrs, taken, self.warmup_steps, self.warmup_start_factor)
        groups = self.optimizer.param_groups
        for group, lr in zip(groups, lrs, strict=False):
            group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in groups]
        if taken >= self.warmup_steps:
            self.warmup_done = True
            self.warmup_end_step = step
        return True

    def _start_warmup_at(self, step: int) -> None:
        """Count a fresh fit's warmup from ``step``, the global step it starts at; a resumed fit keeps its own start.

        Called by the PlateauCallback at train start, after Lightning restored a checkpoint's state (if any).
        """
        if not self._restored:
            self.warmup_start_step = step
        self.apply_warmup(step)

    @property
    def in_warmup(self) -> bool:
        """Whether an evaluation judged now falls in the warmup.

        Never once the warmup is over, or when the run never had one (a resume keeps it so, whatever
        ``warmup_steps`` says now): the LR and the judging always agree. Before that, at
        ``global_step - warmup_start_step < warmup_steps`` when the step is known (inside a Trainer, in ``replay``),
        else until :meth:`apply_warmup` has reached ``warmup_steps``.
        """
        if self.warmup_done:
            return False
        step = self._context[1]
        return step is None or step - self.warmup_start_step < self.warmup_steps

    @override
    def step(self, metrics: Optional[SupportsFloat] = None, epoch: Optional[int] = None) -> None:  # type: ignore[override]
        """Judge one fresh value of the monitored metric and cut the LR when the rule says so.

        Inside a Trainer with a :class:`~lightning_plateau.PlateauCallback` the callback does the stepping:
        a value passed here by hand is refused, and Lightning's own loop calls ``step()`` without a value,
        which is ignored.

        Stepped by hand with ``warmup_steps``, call :meth:`apply_warmup` after each optimizer step (torch's class has
        no warmup, so a loop written for it does not): a value judged while the warmup stands still is refused.

        Args:
            metrics: the value (a float or a 0-dim tensor).
            epoch: deprecated by torch; passed through to torch's class.

        Raises:
            RuntimeError: if a value is passed by hand while a PlateauCallback owns the stepping, or with
                ``restore_best_on_cut=True`` (only a PlateauCallback reaches the weights it restores), or with a
                warmup that has not advanced (no :meth:`apply_warmup` with a later step) since the previous value.
        """
        if self._driver is not None:
            if metrics is None:
                # Lightning's training loop steps every scheduler at epoch end; the callback owns this one.
                return
            raise RuntimeError(
                f"This PlateauScheduler is stepped by {type(self._driver).__name__} once per fresh value of"
                f" '{self.monitor}'; stepping it by hand as well would count evaluations twice. Remove the"
                " call to `.step(...)` (with manual optimization too: the callback steps it for you)."
            )
        if metrics is None:
            raise TypeError("PlateauScheduler.step() needs the monitored value, e.g. `scheduler.step(val_loss)`")
        if self.config.restore_best_on_cut:
            raise RuntimeError(
                "PlateauConfig(restore_best_on_cut=True) restores the module's weights at each cut, which a"
                " scheduler stepped by hand cannot reach: only a PlateauCallback in a Lightning Trainer restores"
                " them. Fit with a Trainer (PlateauMixin, or PlateauCallback), or set restore_best_on_cut=False and"
                " keep the best weights yourself."
            )
        if not self.warmup_done:
            self._check_warmup_advances()
        self._judge(float(metrics), epoch)

    def _check_warmup_advances(self) -> None:
        """Refuse a second value by hand while the warmup stands still: it would never end, and nothing be judged.

        The first value may come before any optimizer step (a validation before training); from the second on, an
        :meth:`apply_warmup` with a later step must have come in between.
        """
        if self._stepped_at is not None and self._stepped_at == self._warmup_at:
            raise RuntimeError(
                f"PlateauScheduler(warmup_steps={self.warmup_steps}) is stepped by hand, but its warmup has not"
                f" advanced since the previous value (it stands at optimizer step {self._warmup_at}): every value"
                " would be recorded as warmup and never judged, and the LR would stay at the warmup's. Call"
                " `scheduler.apply_warmup(optimizer_steps_taken)` after each optimizer step (torch's"
                " ReduceLROnPlateau has no warmup, so a loop written for it does not), or fit with a Lightning"
                " Trainer and PlateauCallback (which sets the warmup for you), or drop warmup_steps."
            )
        self._stepped_at = self._warmup_at

    def _judge(self, value: float, epoch: Optional[int] = None) -> None:
        if not self._plain and self._set_aside(value):
            return
        best_before = self.best
        self._value = value
        self.num_evaluations += 1
        if self._smoothing is not None:
            value = self._smoothed = self._smoothing(value)
        self._detector.step(self, value, epoch)
        if self.withheld is not None and self.withheld.evaluation == self.num_evaluations:
            # torch resets the counters after every cut it calls for; a withheld cut consumed none of them.
            self.num_bad_epochs, self.cooldown_counter = self.withheld.num_bad, 0
        if self.best != best_before and self.best_evaluation != self.num_evaluations:
            self._improved()

    def _improved(self) -> None:
        """Record the evaluation being judged as the best so far; keep its state for ``restore_best_on_cut``.

        torch's rule calls for no cut at an improvement (it resets the bad count), so the judge records it after
        the step. The slope detector may cut at an evaluation that also improved the best: it calls this before
        the cut, so the cut restores this evaluation's own state.
        """
        self.best_evaluation = self.num_evaluations
        self.best_epoch = self._context[0]
        self.best_window = self._window
        if self._best_state is not None:
            self._best_state.capture(self.best_evaluation, self.best_epoch)

    def _set_aside(self, value: float) -> bool:
        """Record ``value`` without judging it when it falls in the warmup or is a skipped non-finite value.

        Returns whether it was set aside; a value that is not goes on to the rule.

        Raises:
            ValueError: with ``on_nonfinite="raise"``, for a NaN or infinite value (nothing is recorded).
        """
        finite = math.isfinite(value)
        if not finite and self.on_nonfinite == "raise":
            raise ValueError(
                f"{self.monitor} is {value} at {self._where(self.num_evaluations + 1)}, and"
                " PlateauConfig(on_nonfinite='raise') stops there. Find where it stops being finite (a diverging"
                " loss, a log of 0, a division by 0), or set on_nonfinite='skip' to leave such values out of the"
                " rule, or 'bad' (torch's behaviour) to count them as evaluations without improvement."
            )
        warmup = self.in_warmup
        skipped = not finite and self.on_nonfinite == "skip"
        self._flags = (warmup, skipped)
        if not (warmup or skipped):
            return False
        self._value = value
        self._smoothed = None
        self.num_evaluations += 1
        self._uncounted.append(self.num_evaluations)
        if skipped and not self._warned_skip:
            self._warned_skip = True
            if self._driver is None:  # a PlateauCallback warns on rank zero only
                warnings.warn(self.skip_message(), UserWarning, stacklevel=3)
        return True

    def skip_message(self) -> str:
        """The warning for the latest evaluation, skipped as non-finite."""
        return (
            f"{self.monitor} is {self._value} at {self._where(self.num_evaluations)}: skipped, as"
            " PlateauConfig(on_nonfinite='skip') asks. It counts neither as an improvement nor as an evaluation"
            " without improvement; the history and the traces mark it (skipped=True, plateau/skipped). Warned once."
        )

    def _where(self, evaluation: int) -> str:
        epoch, step = self._context
        labels = [f"epoch {epoch}"] if epoch is not None else []
        labels += [f"global step {step}"] if step is not None else []
        return f"evaluation {evaluation}" + (f" ({', '.join(labels)})" if labels else "")

    def uncounted_between(self, after: int, upto: int) -> int:
        """How many evaluations in ``after < evaluation <= upto`` were recorded but not judged (warmup, skipped)."""
        uncounted = self._uncounted
        if not uncounted or uncounted[-1] <= after:
            return 0
        return bisect.bisect_right(uncounted, upto) - bisect.bisect_right(uncounted, after)

    def _is_better(self, a: float, best: float) -> bool:
        # torch's comparisons verbatim, except that a negative best takes the relative threshold of |best|: torch
        # multiplies it by (1 - t) for "min" and (1 + t) for "max", which moves the bar the wrong way. The starting
        # best keeps torch's bar even when it is negative (-inf for "max"): the |best| bar would be -inf * (1 - t),
        # NaN or +inf once t >= 1, that nothing beats, where torch's -inf * (1 + t) = -inf is beaten by any value.
        t = self.threshold
        torch_rel = best >= 0 or best == self.mode_worse
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return bool(a < best * (1.0 - t if torch_rel else 1.0 + t))
            return bool(a < best - t)
        if self.threshold_mode == "rel":
            return bool(a > best * (t + 1.0 if torch_rel else 1.0 - t))
        return bool(a > best + t)

    # torch releases before 2.4 call the comparison `is_better`, later ones `_is_better`.
    is_better = _is_better

    def min_lr_bounds(self) -> list[float]:
        """The ``min_lr`` of each of the optimizer's param groups, as the next cut applies it.

        Groups added after construction (as ``BaseFinetuning`` does) get the scalar ``min_lr``, or ``0.0``
        when ``min_lr`` was a list.
        """
        num_groups = len(self.optimizer.param_groups)
        bounds = [float(bound) for bound in self.min_lrs[:num_groups]]
        fill = 0.0 if self.default_min_lr is None else float(self.default_min_lr)
        return bounds + [fill] * (num_groups - len(bounds))

    @property
    def exhausted(self) -> bool:
        """Whether a cut now would change no param group's LR: ``lr - max(lr * factor, min_lr) <= eps`` for all.

        This is torch's own test for applying a cut, so an exhausted scheduler has nothing left to cut.
        """
        lrs = [float(group["lr"]) for group in self.optimizer.param_groups]
        bounds = self.min_lr_bounds()
        return all(lr - max(lr * self.factor, bound) <= self.eps for lr, bound in zip(lrs, bounds, strict=True))

    def _call_for_cut(self, epoch: Optional[int]) -> bool:
        """Cut as torch's rule does, for a detector that decides by other means; whether the cut was not withheld."""
        self._reduce_lr(epoch)
        return self.withheld is None or self.withheld.evaluation != self.num_evaluations

    @override
    def _reduce_lr(self, epoch: Any) -> None:
        groups = self.optimizer.param_groups
        if len(groups) > len(self.min_lrs):
            if self.default_min_lr is None and not self._warned_new_groups:
                warnings.warn(
                    f"The optimizer has {len(groups)} param groups but `min_lr` lists {len(self.min_lrs)}:"
                    " the groups added since the scheduler was built get min_lr 0.0. Pass a single float"
                    " min_lr to give every group the same bound.",
                    UserWarning,
                    stacklevel=2,
                )
                self._warned_new_groups = True
            self.min_lrs = self.min_lr_bounds()
        before = tuple(float(group["lr"]) for group in groups)
        if self._cut_limit is not None and self.num_reductions >= self._cut_limit and not self.exhausted:
            cut = [max(lr * self.factor, bound) for lr, bound in zip(before, self.min_lr_bounds(), strict=True)]
            would_be = tuple(new if lr - new > self.eps else lr for lr, new in zip(before, cut, strict=True))
            self.withheld = self._cut(before, would_be)
            return
        super()._reduce_lr(epoch)
        after = tuple(float(group["lr"]) for group in groups)
        if after != before:
            self.cuts.append(self._cut(before, after, self._restore_best()))

    def _restore_best(self) -> tuple[Optional[int], Optional[int]]:
        """At a cut with ``restore_best_on_cut``, go back to the best evaluation's weights; return where from.

        The (evaluation, epoch) of the state training goes on from, ``(None, None)`` without the setting or
        without a state held. Called once the cut has set the LRs: the restore loads the weights and the
        optimizers' per-parameter state only, so the LRs stay the cut's, and where the LR comes from stays this
        scheduler alone.
        """
        if not self.config.restore_best_on_cut:
            return None, None
        if self._best_state is None:
            # A replay has no weights: the run it replays went on from those of the best evaluation.
            return self.best_evaluation, self.best_epoch
        return self._best_state.restore()

    def _cut(
        self,
        before: tuple[float, ...],
        after: tuple[float, ...],
        restored: tuple[Optional[int], Optional[int]] = (None, None),
    ) -> PlateauCut:
        epoch_now, step_now = self._context
        return PlateauCut(
            evaluation=self.num_evaluations,
            epoch=epoch_now,
            global_step=step_now,
            value=self._value,
            best=float(self.best),
            best_evaluation=self.best_evaluation,
            best_epoch=self.best_epoch,
            num_bad=int(self.num_bad_epochs),
            lrs_before=before,
            lrs_after=after,
            window=self._window,
            best_window=_span(self.best_window),
            restored_from=restored[0],
            restored_epoch=restored[1],
            smoothed=self._smoothed,
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        """Everything a later decision depends on, as plain data (loadable with ``weights_only=True``)."""
        state = {key: value for key, value in self.__dict__.items() if key not in _TRANSIENT}
        state["cuts"] = [cut.as_dict() for cut in self.cuts]
        state["withheld"] = None if self.withheld is None else self.withheld.as_dict()
        state["monitor"] = self.monitor
        state["best_window"] = _span_list(self.best_window)
        state["detector_state"] = self._detector.state_dict()
        state["smoothing_state"] = None if self._smoothing is None else self._smoothing.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters, the best value and the cuts of :meth:`state_dict`.

        The policy (mode, factor, patience, threshold, cooldown, min_lr, eps) stays this scheduler's own
        config, so a run resumed with a changed :class:`PlateauConfig` follows the new one; a warning names
        what changed. Keys added in later versions fall back to their defaults. A checkpoint of a plateau that
        watched another metric restores nothing: its best value and counters say nothing about this metric, so
        this plateau starts afresh (with a warning; the LR is the optimizer's, restored by its own state). A
        checkpoint judged by another detector (one written before detectors existed was judged by torch's rule)
        restores the best value, the cooldown and the cuts, but not the count, which means something else to this
        detector: it starts from 0, as after a cut, and the warning says so.

        The warmup's progress is restored in every case: a warmup that is over, or that the checkpoint's run never
        had (a checkpoint written before warmups existed), does not start again, whatever ``warmup_steps`` says now,
        and no evaluation after it counts as one of the warmup's. So is the step it counts from (0 for checkpoints
        written before it was kept), so a resumed fit goes on with its own warmup, not one of its own start.
        """
        self._restored = True
        # Never restarted mid-run: it would set the LR back to the ramp, or to the base over a cut LR.
        warmup: dict[str, Any] = {
            key: state_dict[key] for key in ("warmup_base_lrs", "warmup_done") if key in state_dict
        }
        warmup["warmup_start_step"] = int(state_dict.get("warmup_start_step", 0))
        warmup["warmup_end_step"] = state_dict.get("warmup_end_step", _warmup_end_of(state_dict))
        if "warmup_done" not in warmup:
            warmup["warmup_done"] = True
            if self.warmup_steps:
                warnings.warn(
                    f"The checkpoint's plateau has no warmup state (it was written by a version without warmups):"
                    f" its run had no warmup, so warmup_steps={self.warmup_steps} does not apply to this resumed run.",
                    UserWarning,
                    stacklevel=2,
                )
        self.__dict__.update(warmup)
        saved_monitor = state_dict.get("monitor")
        if saved_monitor is not None and saved_monitor != self.monitor:
            warnings.warn(
                f"The checkpoint's plateau watched '{saved_monitor}', this one watches '{self.monitor}': the best"
                f" value, counters and cuts of '{saved_monitor}' do not apply, so the plateau starts afresh on"
                f" '{self.monitor}' (the LR goes on from the checkpoint's).",
                UserWarning,
                stacklevel=2,
            )
            return
        changed = [
            f"{key} {state_dict[key]!r} -> {getattr(self, key)!r}"
            for key in _POLICY
            if key in state_dict and state_dict[key] != getattr(self, key)
        ]
        if "detector" not in state_dict and self.detector != "best":
            changed.append(f"detector 'best' (the only one of the version that wrote it) -> {self.detector!r}")
        other_detector = self._other_detector_note(state_dict)
        if changed:
            again = ""
            if self.warmup_done and state_dict.get("warmup_steps", self.warmup_steps) != self.warmup_steps:
                again = " A warmup that is over, or that the run never had, does not start again."
            restored = "its counters and best value are restored"
            if other_detector is not None:
                restored = "its best value, cooldown and cuts are restored"
            warnings.warn(
                f"The checkpoint's plateau policy differs from this scheduler's config ({', '.join(changed)}):"
                f" {restored}, and the config's policy applies from here.{again}{other_detector or ''}",
                UserWarning,
                stacklevel=2,
            )
        self._load_detection(state_dict)
        skip = _TRANSIENT | _DERIVED_FROM_POLICY | set(_POLICY) | {"detector_state", "smoothing_state"}
        state = {key: value for key, value in state_dict.items() if key not in skip}
        if other_detector is not None:
            state["num_bad_epochs"] = 0
        state.update(warmup)
        state["cuts"] = [PlateauCut.from_dict(cut) for cut in state.get("cuts", [])]
        withheld = state.get("withheld")
        state["withheld"] = None if withheld is None else PlateauCut.from_dict(withheld)
        state["best_window"] = _span(state.get("best_window"))
        super().load_state_dict(state)

    def _other_detector_note(self, state_dict: Mapping[str, Any]) -> Optional[str]:
        """What a resume does with a count kept by another detector (the end of its warning); ``None``: same detector.

        A checkpoint written before detectors existed was judged by torch's rule. The other detector's count means
        something else (evaluations without improvement on the best, or the length of the latest stretch over
        which the slope shows no decrease), and the count this detector would have kept cannot be rebuilt from the
        checkpoint: its cuts, and its calls for cuts on an exhausted LR (which torch's rule counts from but records
        nowhere), came where the other detector put them. So the count starts from 0, as after a cut: never a
        cut sooner than the config's patience allows, and never a count that reads as one thing and is another.
        """
        saved = str(state_dict.get("detector", "best"))
        if saved == self.detector:
            return None
        count = int(state_dict.get("num_bad_epochs", 0))
        lacking = make_detector(PlateauConfig(mode=self.mode, detector=saved)).lacking(self.mode)  # type: ignore[arg-type]
        needed = self.config.cut_period - self.config.cooldown
        return (
            f" The checkpoint's count ({count} evaluations {lacking}, by detector {saved!r}) means something else"
            f" to detector {self.detector!r} and cannot be rebuilt from the checkpoint, so it is not carried over:"
            f" the count starts from 0 at this resume, as after a cut, and the next cut needs at least {needed}"
            f" evaluations {self._detector.lacking(self.mode)} from here (patience {self.patience})."
        )

    def _load_detection(self, state_dict: dict[str, Any]) -> None:
        """Restore the detector's history and the moving average; a detector of another kind starts afresh.

        A checkpoint written before detectors existed was torch's rule without smoothing: nothing to restore.
        """
        if state_dict.get("detector", "best") == self.detector:
            self._detector.load_state_dict(state_dict.get("detector_state") or {})
        saved = state_dict.get("smoothing_state")
        if self._smoothing is not None and saved:
            self._smoothing.load_state_dict(saved)
