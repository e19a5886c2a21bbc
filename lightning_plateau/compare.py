"""What if? Replay one history under several plateau policies and say what each would have done."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, SupportsFloat, Union

import torch

from lightning_plateau._rule import PlateauCut, _PlateauRule
from lightning_plateau.config import _SLOPE_DEFAULTS, PlateauConfig
from lightning_plateau.replay import Replay, replay


@dataclass(frozen=True)
class PolicyOutcome:
    """What one policy would have done on a history.

    Attributes:
        config: the policy.
        varied: the settings that differ between the compared policies, with this policy's values.
        replay: the full replay, row by row.
        early_stop: the evaluation at which ``PlateauEarlyStopping()`` (its default rule: the LR exhausted, then
            ``patience + 1 + cooldown`` evaluations without improvement; with ``max_reductions``, the evaluation that
            calls for one cut more) would have stopped the run; ``None``: never.
        early_stop_reason: its message, ``None`` when it would not have stopped.
    """

    config: PlateauConfig
    varied: dict[str, Any]
    replay: Replay
    early_stop: Optional[int]
    early_stop_reason: Optional[str]

    @property
    def cuts(self) -> list[PlateauCut]:
        """The cuts this policy makes (up to the end of the history, early stopping aside)."""
        return self.replay.cuts

    @property
    def first_cut(self) -> Optional[PlateauCut]:
        """The first cut, ``None`` if there is none."""
        return self.replay.cuts[0] if self.replay.cuts else None

    @property
    def final_lrs(self) -> tuple[float, ...]:
        """The LR of each param group after the last evaluation."""
        return self.replay.final_lrs

    @property
    def evaluations_per_lr(self) -> list[tuple[tuple[float, ...], int]]:
        """Each LR the run trains at, in order, with the number of evaluations judged at it.

        The evaluations of a warmup, at the LRs of its ramp, are left out.
        """
        spans: list[tuple[tuple[float, ...], int]] = []
        start = self.replay.warmup_evaluations
        lrs = self.replay.initial_lrs
        for cut in self.replay.cuts:
            spans.append((lrs, cut.evaluation - start))
            start, lrs = cut.evaluation, cut.lrs_after
        spans.append((lrs, len(self.replay) - start))
        return [span for span in spans if span[1] > 0]


def compare(
    values: Iterable[SupportsFloat],
    base: PlateauConfig | Mapping[str, Any] | None = None,
    *,
    lr: Union[float, Sequence[float]] = 1e-3,
    epochs: Optional[Sequence[Optional[int]]] = None,
    global_steps: Optional[Sequence[Optional[int]]] = None,
    windows: Optional[Sequence[tuple[int, int]]] = None,
    max_reductions: Optional[int] = None,
    warmup_start_step: int = 0,
    **grid: Sequence[Any],
) -> list[PolicyOutcome]:
    """Replay ``values`` under every combination of the settings in ``grid``, the rest taken from ``base``.

    Each policy goes through the same rule training uses (:func:`~lightning_plateau.replay`), so the cuts are
    the ones that policy would have made on this history; ``early_stop`` says where ``PlateauEarlyStopping()``
    would have ended the run (the history itself continues past it, as it was recorded).

    Args:
        values: the monitored value at each evaluation, oldest first (with ``window_steps``, every per-step value:
            each policy judges the same window means).
        base: the policy the varied settings replace fields of (``None``: the defaults).
        lr: the starting LR, or one per param group.
        epochs: an epoch label (0-based) per value.
        global_steps: a step label per value.
        windows: for values a windows run judged already, the window of each (as :func:`replay` takes them).
        max_reductions: the cut limit of ``PlateauEarlyStopping(max_reductions=K)``: each policy's replay ends at
            the evaluation that calls for its cut K+1, where that early stopping ends the run.
        warmup_start_step: the global step the warmup counts from (as :func:`replay` takes it).
        **grid: PlateauConfig fields and the values to try, e.g. ``patience=[2, 5, 10], factor=[0.1, 0.5]``, or
            ``detector=["best", "slope"], smoothing=[0, 0.6]``: with ``detector`` in the grid, the slope settings of
            ``base`` apply to the slope policies only (the best ones take their defaults).

    Returns:
        One :class:`PolicyOutcome` per combination, in the order of the grid.

    Raises:
        ValueError: if a grid key is not a PlateauConfig field, a grid holds no value, or a policy is invalid.

    Example::

        for outcome in compare(history, PlateauConfig(), lr=1e-3, patience=[2, 5, 10], factor=[0.1, 0.5]):
            print(outcome.varied, len(outcome.cuts), outcome.final_lrs, outcome.early_stop)
    """
    base_config = PlateauConfig.coerce(base)
    # A single value stands for a list of one (`patience=2` as `patience=[2]`).
    grid = {
        name: [choices] if isinstance(choices, (str, bytes)) or not isinstance(choices, Iterable) else list(choices)
        for name, choices in grid.items()
    }
    names = {field.name for field in dataclasses.fields(PlateauConfig)}
    unknown = sorted(set(grid) - names)
    if unknown:
        raise ValueError(f"compare() varies PlateauConfig fields; {unknown} are not among them: {sorted(names)}")
    empty = sorted(name for name, choices in grid.items() if not list(choices))
    if empty:
        raise ValueError(f"compare() got no value to try for {empty}")
    floats = [float(value) for value in values]
    keys = list(grid)
    outcomes = []
    for combination in itertools.product(*(list(grid[key]) for key in keys)):
        varied = dict(zip(keys, combination, strict=True))
        config = _policy(base_config, varied)
        result = replay(
            floats,
            config,
            lr=lr,
            epochs=epochs,
            global_steps=global_steps,
            windows=windows,
            max_reductions=max_reductions,
            warmup_start_step=warmup_start_step,
        )
        stop: Optional[int]
        reason: Optional[str]
        if result.withheld is not None:
            stop, reason = result.withheld.evaluation, result.withheld_reason()
        else:
            stop, reason = _early_stop(result)
        outcomes.append(PolicyOutcome(config, varied, result, stop, reason))
    return outcomes


def _policy(base: PlateauConfig, varied: dict[str, Any]) -> PlateauConfig:
    """``base`` with the ``varied`` settings; a row of the best detector in a grid of detectors drops the slope's.

    ``compare(values, PlateauConfig(detector="slope", slope_robust=True), detector=["best", "slope"])`` compares
    the two detectors: the slope settings belong to the slope rows (a config refuses them with ``"best"``). Slope
    settings varied in the grid itself are kept, and refused with ``"best"``.
    """
    fields = dict(varied)
    if "detector" in varied and varied["detector"] == "best":
        fields = {**_SLOPE_DEFAULTS, **fields}
    return dataclasses.replace(base, **fields)


def _early_stop(result: Replay) -> tuple[Optional[int], Optional[str]]:
    """Where ``PlateauEarlyStopping()`` would stop a run judging the values ``result`` judged, and why."""
    # The callback's own rule, on the scheduler's state after each evaluation, as in a live fit.
    from lightning_plateau.early_stopping import PlateauEarlyStopping

    config = result.config
    stopper = PlateauEarlyStopping(verbose=False)
    stopper._use_config(config)
    groups = [{"params": [torch.nn.Parameter(torch.zeros(()))], "lr": lr} for lr in result.initial_lrs]
    rule = _PlateauRule(torch.optim.SGD(groups), config)
    rule._warned_skip = True  # replay() has said it, if at all
    rule._start_warmup_at(result.warmup_start_step)
    for row in result:
        # The labels the live callback gives each evaluation (a window's steps too), so the reason reads as the
        # live one would; the warmup's LR of the step, as the callback sets it after each batch.
        rule._context = (row.epoch, row.global_step)
        rule._window = row.window
        if row.global_step is not None:
            rule.apply_warmup(row.global_step)
        rule._judge(row.value)
        should_stop, reason = stopper._evaluate_plateau_criteria(rule.snapshot(), rule)  # type: ignore[arg-type]
        if should_stop:
            return rule.num_evaluations, reason
    return None, None
