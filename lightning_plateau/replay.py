"""Replay a metric history through the plateau scheduler: when would it have cut, without training again."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Optional, SupportsFloat, Union, overload

import torch

from lightning_plateau._format import format_cut, format_lrs, plural
from lightning_plateau._rule import PlateauCut, PlateauEvaluation, _PlateauRule, warmup_lrs
from lightning_plateau._window import Span, window_means
from lightning_plateau.config import PlateauConfig


class ReplayRow(NamedTuple):
    """One evaluation of a replay: the fields of :class:`~lightning_plateau.PlateauEvaluation`, plus the reason.

    Attributes:
        evaluation: 1-based index of the value in the replayed history.
        epoch: the epoch label given for the value (0-based, as Lightning counts), ``None`` without labels.
        global_step: the step label given for the value, ``None`` without labels.
        value: the value replayed (a window's mean with ``window_steps``): the value judged, unless ``smoothed``.
        best: best value judged so far, after this evaluation (``inf``/``-inf`` before any finite improvement).
        num_bad: evaluations without improvement counted so far (0 right after a cut); with ``detector="slope"``,
            the count of evaluations without decrease.
        cooldown: evaluations of cooldown left.
        lrs: LR of each param group after the decision.
        cut: whether this evaluation cut the LR.
        reason: why it cut, in words (the text the live callback logs), or why it withheld a cut; ``None`` when it
            did neither.
        window: with ``window_steps``, the first and last optimizer step (1-based) of the window whose mean this
            row judged; ``None`` otherwise.
        warmup: whether it falls in the warmup (``global_step - warmup_start_step < warmup_steps``): recorded, not
            judged; ``lrs`` is the warmup's LR at that step.
        skipped: whether its value was not finite and ``on_nonfinite="skip"`` left it out of the rule.
        smoothed: with ``smoothing``, the moving average judged in place of ``value``; ``None`` otherwise, and for a
            row in the warmup or skipped.
        withheld: whether it called for a cut beyond ``max_reductions``: not applied, and the run stopped here.
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
    reason: Optional[str]
    window: Optional[Span] = None
    warmup: bool = False
    skipped: bool = False
    smoothed: Optional[float] = None
    withheld: bool = False

    def as_evaluation(self) -> PlateauEvaluation:
        """This row as the :class:`~lightning_plateau.PlateauEvaluation` the live callback records."""
        return PlateauEvaluation(
            *self[:9],
            window=self.window,
            warmup=self.warmup,
            skipped=self.skipped,
            smoothed=self.smoothed,
            withheld=self.withheld,
        )


class Replay(Sequence[ReplayRow]):
    """The result of :func:`replay`: one :class:`ReplayRow` per value, oldest first.

    Rows are built when read, from columns recorded during the replay, so replaying a million values stays
    cheap; indexing, slicing, ``len`` and iteration behave as on a list.

    Attributes:
        config: the policy replayed.
        initial_lrs: LR of each param group before the first value.
        cuts: every cut, as the scheduler recorded it (the same objects a live ``PlateauScheduler.cuts`` holds).
        withheld: with ``max_reductions``, the cut the last row called for and did not apply (the run stopped
            there), as a live ``PlateauScheduler.withheld`` holds it; ``None`` otherwise.
        max_reductions: the cut limit replayed, ``None`` for none.
        warmup_start_step: the global step the warmup counted from (0 unless given to :func:`replay`).
    """

    def __init__(
        self,
        config: PlateauConfig,
        initial_lrs: tuple[float, ...],
        cuts: list[PlateauCut],
        values: list[float],
        bests: list[float],
        num_bad: list[int],
        cooldowns: list[int],
        epochs: Optional[Sequence[Optional[int]]],
        global_steps: Optional[Sequence[Optional[int]]],
        windows: Optional[Sequence[Span]] = None,
        warmup_rows: int = 0,
        skipped: frozenset[int] = frozenset(),
        smoothed: Optional[list[Optional[float]]] = None,
        withheld: Optional[PlateauCut] = None,
        max_reductions: Optional[int] = None,
        warmup_start_step: int = 0,
    ) -> None:
        self.config = config
        self.initial_lrs = initial_lrs
        self.cuts = cuts
        self._values = values
        self._bests = bests
        self._num_bad = num_bad
        self._cooldowns = cooldowns
        self._epochs = epochs
        self._global_steps = global_steps
        self._windows = windows
        self._cut_evaluations = [cut.evaluation for cut in cuts]
        self._reasons: dict[int, str] = {}
        # The first `warmup_rows` values fall in the warmup (the steps never decrease); `skipped`: 1-based
        # evaluations left out as non-finite.
        self._warmup_rows = warmup_rows
        self._skipped = skipped
        # with smoothing, the average judged at each row (None where none was)
        self._smoothed = smoothed
        self.withheld = withheld
        self.max_reductions = max_reductions
        self.warmup_start_step = warmup_start_step

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> ReplayRow: ...

    @overload
    def __getitem__(self, index: slice) -> list[ReplayRow]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[ReplayRow, list[ReplayRow]]:
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"replay row index {index} out of range for {len(self)} rows")
        return self._row(index)

    def __iter__(self) -> Iterator[ReplayRow]:
        # Walks the cuts alongside the rows instead of searching them for each row.
        cuts = iter(self.cuts)
        next_cut = next(cuts, None)
        lrs = self.initial_lrs
        epochs = self._epochs
        steps = self._global_steps
        windows = self._windows
        smoothed = self._smoothed
        columns = zip(self._values, self._bests, self._num_bad, self._cooldowns, strict=True)
        plain = self._plain
        for index, (value, best, num_bad, cooldown) in enumerate(columns):
            evaluation = index + 1
            reason = None
            if next_cut is not None and next_cut.evaluation == evaluation:
                lrs = next_cut.lrs_after
                reason = self._reason(next_cut)
                next_cut = next(cuts, None)
            row = ReplayRow(
                evaluation,
                None if epochs is None else epochs[index],
                None if steps is None else steps[index],
                value,
                best,
                num_bad,
                cooldown,
                lrs,
                reason is not None,
                reason,
                None if windows is None else windows[index],
                smoothed=None if smoothed is None else smoothed[index],
            )
            yield row if plain else self._flagged(row)

    def __repr__(self) -> str:
        return f"Replay({len(self)} evaluations, {len(self.cuts)} cuts, {self.config.describe()})"

    @property
    def _plain(self) -> bool:
        """Whether every row is as the columns say: no warmup, skipped or withheld row to flag."""
        return not self._warmup_rows and not self._skipped and self.withheld is None

    @property
    def final_lrs(self) -> tuple[float, ...]:
        """LR of each param group after the last value."""
        if self._warmup_rows and self._warmup_rows == len(self):
            return self._row(len(self) - 1).lrs  # still in the warmup
        return self.cuts[-1].lrs_after if self.cuts else self.initial_lrs

    @property
    def warmup_evaluations(self) -> int:
        """How many of the first values fall in the warmup (0 without one)."""
        return self._warmup_rows

    @property
    def skipped_evaluations(self) -> list[int]:
        """The 1-based evaluations left out of the rule as non-finite (``on_nonfinite="skip"``), oldest first."""
        return sorted(self._skipped)

    def cut_rows(self) -> list[ReplayRow]:
        """The rows that cut the LR, without reading the others."""
        return [self._row(evaluation - 1) for evaluation in self._cut_evaluations]

    def reasons(self) -> list[str]:
        """Why each cut happened, in words, oldest first."""
        return [self._reason(cut) for cut in self.cuts]

    def evaluations(self) -> list[PlateauEvaluation]:
        """Every row as a :class:`~lightning_plateau.PlateauEvaluation`, as ``PlateauCallback.history`` holds them.

        This is what :func:`lightning_plateau.chart.plot_plateau` draws. With ``restore_best_on_cut``, a cut's row
        names the evaluation the run went on from (``restored_from``), as the live history does.
        """
        rows = [row.as_evaluation() for row in self]
        if not self.config.restore_best_on_cut:
            return rows
        restored = {cut.evaluation: cut.restored_from for cut in self.cuts}
        return [
            dataclasses.replace(row, restored_from=restored[row.evaluation]) if row.evaluation in restored else row
            for row in rows
        ]

    def _row(self, index: int) -> ReplayRow:
        evaluation = index + 1
        position = bisect.bisect_right(self._cut_evaluations, evaluation)
        lrs = self.cuts[position - 1].lrs_after if position else self.initial_lrs
        cut = position > 0 and self._cut_evaluations[position - 1] == evaluation
        row = ReplayRow(
            evaluation,
            None if self._epochs is None else self._epochs[index],
            None if self._global_steps is None else self._global_steps[index],
            self._values[index],
            self._bests[index],
            self._num_bad[index],
            self._cooldowns[index],
            lrs,
            cut,
            self._reason(self.cuts[position - 1]) if cut else None,
            None if self._windows is None else self._windows[index],
            smoothed=None if self._smoothed is None else self._smoothed[index],
        )
        return row if self._plain else self._flagged(row)

    def withheld_reason(self) -> Optional[str]:
        """Why the last row withheld a cut, in words; ``None`` when no cut was withheld."""
        cut = self.withheld
        if cut is None:
            return None
        # The judgement reads as a cut's (where, the value, the best and the bad count); what follows is not a cut.
        plain = dataclasses.replace(self.config, restore_best_on_cut=False)
        judged = format_cut(dataclasses.replace(cut, restored_from=None), plain).rsplit(": lr ", 1)[0]
        return (
            f"{judged}: cut {len(self.cuts) + 1} withheld, as PlateauEarlyStopping(max_reductions="
            f"{self.max_reductions}) allows {plural(len(self.cuts), 'cut')}: the run stops here, lr stays"
            f" {format_lrs(cut.lrs_before)}"
        )

    def _flagged(self, row: ReplayRow) -> ReplayRow:
        """``row`` with its warmup, skipped and withheld flags, and the warmup's LR during the warmup."""
        warmup = row.evaluation <= self._warmup_rows
        skipped = row.evaluation in self._skipped
        withheld = self.withheld is not None and row.evaluation == self.withheld.evaluation
        if not (warmup or skipped or withheld):
            return row
        lrs = row.lrs
        if warmup:
            config, step = self.config, row.global_step
            assert step is not None  # replay() refuses a warmup without steps
            taken = step - self.warmup_start_step
            lrs = warmup_lrs(self.initial_lrs, taken, config.warmup_steps, config.warmup_start_factor)
        reason = self.withheld_reason() if withheld else row.reason
        return row._replace(lrs=lrs, reason=reason, warmup=warmup, skipped=skipped, withheld=withheld)

    def _as_recorded(self, restores: Sequence[Optional[tuple[int, Optional[int]]]]) -> Replay:
        """This replay with each cut's restore as the run recorded it: ``restores[i]`` for evaluation ``i + 1``.

        The restores change no decision, only where the run went on from: a run whose ``restore_best_on_cut``
        changed at a resume restored at some cuts and not at others, which no one setting replays.
        """
        cuts = []
        for cut in self.cuts:
            restored = restores[cut.evaluation - 1] if cut.evaluation <= len(restores) else None
            source, epoch = restored if restored is not None else (None, None)
            cuts.append(dataclasses.replace(cut, restored_from=source, restored_epoch=epoch))
        recorded = copy.copy(self)
        recorded.cuts = cuts
        recorded._reasons = {}
        if any(restored is not None for restored in restores):
            recorded.config = dataclasses.replace(self.config, restore_best_on_cut=True)
        return recorded

    def _reason(self, cut: PlateauCut) -> str:
        reason = self._reasons.get(cut.evaluation)
        if reason is None:
            reason = self._reasons[cut.evaluation] = format_cut(cut, self.config)
        return reason


def replay(
    values: Iterable[SupportsFloat],
    config: PlateauConfig | Mapping[str, Any] | None = None,
    *,
    lr: Union[float, Sequence[float]] = 1e-3,
    epochs: Optional[Sequence[Optional[int]]] = None,
    global_steps: Optional[Sequence[Optional[int]]] = None,
    windows: Optional[Sequence[Span]] = None,
    max_reductions: Optional[int] = None,
    warmup_start_step: int = 0,
) -> Replay:
    """Judge a history of monitored values as training would have, and say when the LR is cut.

    The values go through a :class:`~lightning_plateau.PlateauScheduler` on a throwaway optimizer, the very
    object the live :class:`~lightning_plateau.PlateauCallback` steps, so a replay of the values a fit judged
    gives that fit's decisions: the same cuts at the same evaluations, to the same LRs.

    With ``PlateauConfig(window_steps=N)`` the values are the per-step values of a training metric, every value
    the fit logged: they are cut into windows of N optimizer steps by the live callback's own rule and each
    window's mean is judged, one row per window (a window the values end inside is not judged). Replaying the
    values a fit logged on each micro-batch (all ranks' values, for the mean over ranks) gives its judged means.

    Every detector and ``smoothing`` replay as they run live: give the raw values (``PlateauEvaluation.value``, the
    ``plateau/value`` trace), and the replay averages them again; each row then has the average judged
    (``smoothed``), and with ``detector="slope"`` ``num_bad`` is the slope's count.

    Args:
        values: the monitored value at each evaluation, oldest first (floats, 0-dim tensors, numpy scalars).
            NaN and infinity are judged as training judges them, as ``on_nonfinite`` says: by default never an
            improvement; with ``"skip"`` left out of the rule; with ``"raise"`` an error naming the evaluation.
        config: the policy, a :class:`~lightning_plateau.PlateauConfig` or a dict of its fields (``None``: the
            defaults). ``monitor`` only names the values in the reasons.
        lr: the starting LR, or one per param group (``min_lr`` may then be a list of the same length).
        epochs: an epoch label (0-based) per value, e.g. the ``epoch`` column of a ``metrics.csv``; it appears
            in the rows and in the reasons ("epoch 15" for the 16th epoch), as in a live fit. With windows, a row
            takes the label of its window's last value.
        global_steps: a step label per value, likewise. With windows, the optimizer step (1-based, as
            ``trainer.global_step`` reads after it) each value belongs to, non-decreasing: the micro-batches of one
            step under gradient accumulation share it; ``None``: one value per step, from step 1. A row's
            ``global_step`` is then its window's last step. With ``warmup_steps`` in the config (and no windows)
            they are needed and must be the trainer's global step at each evaluation
            (``PlateauEvaluation.global_step``, the ``plateau/global_step`` trace), which decides the evaluations
            that fall in the warmup and their LR. Lightning's logging step (the ``step`` column of a CSVLogger,
            W&B's ``trainer/global_step``) lags it by one after a batch that stepped the optimizer, so it would
            misplace the warmup's end.
        windows: for values a windows run judged already (``PlateauEvaluation.value`` with ``window_steps``, each a
            window's mean), the window of each (``PlateauEvaluation.window``): the values are judged one each, as
            they are, and rows and reasons name each window's steps as the live run's do; ``global_steps`` default
            to each window's last step. ``None``: with ``window_steps`` in the config the values are per-step
            values, windowed here.
        max_reductions: the cut limit of ``PlateauEarlyStopping(max_reductions=K)``: the evaluation that calls for
            cut K+1 does not apply it (``Replay.withheld`` holds it, its row is marked ``withheld``) and the replay
            ends there, as the run stopped there; later values are not judged. ``None``: no limit.
        warmup_start_step: the global step the warmup counts from: the step the fit started at, past 0 for a fresh
            fit on a reused Trainer (``PlateauScheduler.warmup_start_step``, the ``plateau/warmup_start_step``
            trace). An evaluation is in the warmup at ``global_step - warmup_start_step < warmup_steps``.

    Returns:
        A :class:`Replay`: a sequence of :class:`ReplayRow`, one per value, with the recorded ``cuts``.

    Raises:
        ValueError: if ``lr`` is not a positive float or a non-empty list of them, if ``epochs`` or
            ``global_steps`` do not have one label per value, if a value is not a number, if the config
            is invalid (``min_lr`` with another length than ``lr`` included), with windows if a step is missing,
            below 1 or goes back, if the config has a warmup and ``global_steps`` are missing, hold ``None`` or
            decrease or lie before ``warmup_start_step``, or, with ``on_nonfinite="raise"``, at the first value that
            is not finite; if ``windows`` do not give one (first, last) pair of steps per value, or ``max_reductions``
            or ``warmup_start_step`` is not an int >= 0.

    Example::

        # best in the 5th epoch (epoch 4), then no improvement: patience 10 cuts at the end of the 16th (epoch 15)
        rows = replay([1.0, 0.9, 0.8, 0.7, 0.6] + [0.65] * 15, PlateauConfig(patience=10))
        [row.evaluation for row in rows if row.cut]  # [16]

        # a per-step training loss, judged on the mean of each window of 1000 optimizer steps
        rows = replay(step_losses, PlateauConfig(monitor="train_loss", window_steps=1000, patience=3))
        [row.window for row in rows.cut_rows()]  # e.g. [(9001, 10000)]
    """
    config = PlateauConfig.coerce(config)
    initial_lrs = _check_lrs(lr)
    floats = _floats(values)
    epochs = _check_labels("epochs", epochs, len(floats))
    global_steps = _check_labels("global_steps", global_steps, len(floats))
    if windows is not None:
        windows = _check_windows(windows, len(floats))
        if global_steps is None:
            global_steps = [last for _, last in windows]
    elif config.window_steps:
        floats, epochs, global_steps, windows = _windowed(floats, epochs, global_steps, config.window_steps)
    if isinstance(warmup_start_step, bool) or not isinstance(warmup_start_step, int) or warmup_start_step < 0:
        raise ValueError(f"`warmup_start_step` must be an int >= 0, got {warmup_start_step!r}")
    if config.warmup_steps:
        _check_warmup_steps(config, global_steps, warmup_start_step)
    if max_reductions is not None and (
        isinstance(max_reductions, bool) or not isinstance(max_reductions, int) or max_reductions < 0
    ):
        raise ValueError(f"`max_reductions` must be an int >= 0 or None, got {max_reductions!r}")

    # One dummy parameter per group: torch refuses a parameter in two groups.
    groups = [{"params": [torch.nn.Parameter(torch.zeros(()))], "lr": group_lr} for group_lr in initial_lrs]
    scheduler = _PlateauRule(torch.optim.SGD(groups), config)
    # As the callback does at a fit's start: the warmup counts from the step the fit started at.
    scheduler._start_warmup_at(warmup_start_step)
    if not scheduler._plain or config.smoothing or max_reductions is not None:
        scheduler._cut_limit = max_reductions
        return _replay_flagged(scheduler, config, initial_lrs, floats, epochs, global_steps, windows)
    bests: list[float] = []
    num_bad: list[int] = []
    cooldowns: list[int] = []
    judge = scheduler._judge
    add_best, add_bad, add_cooldown = bests.append, num_bad.append, cooldowns.append
    if epochs is None and global_steps is None:
        for value in floats:
            judge(value)
            add_best(scheduler.best)
            add_bad(scheduler.num_bad_epochs)
            add_cooldown(scheduler.cooldown_counter)
    else:
        # The callback sets the same context before each step: cuts then carry their epoch, and so do reasons.
        contexts = zip(epochs or [None] * len(floats), global_steps or [None] * len(floats), strict=True)
        for index, (value, context) in enumerate(zip(floats, contexts, strict=True)):
            scheduler._context = context
            scheduler._window = None if windows is None else windows[index]
            judge(value)
            add_best(scheduler.best)
            add_bad(scheduler.num_bad_epochs)
            add_cooldown(scheduler.cooldown_counter)
    return Replay(
        config,
        initial_lrs,
        scheduler.cuts,
        floats,
        bests,
        num_bad,
        cooldowns,
        epochs,
        global_steps,
        windows,
        warmup_start_step=warmup_start_step,
    )


def _check_windows(windows: Sequence[Any], count: int) -> list[Span]:
    """``windows`` as (first, last) pairs of ints, one per value; refused otherwise."""
    spans = list(windows)
    if len(spans) != count:
        raise ValueError(f"`windows` must give one window per value: {count} values, got {len(spans)} windows")
    checked: list[Span] = []
    for index, span in enumerate(spans):
        pair = tuple(span) if isinstance(span, (list, tuple)) else ()
        if len(pair) != 2 or not all(isinstance(step, int) and not isinstance(step, bool) for step in pair):
            raise ValueError(f"`windows` holds (first, last) optimizer steps; window {index + 1} is {span!r}")
        first, last = pair
        if not 1 <= first <= last:
            raise ValueError(f"`windows`: window {index + 1} is {span!r}; its steps must be 1 <= first <= last")
        checked.append((first, last))
    return checked


def _windowed(
    values: list[float],
    epochs: Optional[list[Optional[int]]],
    global_steps: Optional[list[Optional[int]]],
    window_steps: int,
) -> tuple[list[float], Optional[list[Optional[int]]], list[Optional[int]], list[Span]]:
    """The window means of a per-step series, with the labels of each window's last value and the windows."""
    steps: Optional[list[int]] = None
    if global_steps is not None:
        missing = next((index for index, step in enumerate(global_steps) if step is None), None)
        if missing is not None:
            raise ValueError(f"with window_steps, every value needs its step; value {missing + 1} has none")
        steps = [int(step) for step in global_steps if step is not None]
    means, lasts, windows = window_means(values, steps, window_steps)
    window_epochs = None if epochs is None else [epochs[index] for index in lasts]
    return means, window_epochs, [last for _, last in windows], windows


def _replay_flagged(
    scheduler: _PlateauRule,
    config: PlateauConfig,
    initial_lrs: tuple[float, ...],
    floats: list[float],
    epochs: Optional[list[Optional[int]]],
    global_steps: Optional[list[Optional[int]]],
    windows: Optional[list[Span]],
) -> Replay:
    """The replay of a config with a warmup, a non-finite policy or smoothing: the live callback's steps, one by one."""
    scheduler._warned_skip = True  # the rows say which values were skipped
    smoothed: Optional[list[Optional[float]]] = [] if config.smoothing else None
    bests: list[float] = []
    num_bad: list[int] = []
    cooldowns: list[int] = []
    skipped: set[int] = set()
    warmup_rows = 0
    withheld: Optional[PlateauCut] = None
    contexts = zip(epochs or [None] * len(floats), global_steps or [None] * len(floats), strict=True)
    for index, (value, context) in enumerate(zip(floats, contexts, strict=True)):
        scheduler._context = context
        scheduler._window = None if windows is None else windows[index]
        step = context[1]
        if step is not None:
            # The callback sets the warmup's LR after each training batch, before any evaluation that follows.
            scheduler.apply_warmup(step)
        scheduler._judge(value)
        in_warmup, was_skipped = scheduler._flags
        warmup_rows += in_warmup
        if was_skipped:
            skipped.add(scheduler.num_evaluations)
        if smoothed is not None:
            smoothed.append(scheduler._smoothed)
        bests.append(scheduler.best)
        num_bad.append(scheduler.num_bad_epochs)
        cooldowns.append(scheduler.cooldown_counter)
        if scheduler.withheld is not None:
            # PlateauEarlyStopping(max_reductions=K) stops the run at the evaluation that calls for cut K+1.
            withheld = scheduler.withheld
            break
    judged = len(bests)
    return Replay(
        config,
        initial_lrs,
        scheduler.cuts,
        floats[:judged],
        bests,
        num_bad,
        cooldowns,
        None if epochs is None else epochs[:judged],
        None if global_steps is None else global_steps[:judged],
        None if windows is None else windows[:judged],
        warmup_rows=warmup_rows,
        skipped=frozenset(skipped),
        smoothed=smoothed,
        withheld=withheld,
        max_reductions=scheduler._cut_limit,
        warmup_start_step=scheduler.warmup_start_step,
    )


def _check_warmup_steps(config: PlateauConfig, global_steps: Optional[list[Optional[int]]], start: int) -> None:
    """Refuse a warmup replay whose values lack the trainer's global steps: the warmup's end would be a guess."""
    needed = (
        f"PlateauConfig(warmup_steps={config.warmup_steps}) needs the trainer's global step of every value"
        " (`global_steps`): it decides which evaluations fall in the warmup and their LR"
    )
    if global_steps is None:
        raise ValueError(
            f"{needed}, and none were given. Pass PlateauEvaluation.global_step or the plateau/global_step trace."
        )
    missing = next((index for index, step in enumerate(global_steps) if step is None), None)
    if missing is not None:
        raise ValueError(f"{needed}; value {missing + 1} has none.")
    steps = [step for step in global_steps if step is not None]
    back = next((index for index in range(1, len(steps)) if steps[index] < steps[index - 1]), None)
    if back is not None:
        raise ValueError(
            f"{needed}; they must not decrease, but value {back + 1} is at step {steps[back]} after step"
            f" {steps[back - 1]}. Replay one run's evaluations, in order."
        )
    if steps and steps[0] < start:
        raise ValueError(
            f"{needed}; value 1 is at step {steps[0]}, before the step the warmup counts from (`warmup_start_step`"
            f" {start}): the fit started there, so its evaluations come after it."
        )


def _check_lrs(lr: Union[float, Sequence[float]]) -> tuple[float, ...]:
    lrs: list[Any] = list(lr) if isinstance(lr, (list, tuple)) else [lr]
    if not lrs or not all(_is_positive_float(value) for value in lrs):
        raise ValueError(
            f"`lr` must be a finite float > 0 or a non-empty list of them (one per param group), got {lr!r}"
        )
    return tuple(float(value) for value in lrs)


def _is_positive_float(value: Any) -> bool:
    # numbers.Real: NumPy's scalars too, as the config takes them
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and float(value) > 0


def _floats(values: Iterable[SupportsFloat]) -> list[float]:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"`values` must be numbers, one per evaluation, got the string {values!r}")
    values = values if isinstance(values, Sequence) else list(values)
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        # Found again, rather than tracked on every value, to keep the common case fast.
        for index, value in enumerate(values):
            try:
                float(value)
            except (TypeError, ValueError):
                raise ValueError(f"`values` must be numbers; value {index + 1} is {value!r}") from None
        raise


def _check_labels(name: str, labels: Optional[Sequence[Optional[int]]], count: int) -> Optional[list[Optional[int]]]:
    if labels is None:
        return None
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(f"`{name}` must give one label per value: {count} values, got {len(labels)} labels")
    return labels
