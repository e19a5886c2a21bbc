"""PlateauScheduler: torch's LR trajectory, with the negative-metric and new-param-group bugs fixed."""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_plateau import PlateauConfig, PlateauCut, PlateauEvaluation, PlateauScheduler

# Deterministic and quick: the same examples on every run, no example database written into the tree.
_PROPERTY = settings(max_examples=1000, deadline=None, derandomize=True, database=None)


def _optimizer(lrs: list[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _torch_twin(config: PlateauConfig, lrs: list[float]) -> ReduceLROnPlateau:
    return ReduceLROnPlateau(
        _optimizer(lrs),
        mode=config.mode,
        factor=config.factor,
        patience=config.patience,
        threshold=config.threshold,
        threshold_mode=config.threshold_mode,
        cooldown=config.cooldown,
        min_lr=config.min_lr,
        eps=config.eps,
    )


def _lrs(scheduler: ReduceLROnPlateau) -> list[float]:
    return [group["lr"] for group in scheduler.optimizer.param_groups]


def _counters(scheduler: ReduceLROnPlateau) -> tuple[float, int, int, int]:
    return scheduler.best, scheduler.num_bad_epochs, scheduler.cooldown_counter, scheduler.last_epoch


# Strategies built once: building them inside the composite costs more than running the schedulers.
_LR = st.sampled_from([1.0, 0.7, 0.1, 3e-4, 1e-9])
_MIN_LR = st.sampled_from([0.0, 1e-5, 1e-3, 0.05])
_MIN_LR_LISTS = {n: st.lists(_MIN_LR, min_size=n, max_size=n) for n in (1, 2, 3)}
# Every threshold torch accepts and the config allows: 0, small, and >= 1 (where 1 - t <= 0 flips torch's bar).
_THRESHOLD = st.sampled_from([0.0, 1e-4, 0.05, 1.0, 2.0]) | st.floats(0.0, 0.5) | st.floats(0.5, 10.0)
_FIELDS = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["min", "max"]),
        "factor": st.sampled_from([0.1, 0.5]) | st.floats(1e-3, 0.999),
        "patience": st.integers(0, 4),
        "threshold": _THRESHOLD,
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 3),
        "eps": st.sampled_from([0.0, 1e-8, 1e-3]),
    }
)


@st.composite
def _configs(draw: st.DrawFn) -> tuple[PlateauConfig, list[float]]:
    groups = draw(st.integers(1, 3))
    lrs = [draw(_LR) for _ in range(groups)]
    min_lr = draw(_MIN_LR | _MIN_LR_LISTS[groups])
    return PlateauConfig(min_lr=min_lr, **draw(_FIELDS)), lrs


# Plateaus need repeats: values drawn from a few levels (ties, near-ties within a threshold, negative, -0.0, both
# infinities, NaN) or anywhere.
_VALUES = st.lists(
    st.sampled_from(
        [0.0, -0.0, 0.5, 0.50002, 0.9, 1.0, 1.00005, 2.0, -0.5, -0.50002, -1.0, -2.0, math.inf, -math.inf, math.nan]
    )
    | st.floats(-1e3, 1e3)
    | st.floats(allow_nan=True, allow_infinity=True),
    min_size=1,
    max_size=30,
)


class _Oracle:
    """torch's rule written out plainly, with the documented departure; ``departed`` says when it mattered.

    The departure: with a relative threshold, a negative best (other than the starting ``-inf`` of "max") is
    improved on only past ``best * (1 + t)`` for "min" and ``best * (1 - t)`` for "max", ``t * |best|`` beyond it
    in the direction of improvement, where torch's bar is ``best * (1 - t)`` and ``best * (1 + t)``.
    """

    def __init__(self, config: PlateauConfig, lrs: list[float]) -> None:
        self.config = config
        self.lrs = list(lrs)
        self.min_lrs = list(config.min_lr) if isinstance(config.min_lr, list) else [config.min_lr] * len(lrs)
        self.start = math.inf if config.mode == "min" else -math.inf
        self.best, self.num_bad, self.cooldown, self.evaluations = self.start, 0, 0, 0
        self.departed = False  # whether the departure ever gave another verdict than torch's bar

    def _better(self, value: float, departing: bool) -> bool:
        t, best, lower = self.config.threshold, self.best, self.config.mode == "min"
        if self.config.threshold_mode == "abs":
            return value < best - t if lower else value > best + t
        if departing and best < 0 and best != self.start:
            return value < best * (1 + t) if lower else value > best * (1 - t)
        return value < best * (1 - t) if lower else value > best * (1 + t)

    def step(self, value: float) -> None:
        better = self._better(value, departing=True)
        self.departed = self.departed or better != self._better(value, departing=False)
        self.evaluations += 1
        if better:
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown > 0:
            self.cooldown -= 1
            self.num_bad = 0
        if self.num_bad > self.config.patience:
            for index, (lr, min_lr) in enumerate(zip(self.lrs, self.min_lrs, strict=True)):
                new = max(lr * self.config.factor, min_lr)
                if lr - new > self.config.eps:
                    self.lrs[index] = new
            self.cooldown, self.num_bad = self.config.cooldown, 0

    def counters(self) -> tuple[float, int, int, int]:
        return self.best, self.num_bad, self.cooldown, self.evaluations


@_PROPERTY
@given(setup=_configs(), values=_VALUES)
def test_scheduler_matches_torch_except_the_documented_departure(
    setup: tuple[PlateauConfig, list[float]], values: list[float]
) -> None:
    """Any config, any values (negative, zero, infinite, NaN): every LR and counter is torch's, step by step, until a
    negative best with a relative threshold gives another verdict than torch's bar; the oracle's throughout.

    Each drawn sequence also runs reversed and sorted both ways (steady gains, steady losses): four sequences per
    example at the cost of one draw, since drawing dominates the run time.
    """
    config, lrs = setup
    for sequence in (values, values[::-1], sorted(values), sorted(values, reverse=True)):
        ours = PlateauScheduler(_optimizer(lrs), config)
        theirs = _torch_twin(config, lrs)
        oracle = _Oracle(config, lrs)
        changes = 0
        for value in sequence:
            before = _lrs(ours)
            ours.step(value)
            theirs.step(value)
            oracle.step(value)
            assert (_lrs(ours), _counters(ours)) == (oracle.lrs, oracle.counters())
            if not oracle.departed:
                assert (_lrs(ours), _counters(ours)) == (_lrs(theirs), _counters(theirs))
                assert ours.get_last_lr() == theirs.get_last_lr()
            changes += _lrs(ours) != before
        assert ours.num_evaluations == len(sequence)
        assert len(ours.cuts) == changes  # a cut is recorded exactly when some LR changed
        if config.threshold_mode == "abs" or not any(-math.inf < value < 0 for value in sequence):
            assert not oracle.departed  # the departure needs a finite negative best and a relative threshold


def test_scheduler_max_rel_threshold_of_one_follows_torch() -> None:
    """Issue 15: max, rel, threshold 1: the first value beats the starting -inf as in torch; one cut, not four."""
    config = PlateauConfig(mode="max", factor=0.5, patience=1, threshold=1.0)
    ours, theirs = PlateauScheduler(_optimizer([1.0]), config), _torch_twin(config, [1.0])
    for value in [1, 3, 7, 7.5, 20, 21, 22, 23]:
        ours.step(value)
        theirs.step(value)
    assert _lrs(theirs) == _lrs(ours) == [0.5]
    assert [cut.evaluation for cut in ours.cuts] == [7]
    assert ours.best == theirs.best == 20


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0, 2.0, 7.5])
@pytest.mark.parametrize("first", [-1e6, -3.0, -0.0, 0.0, 2.0, math.inf])
def test_scheduler_max_rel_any_first_value_beats_the_start(threshold: float, first: float) -> None:
    """The starting best -inf of "max" keeps torch's bar -inf for every threshold: the first value always improves."""
    ours = PlateauScheduler(_optimizer([1.0]), PlateauConfig(mode="max", patience=0, threshold=threshold))
    ours.step(first)
    assert (ours.best, ours.num_bad_epochs, ours.cuts) == (first, 0, [])


# Hand-computed with lr 1, factor 0.5, patience 1, threshold 0.1 (rel). torch's bar for "min" is best * (1 - t),
# which for a negative best lies *above* best: -0.95 < -1 * 0.9 = -0.9 counts as an improvement although the loss
# rose. The fixed bar is best - t * |best| = -1.1 for "min" and best + t * |best| = -0.9 for "max".
_NEGATIVE_CASES = [
    pytest.param(
        "min",
        [-1.0, -0.95, -0.92, -0.91, -0.90],
        ([-1.0, -0.95, -0.92, -0.91, -0.90], [0, 0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0, 1.0]),
        ([-1.0, -1.0, -1.0, -1.0, -1.0], [0, 1, 0, 1, 0], [1.0, 1.0, 0.5, 0.5, 0.25]),
        id="min-loss-rises",
    ),
    pytest.param(
        "max",
        [-1.0, -1.05, -1.08, -1.09, -1.10],
        ([-1.0, -1.05, -1.08, -1.09, -1.10], [0, 0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0, 1.0]),
        ([-1.0, -1.0, -1.0, -1.0, -1.0], [0, 1, 0, 1, 0], [1.0, 1.0, 0.5, 0.5, 0.25]),
        id="max-reward-falls",
    ),
    pytest.param(
        "min",
        [-1.0, -1.2, -1.5, -1.52, -1.6],
        ([-1.0, -1.2, -1.5, -1.52, -1.6], [0, 0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0, 1.0]),
        ([-1.0, -1.2, -1.5, -1.5, -1.5], [0, 0, 0, 1, 0], [1.0, 1.0, 1.0, 1.0, 0.5]),
        id="min-real-gains-and-a-small-one",
    ),
    pytest.param(
        "max",
        [-1.0, -0.8, -0.5, -0.48, -0.47],
        ([-1.0, -0.8, -0.5, -0.48, -0.47], [0, 0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0, 1.0]),
        ([-1.0, -0.8, -0.5, -0.5, -0.5], [0, 0, 0, 1, 0], [1.0, 1.0, 1.0, 1.0, 0.5]),
        id="max-real-gains-and-a-small-one",
    ),
]


@pytest.mark.parametrize(("mode", "values", "torch_expected", "ours_expected"), _NEGATIVE_CASES)
def test_scheduler_relative_threshold_uses_abs_best_for_negative_metrics(
    mode: str,
    values: list[float],
    torch_expected: tuple[list[float], list[int], list[float]],
    ours_expected: tuple[list[float], list[int], list[float]],
) -> None:
    """torch counts a worse negative value as better (issues 38622, 47513); ours follows the hand-computed table."""
    config = PlateauConfig(mode=mode, factor=0.5, patience=1, threshold=0.1)  # type: ignore[arg-type]
    theirs = _torch_twin(config, [1.0])
    ours = PlateauScheduler(_optimizer([1.0]), config)
    for scheduler, expected in ((theirs, torch_expected), (ours, ours_expected)):
        trace: tuple[list[float], list[int], list[float]] = ([], [], [])
        for value in values:
            scheduler.step(value)
            trace[0].append(scheduler.best)
            trace[1].append(scheduler.num_bad_epochs)
            trace[2].append(_lrs(scheduler)[0])
        assert trace == expected


def test_scheduler_abs_threshold_unchanged_for_negative_metrics() -> None:
    """With an absolute threshold torch was already right; ours agrees with it on negative values."""
    config = PlateauConfig(factor=0.5, patience=1, threshold=0.05, threshold_mode="abs")
    values = [-1.0, -1.02, -1.1, -1.0, -0.5, -2.0]
    ours, theirs = PlateauScheduler(_optimizer([1.0]), config), _torch_twin(config, [1.0])
    for value in values:
        ours.step(value)
        theirs.step(value)
        assert (_lrs(ours), _counters(ours)) == (_lrs(theirs), _counters(theirs))
    assert _lrs(ours) == [0.5]


def _add_group(optimizer: torch.optim.Optimizer, lr: float) -> None:
    # What BaseFinetuning does when it unfreezes a backbone.
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr})


def test_scheduler_new_param_group_takes_scalar_min_lr_silently() -> None:
    """A group added after construction gets the scalar `min_lr` at the next cut, without warning."""
    scheduler = PlateauScheduler(_optimizer([1.0]), PlateauConfig(patience=0, factor=0.1, min_lr=0.05))
    scheduler.step(1.0)
    _add_group(scheduler.optimizer, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step(1.0)
    assert _lrs(scheduler) == [0.1, 0.05]
    assert scheduler.min_lrs == [0.05, 0.05]


def test_scheduler_new_param_group_with_list_min_lr_gets_zero_and_one_warning() -> None:
    """torch crashes at the cut; ours gives the new group min_lr 0.0 and warns exactly once over several cuts."""
    config = PlateauConfig(patience=0, factor=0.5, min_lr=[0.3])
    theirs = _torch_twin(config, [1.0])
    theirs.step(1.0)
    _add_group(theirs.optimizer, 1.0)
    with pytest.raises(RuntimeError, match="differs from when `ReduceLROnPlateau` was initialized"):
        theirs.step(1.0)

    ours = PlateauScheduler(_optimizer([1.0]), config)
    ours.step(1.0)
    _add_group(ours.optimizer, 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            ours.step(1.0)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "2 param groups but `min_lr` lists 1" in messages[0]
    assert "min_lr 0.0" in messages[0]
    assert _lrs(ours) == [0.3, 0.125]
    assert [cut.lrs_after for cut in ours.cuts] == [(0.5, 0.5), (0.3, 0.25), (0.3, 0.125)]


def test_scheduler_records_each_cut() -> None:
    """Each cut records its evaluation index, the trainer's epoch and step, the value, best and LRs around it."""
    scheduler = PlateauScheduler(_optimizer([1.0, 0.5]), PlateauConfig(patience=1, factor=0.1, min_lr=[0.0, 0.01]))
    values = [3.0, 2.0, 2.5, 2.2, 1.0, 1.0, 1.0]
    for index, value in enumerate(values):
        scheduler._context = (index // 2, 10 * (index + 1))  # two evaluations per epoch, 10 steps apart
        scheduler.step(torch.tensor(value, dtype=torch.float64))
    assert scheduler.cuts == [
        PlateauCut(4, 1, 40, 2.2, 2.0, 2, 0, 2, (1.0, 0.5), (0.1, 0.05)),
        PlateauCut(7, 3, 70, 1.0, 1.0, 5, 2, 2, (0.1, 0.05), (0.010000000000000002, 0.01)),
    ]
    assert scheduler.num_reductions == 2
    assert scheduler.last_cut == scheduler.cuts[-1]
    assert PlateauCut.from_dict(scheduler.cuts[0].as_dict()) == scheduler.cuts[0]


def test_scheduler_records_cut_outside_a_trainer_without_epoch() -> None:
    """Outside a Trainer epoch and global step are None; a cut on a metric never finite has no best evaluation."""
    scheduler = PlateauScheduler(_optimizer([1.0]), PlateauConfig(patience=0))
    scheduler.step(math.nan)
    (cut,) = scheduler.cuts
    assert (cut.evaluation, cut.epoch, cut.global_step, cut.best, cut.best_evaluation, cut.best_epoch) == (
        1,
        None,
        None,
        math.inf,
        None,
        None,
    )
    assert math.isnan(cut.value)
    assert (cut.num_bad, cut.lrs_before, cut.lrs_after) == (1, (1.0,), (0.1,))


def test_scheduler_skips_cut_below_eps_and_at_min_lr() -> None:
    """A reduction smaller than eps, or one that min_lr stops, changes nothing and is not recorded as a cut."""
    scheduler = PlateauScheduler(_optimizer([1e-9, 1.0]), PlateauConfig(patience=0, factor=0.5, min_lr=[0.0, 1.0]))
    scheduler.step(1.0)
    scheduler.step(1.0)
    assert _lrs(scheduler) == [1e-9, 1.0]
    assert scheduler.cuts == []


def test_scheduler_snapshot_rows() -> None:
    """`snapshot()` is the state after each evaluation: value, best, bad count, cooldown, LRs, whether it cut."""
    scheduler = PlateauScheduler(_optimizer([1.0]), PlateauConfig(patience=1, cooldown=1, factor=0.5))
    rows = []
    for value in [1.0, 2.0, 2.0, 2.0, 0.5]:
        scheduler.step(value)
        rows.append(scheduler.snapshot())
    assert rows == [
        PlateauEvaluation(1, None, None, 1.0, 1.0, 0, 0, (1.0,), False),
        PlateauEvaluation(2, None, None, 2.0, 1.0, 1, 0, (1.0,), False),
        PlateauEvaluation(3, None, None, 2.0, 1.0, 0, 1, (0.5,), True),
        PlateauEvaluation(4, None, None, 2.0, 1.0, 0, 0, (0.5,), False),
        PlateauEvaluation(5, None, None, 0.5, 0.5, 0, 0, (0.5,), False),
    ]


def test_scheduler_step_needs_a_value() -> None:
    """Outside a Trainer `step()` without the monitored value is an error, not a silent no-op."""
    scheduler = PlateauScheduler(_optimizer([1.0]))
    with pytest.raises(TypeError, match=r"needs the monitored value"):
        scheduler.step()


def test_scheduler_rejects_bad_arguments() -> None:
    """A non-optimizer, a bad config type and a min_lr list of the wrong length are refused clearly."""
    with pytest.raises(TypeError, match=r"needs a torch\.optim\.Optimizer, got Linear"):
        PlateauScheduler(torch.nn.Linear(1, 1), PlateauConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a PlateauConfig or a dict"):
        PlateauScheduler(_optimizer([1.0]), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`min_lr` has 2 values .* but the optimizer has 1 param group"):
        PlateauScheduler(_optimizer([1.0]), PlateauConfig(min_lr=[0.0, 0.0]))


def test_scheduler_is_a_reduce_lr_on_plateau() -> None:
    """Tools that check for torch's class (Lightning, LearningRateMonitor) keep recognising it."""
    assert isinstance(PlateauScheduler(_optimizer([1.0])), ReduceLROnPlateau)


def _is_plain(data: Any) -> bool:
    if isinstance(data, dict):
        return all(isinstance(key, str) and _is_plain(value) for key, value in data.items())
    if isinstance(data, (list, tuple)):
        return all(_is_plain(item) for item in data)
    return data is None or isinstance(data, (bool, int, float, str))


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def _observe(scheduler: PlateauScheduler) -> str:
    # repr: exact for floats, and a NaN value (before any evaluation) compares equal to itself.
    return repr(
        (_lrs(scheduler), _counters(scheduler), scheduler.snapshot(), scheduler.cuts, scheduler.best_evaluation)
    )


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(setup=_configs(), values=_VALUES, data=st.data())
def test_scheduler_state_dict_restores_identical_future(
    setup: tuple[PlateauConfig, list[float]], values: list[float], data: st.DataObject
) -> None:
    """state_dict is plain data, survives torch.save/load(weights_only=True) and restores every later decision."""
    config, lrs = setup
    split = data.draw(st.integers(0, len(values)))
    original = PlateauScheduler(_optimizer(lrs), config)
    for value in values[:split]:
        original.step(value)
    state = original.state_dict()
    assert _is_plain(state)
    # A fresh run resumes with the optimizer's LRs restored (Lightning restores the optimizer) and a new config.
    resumed = PlateauScheduler(_optimizer(_lrs(original)), config)
    resumed.load_state_dict(_round_trip(state))
    assert _observe(resumed) == _observe(original)
    for value in values[split:]:
        original.step(value)
        resumed.step(value)
        assert _observe(resumed) == _observe(original)


def test_scheduler_state_dict_keeps_torch_state_loadable() -> None:
    """A state saved by torch's own class (an older checkpoint) loads; the keys added since take defaults."""
    config = PlateauConfig(patience=1)
    theirs = _torch_twin(config, [1.0])
    for value in [1.0, 2.0]:
        theirs.step(value)
    ours = PlateauScheduler(_optimizer([1.0]), config)
    ours.load_state_dict(_round_trip(theirs.state_dict()))
    assert (ours.best, ours.num_bad_epochs, ours.cuts, ours.num_evaluations) == (1.0, 1, [], 0)
    ours.step(2.0)
    assert _lrs(ours) == [0.1]


def test_scheduler_resumed_with_a_changed_config_follows_the_new_policy_and_warns() -> None:
    """The checkpoint restores counters and best; patience, factor and min_lr come from the new config."""
    old = PlateauScheduler(_optimizer([1.0]), PlateauConfig(patience=5, factor=0.5, min_lr=0.5))
    for value in (1.0, 2.0, 2.0):
        old.step(value)
    assert (old.best, old.num_bad_epochs) == (1.0, 2)
    new_config = PlateauConfig(patience=2, factor=0.1, min_lr=0.0)
    resumed = PlateauScheduler(_optimizer([1.0]), new_config)
    with pytest.warns(UserWarning, match=r"factor 0.5 -> 0.1, patience 5 -> 2"):
        resumed.load_state_dict(old.state_dict())
    assert (resumed.best, resumed.num_bad_epochs, resumed.num_evaluations) == (1.0, 2, 3)
    assert (resumed.patience, resumed.factor, resumed.min_lrs, resumed.config) == (2, 0.1, [0.0], new_config)
    resumed.step(2.0)
    assert resumed.cuts[-1].num_bad == 3
    assert resumed.cuts[-1].lrs_after == (0.1,)


def test_scheduler_resumed_with_the_same_config_is_silent() -> None:
    config = PlateauConfig(patience=1, min_lr=[0.1])
    old = PlateauScheduler(_optimizer([1.0]), config)
    old.step(1.0)
    resumed = PlateauScheduler(_optimizer([1.0]), config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.load_state_dict(old.state_dict())
    assert resumed.state_dict() == old.state_dict()
