"""Noise-aware detection: dlib's slope count and smoothing, against a reference, replayed, live, resumed, explained.

The reference is an independent port of dlib's published algorithm (dlib/statistics/running_gradient.h): its
recursive least squares with a 1e6 prior, its count walking the history backwards, its upper quantile. The package
fits the same line in closed form, so a count that agrees with it on every series is dlib's count.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from helpers import ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauScheduler, compare, replay
from lightning_plateau._detectors import count_without_decrease, upper_quantile
from lightning_plateau.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`",  # the resumed Trainers need no ModelCheckpoint
)


class _RunningGradient:
    """dlib's ``running_gradient``: recursive least squares over x = 0, 1, 2, ... from the prior R = 1e6 I."""

    def __init__(self) -> None:
        self.n = 0
        self.r = [[1e6, 0.0], [0.0, 1e6]]
        self.w = [0.0, 0.0]
        self.residual = 0.0

    def add(self, y: float) -> None:
        x = (float(self.n), 1.0)
        r = self.r
        rx = [r[0][0] * x[0] + r[0][1] * x[1], r[1][0] * x[0] + r[1][1] * x[1]]
        temp = 1.0 + x[0] * rx[0] + x[1] * rx[1]
        r = [[r[i][k] - rx[i] * rx[k] / temp for k in range(2)] for i in range(2)]
        self.r = r = [[0.5 * (r[i][k] + r[k][i]) for k in range(2)] for i in range(2)]
        predicted = x[0] * self.w[0] + x[1] * self.w[1]
        rx = [r[0][0] * x[0] + r[0][1] * x[1], r[1][0] * x[0] + r[1][1] * x[1]]
        self.w = [self.w[i] + rx[i] * (y - predicted) for i in range(2)]
        predicted = x[0] * self.w[0] + x[1] * self.w[1]
        self.residual += (y - predicted) ** 2 * temp
        self.n += 1

    def probability_gradient_greater_than_zero(self) -> float:
        error = math.sqrt(self.residual / (self.n - 2) * 12.0 / (self.n**3 - self.n))
        slope = self.w[0]
        if error == 0:
            less = 0.0 if slope > 0 else 1.0 if slope < 0 else 0.5
        else:
            less = 0.5 * math.erfc(-((0 - slope) / error) / math.sqrt(2.0))
        return 1.0 - less


def _dlib_count(values: Sequence[float], confidence: float = 0.51, bound: float = math.inf) -> int:
    """dlib's ``count_steps_without_decrease`` (``..._robust`` with ``bound``), walking the values backwards."""
    line = _RunningGradient()
    count = 0
    for j, value in enumerate(reversed(values), start=1):
        if value <= bound:
            line.add(value)
        if line.n > 2 and line.probability_gradient_greater_than_zero() < confidence:
            count = j
    return count


def _dlib_robust(values: Sequence[float], confidence: float = 0.51) -> int:
    """dlib's ``count_steps_without_decrease_robust``: without the values above ``find_upper_quantile(.., 0.1)``."""
    if not values:
        return 0
    ranked = sorted(values)
    return _dlib_count(values, confidence, ranked[math.floor((len(ranked) - 1) * 0.9 + 0.5)])


def _reference_run(
    values: Sequence[float], patience: int, robust: bool = False, cooldown: int = 0, window: int = 0
) -> tuple[list[int], list[int]]:
    """The slope detector's documented rule on dlib's functions: (count after each value, evaluations that cut).

    The history holds the values since the last cut's cooldown, at most ``window`` (``patience + 1``, at least 3);
    with ``robust`` the robust count replaces the plain one once that exceeds patience; a cut empties the history.
    """
    size = window or max(patience + 1, 3)
    history: list[float] = []
    counts: list[int] = []
    cuts: list[int] = []
    cooling = 0
    for evaluation, value in enumerate(values, start=1):
        if cooling:
            cooling -= 1
            counts.append(0)
            continue
        history = [*history, value][-size:]
        count = _dlib_count(history)
        if robust and count > patience:
            count = _dlib_robust(history)
        if count > patience:
            cuts.append(evaluation)
            history, cooling, count = [], cooldown, 0
        counts.append(count)
    return counts, cuts


# A decline of 0.01 per evaluation under a repeating noise of up to 0.015: the noise is larger than the decline.
_NOISE = (0.01, -0.01, 0.015, -0.015, 0.0)
_NOISY_DECLINE = [round(1.0 - 0.01 * i + _NOISE[i % 5], 4) for i in range(40)]
_FLAT_NOISY = [1.0, 1.1, 0.95, 1.05, 1.0, 1.08, 0.97, 1.02, 0.99, 1.06, 0.96, 1.04, 1.01, 0.98, 1.03]


def _with(values: Sequence[float], index: int, change: float) -> list[float]:
    changed = list(values)
    changed[index] = round(changed[index] + change, 4)
    return changed


_SERIES = {
    "clean-decline": [1.0 - 0.01 * i for i in range(15)],
    "flat": [1.0] * 8,
    "rising": [0.5 + 0.02 * i for i in range(8)],
    "flat-noisy": _FLAT_NOISY,
    "noisy-decline": _NOISY_DECLINE,
    "spike-at-the-end": _with(_NOISY_DECLINE[:12], 11, 0.3),
    "spike-in-the-middle": _with(_NOISY_DECLINE[:12], 6, 0.3),
    "lucky-low-value": _with(_NOISY_DECLINE[:12], 3, -0.2),
    "large-offset": [1000.0 + value for value in _FLAT_NOISY],
    "two-values": [1.0, 2.0],
}


@pytest.mark.parametrize("confidence", [0.51, 0.75, 0.99])
@pytest.mark.parametrize("name", list(_SERIES))
def test_slope_count_equals_dlibs_recursive_least_squares(name: str, confidence: float) -> None:
    """The plain and the robust count of every scripted series are those of dlib's own algorithm."""
    values = _SERIES[name]
    assert count_without_decrease(values, confidence) == _dlib_count(values, confidence)
    robust = count_without_decrease(values, confidence, upper_quantile(values))
    assert robust == _dlib_robust(values, confidence)


def test_slope_count_equals_dlibs_on_seeded_random_series() -> None:
    """500 seeded series of every length up to 40, trend, noise level and spike: the counts are dlib's."""
    rng = random.Random(13)
    differ = []
    for _ in range(500):
        trend = rng.uniform(-0.05, 0.05)
        noise = rng.choice([0.001, 0.01, 0.1])
        values = [1.0 + trend * i + rng.gauss(0.0, noise) for i in range(rng.randint(1, 40))]
        if rng.random() < 0.3:
            values[rng.randrange(len(values))] += 1.0
        confidence = rng.choice([0.51, 0.6, 0.9])
        ours = (
            count_without_decrease(values, confidence),
            count_without_decrease(values, confidence, upper_quantile(values)),
        )
        if ours != (_dlib_count(values, confidence), _dlib_robust(values, confidence)):
            differ.append(values)
    assert differ == []


@pytest.mark.parametrize(
    ("values", "confidence", "expected"),
    [
        # backwards [1, 0, 2] over x = 0, 1, 2: slope 0.5, residuals 0.5, -1, 0.5 (sum of squares 1.5), standard
        # error sqrt(1.5 / 1 * 12 / 24) = 0.866: P(decrease) = Phi(0.5 / 0.866) = Phi(0.577) = 0.718
        ([2.0, 0.0, 1.0], 0.51, 0),  # 0.718 >= 0.51: a confident decrease, nothing counted
        ([2.0, 0.0, 1.0], 0.75, 3),  # 0.718 < 0.75: not confident enough, all 3 counted
        ([1.0] * 5, 0.51, 5),  # an exact flat line: P = 0.5 for every j >= 3
        ([1.0, 2.0, 3.0], 0.51, 3),  # rising: P(decrease) = 0
        ([3.0, 2.0, 1.0], 0.99, 0),  # an exact decline: P(decrease) = 1
        ([1.0, 1.0], 0.51, 0),  # no line through fewer than 3 values
        ([], 0.51, 0),
    ],
)
def test_slope_count_by_hand(values: list[float], confidence: float, expected: int) -> None:
    """Counts worked out by hand from dlib's formulas."""
    assert count_without_decrease(values, confidence) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0, 1.0, 3.0, 2.0, 4.0], 5.0),  # round(4 * 0.9) = round(3.6) = 4: the largest, nothing is left out
        ([6.0, 1.0, 5.0, 2.0, 4.0, 3.0], 6.0),  # round(4.5) = 5, halves away from 0 as in C++
        ([float(v) for v in range(7)], 5.0),  # round(5.4) = 5: from 7 values on, the largest is left out
        ([float(v) for v in range(10)], 8.0),  # round(8.1) = 8
        ([1.0, math.nan, 2.0, 3.0], 3.0),  # over the finite values
        ([math.nan], math.inf),
    ],
)
def test_upper_quantile_is_dlibs(values: list[float], expected: float) -> None:
    """dlib's find_upper_quantile(values, 0.1): the value of rank round((n - 1) * 0.9) among the finite ones."""
    assert upper_quantile(values) == expected


def _cuts(values: Sequence[float], **fields: Any) -> list[int]:
    return [cut.evaluation for cut in replay(values, PlateauConfig(**fields)).cuts]


@pytest.mark.parametrize(
    ("values", "fields", "expected_counts", "expected_cuts"),
    [
        # a clean decline never cuts: every line through the latest values slopes down for sure
        pytest.param([1.0 - 0.01 * i for i in range(30)], {}, [0] * 30, [], id="clean-decline"),
        # flat: P = 0.5 < 0.51 from 3 values on; the 5th value makes 5 > patience 4, a cut empties the history
        pytest.param([1.0] * 12, {}, [0, 0, 3, 4, 5, 0, 0, 3, 4, 5, 0, 0], [5, 10], id="flat"),
        # cooldown 2: the 2 values after a cut are not kept, so the next cut waits 2 more (torch's period, 7)
        pytest.param([1.0] * 12, {"cooldown": 2}, [0, 0, 3, 4, 5, 0, 0, 0, 0, 3, 4, 5], [5, 12], id="cooldown"),
        # flat with noise: the count over the 5 latest values climbs and falls with the noise
        pytest.param(_FLAT_NOISY, {}, [0, 0, 0, 4, 3, 5, 0, 0, 3, 4, 5, 0, 0, 0, 3], [6, 11], id="flat-noisy"),
        # one spike at the newest value tips the line over the 10 latest values: the plain count cuts at once...
        pytest.param(_with(_NOISY_DECLINE, 12, 0.3), {"patience": 9}, None, [13], id="spike"),
        # ...the robust count leaves the spike (the largest 10% of 10 values) out, and sees the decline
        pytest.param(_with(_NOISY_DECLINE, 12, 0.3), {"patience": 9, "slope_robust": True}, None, [], id="robust"),
        pytest.param(_with(_NOISY_DECLINE, 20, 0.3), {"patience": 9, "slope_robust": True}, None, [], id="robust-2"),
    ],
)
def test_slope_scripted_sequences_cut_where_dlibs_rule_says(
    values: list[float], fields: dict[str, Any], expected_counts: Optional[list[int]], expected_cuts: list[int]
) -> None:
    """Counts (the count that cut, at a cut) and cuts of scripted series: hand-checked and equal to the reference."""
    fields = {"patience": 4, **fields}
    result = replay(values, PlateauConfig(detector="slope", **fields))
    counts = [cut.num_bad for cut in result.cuts]
    rows = [row.num_bad for row in result]
    shown = list(rows)
    for cut, count in zip(result.cuts, counts, strict=True):
        shown[cut.evaluation - 1] = count
    reference_counts, reference_cuts = _reference_run(
        values, fields["patience"], fields.get("slope_robust", False), fields.get("cooldown", 0)
    )
    assert [cut.evaluation for cut in result.cuts] == reference_cuts == expected_cuts
    assert rows == reference_counts
    if expected_counts is not None:
        assert shown == expected_counts


def test_slow_decline_is_cut_by_best_but_not_by_slope() -> None:
    """A curve falling by 1e-5 per evaluation never beats its best by threshold 1e-4: torch cuts, the slope never."""
    values = [1.0 - 1e-5 * i for i in range(40)]
    assert _cuts(values, patience=4) == [6, 11, 17, 27, 37]
    assert _cuts(values, patience=4, detector="slope") == []


# A dip of 0.2 at evaluation 6 on the noisy decline: a lucky low value that the decline takes 20 evaluations to beat.
_LUCKY = _with(_NOISY_DECLINE, 5, -0.2)


@pytest.mark.parametrize(
    ("patience", "best_cuts", "slope_cuts"),
    [
        # best keeps the lucky value as its best and cuts every patience + 1 until the decline beats it; the slope
        # cuts once, when the window starting at the dip shows no decrease, and its history then restarts
        (4, [11, 16, 21], [9]),
        (9, [16], [15]),
    ],
)
def test_lucky_low_value_best_and_slope_cut_at(patience: int, best_cuts: list[int], slope_cuts: list[int]) -> None:
    """Evidence, recorded: where each detector cuts a noisy decline with one lucky low value (not a claim)."""
    assert _cuts(_LUCKY, patience=patience) == best_cuts
    assert _cuts(_LUCKY, patience=patience, detector="slope") == slope_cuts
    assert _cuts(_LUCKY, patience=patience, detector="slope", slope_robust=True) == slope_cuts
    assert _reference_run(_LUCKY, patience)[1] == slope_cuts


# Dyadic values: every average below is exact in binary floating point.
_NOISY = [1.0, 0.5, 0.875, 0.75, 0.375, 0.625, 0.5, 0.25]


@pytest.mark.parametrize(
    ("smoothing", "averages", "cuts"),
    [
        # raw, torch's rule (threshold 0 abs, patience 1): best 0.5 at 2, bad 0.875, 0.75 -> cut at 4; best 0.375
        # at 5, bad 0.625, 0.5 -> cut at 7
        (0.0, None, [4, 7]),
        # s = 0.5 s + 0.5 x: 1, 0.75, 0.8125, 0.78125 (2 bad -> cut at 4), 0.578125, 0.6015625 (bad), 0.55078125
        # (better), 0.400390625
        (0.5, [1.0, 0.75, 0.8125, 0.78125, 0.578125, 0.6015625, 0.55078125, 0.400390625], [4]),
        # s = 0.75 s + 0.25 x: 1, 0.875, 0.875 (equal: bad), then better at every value: no cut
        (
            0.75,
            [1.0, 0.875, 0.875, 0.84375, 0.7265625, 0.701171875, 0.65087890625, 0.5506591796875],
            [],
        ),
    ],
)
def test_smoothing_cut_positions_by_hand(smoothing: float, averages: Optional[list[float]], cuts: list[int]) -> None:
    """The moving average s_1 = x_1, s_t = a s_(t-1) + (1 - a) x_t is judged: hand-computed averages and cuts."""
    config = PlateauConfig(patience=1, threshold=0.0, threshold_mode="abs", smoothing=smoothing)
    result = replay(_NOISY, config)
    assert [row.value for row in result] == _NOISY  # the raw values stay the rows' values
    assert [row.smoothed for row in result] == (averages or [None] * len(_NOISY))
    assert [cut.evaluation for cut in result.cuts] == cuts
    if averages:
        assert [row.best for row in result] == [min(averages[: i + 1]) for i in range(len(averages))]
        assert all(cut.smoothed == averages[cut.evaluation - 1] for cut in result.cuts)
        assert all(cut.value == _NOISY[cut.evaluation - 1] for cut in result.cuts)


def test_smoothing_leaves_a_nan_out_of_the_average() -> None:
    """A NaN is judged as it is (bad, by default) and the average goes on from the finite values; 'skip' skips it."""
    values = [1.0, math.nan, 0.5, 0.25]
    bad = replay(values, PlateauConfig(patience=5, smoothing=0.5))
    smoothed = [row.smoothed for row in bad]
    assert smoothed[0] == 1.0
    assert smoothed[1] is not None
    assert math.isnan(smoothed[1])
    assert smoothed[2:] == [0.75, 0.5]
    assert [row.num_bad for row in bad] == [0, 1, 0, 0]
    skip = replay(values, PlateauConfig(patience=5, smoothing=0.5, on_nonfinite="skip"))
    assert [row.smoothed for row in skip] == [1.0, None, 0.75, 0.5]
    assert [row.skipped for row in skip] == [False, True, False, False]
    with pytest.raises(ValueError, match="val_loss is nan at evaluation 2"):
        replay(values, PlateauConfig(smoothing=0.5, on_nonfinite="raise"))


def test_slope_nan_values_cut_as_torch_counts_them() -> None:
    """NaN after NaN cuts every patience + 1 as torch's rule does; one NaN in a decline does not cut; skip skips."""
    nans = [1.0, 0.9, 0.8] + [math.nan] * 12
    assert _cuts(nans, patience=4, detector="slope") == _cuts(nans, patience=4) == [8, 13]
    one = list(_NOISY_DECLINE[:20])
    one[10] = math.nan
    assert _cuts(one, patience=4, detector="slope") == []
    skipped = replay(nans, PlateauConfig(patience=4, detector="slope", on_nonfinite="skip"))
    assert skipped.cuts == []
    assert skipped.skipped_evaluations == list(range(4, 16))


@pytest.mark.parametrize(
    "fields",
    [
        {"detector": "slope"},
        {"detector": "slope", "slope_robust": True},
        {"detector": "slope", "slope_window": 8, "slope_confidence": 0.7},
        {"smoothing": 0.6},
        {"smoothing": 0.6, "cooldown": 1},
    ],
)
def test_mode_max_judges_the_negated_values(fields: dict[str, Any]) -> None:
    """mode='max' on -x cuts where mode='min' cuts on x, with the same counts (threshold 0 abs: exact symmetry)."""
    values = _with(_LUCKY, 12, 0.3)
    common = {"patience": 4, "threshold": 0.0, "threshold_mode": "abs", **fields}
    low = replay(values, PlateauConfig(**common))
    high = replay([-value for value in values], PlateauConfig(mode="max", **common))
    assert low.cuts, "the series must cut, or the comparison proves nothing"
    assert [(row.cut, row.num_bad, row.cooldown) for row in high] == [
        (row.cut, row.num_bad, row.cooldown) for row in low
    ]
    assert [row.best for row in high] == [-row.best for row in low]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"smoothing": 1.0}, r"`smoothing` must be a float in \[0, 1\), got 1.0"),
        ({"smoothing": -0.1}, r"`smoothing` must be a float in \[0, 1\), got -0.1"),
        ({"smoothing": math.nan}, r"`smoothing` must be a float in \[0, 1\), got nan"),
        ({"detector": "mean"}, "`detector` can be 'best' or 'slope', got 'mean'"),
        ({"detector": "slope", "slope_window": 2, "patience": 1}, "`slope_window` must be more than patience"),
        ({"detector": "slope", "slope_window": 10}, r"more than patience \(10\).*got 10: .*never be cut"),
        ({"detector": "slope", "slope_confidence": 0.5}, r"`slope_confidence` must be a float in \(0.5, 1\)"),
        ({"detector": "slope", "slope_confidence": 1.0}, r"`slope_confidence` must be a float in \(0.5, 1\)"),
        ({"detector": "slope", "slope_robust": "yes"}, "`slope_robust` must be True or False, got 'yes'"),
        ({"slope_window": 20}, "slope_window=20: a setting of the slope detector, but detector='best'"),
        ({"slope_robust": True, "slope_confidence": 0.9}, "settings of the slope detector, but detector='best'"),
        (
            {"detector": "slope", "smoothing": 0.6},
            r"smoothing=0.6 with detector='slope': the two do not combine.*autocorrelated.*whatever patience says."
            r" Use detector='slope' with smoothing=0 .*, or smoothing with detector='best'",
        ),
    ],
)
def test_detection_settings_are_refused_out_of_range_or_unused(fields: dict[str, Any], match: str) -> None:
    """A bad value names itself and what is allowed; a slope setting with detector='best' is refused, not ignored."""
    with pytest.raises(ValueError, match=match):
        PlateauConfig(**fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"patience": 10}, 11), ({"patience": 0}, 3), ({"patience": 1}, 3), ({"patience": 2, "slope_window": 30}, 30)],
)
def test_slope_window_default_is_patience_plus_one(fields: dict[str, Any], expected: int) -> None:
    """0 keeps patience + 1 values (at least 3); the history never holds more than the window."""
    config = PlateauConfig(detector="slope", **fields)
    assert config.effective_slope_window == expected
    scheduler = PlateauScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.1), config)
    for value in [1.0 - 0.01 * i for i in range(50)]:
        scheduler.step(value)
    assert len(scheduler.state_dict()["detector_state"]["history"]) == expected


def _scheduler(config: PlateauConfig) -> PlateauScheduler:
    return PlateauScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.1), config)


@pytest.mark.parametrize(
    "config",
    [
        PlateauConfig(patience=3, detector="slope", slope_robust=True, cooldown=1),
        PlateauConfig(patience=1, smoothing=0.5, cooldown=1),
    ],
    ids=["slope", "smoothing"],
)
def test_state_dict_resumes_the_slope_history_and_the_average_exactly(config: PlateauConfig) -> None:
    """Stepped to the middle, saved, loaded into a new scheduler and stepped on: every row equals the run's."""
    values = _FLAT_NOISY * 2
    full = _scheduler(config)
    rows = []
    for value in values:
        full.step(value)
        rows.append(full.snapshot())
    for middle in range(1, len(values)):
        first = _scheduler(config)
        for value in values[:middle]:
            first.step(value)
        # through a file, as a checkpoint holds it: plain data that torch loads with weights_only=True
        state = _saved(first.state_dict())
        resumed = _scheduler(config)
        resumed.optimizer.load_state_dict(first.optimizer.state_dict())  # the LR is the optimizer's state
        resumed.load_state_dict(state)
        for index, value in enumerate(values[middle:], start=middle):
            resumed.step(value)
            assert resumed.snapshot() == rows[index], f"row {index + 1} after a resume at {middle}"
    assert full.cuts


def _saved(state: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_old_checkpoint_and_other_detector_load_without_history() -> None:
    """A state without detector keys (an older version) loads; a saved history of another detector is not taken."""
    old = _scheduler(PlateauConfig(patience=3))
    old.step(1.0)
    state = old.state_dict()
    for key in ("detector", "detector_state", "smoothing", "smoothing_state", "slope_window"):
        state.pop(key)
    smoothed = _scheduler(PlateauConfig(patience=3, smoothing=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an older version's state is torch's rule unsmoothed: nothing to warn about
        smoothed.load_state_dict(state)
    assert smoothed.num_evaluations == 1
    assert smoothed._smoothing is not None
    assert smoothed._smoothing.average is None  # the average starts at the next value
    # judged by torch's rule, the only one then: resumed with the slope, the count is not taken as the slope's
    slope = _scheduler(PlateauConfig(patience=3, detector="slope"))
    with pytest.warns(UserWarning, match=r"detector 'best' \(the only one of the version that wrote it\) -> 'slope'"):
        slope.load_state_dict(state)
    assert slope._detector.state_dict() == {"history": []}
    assert slope.num_evaluations == 1


class _EpochScripted(ScriptedPlateauModel):
    """The metric of epoch ``e`` is ``values[e]``: the same after a resume, with no position to keep."""

    def _next_value(self) -> float:
        return self.values[min(self.current_epoch, len(self.values) - 1)]


def _fit(
    root: Path, values: Sequence[float], config: PlateauConfig, ckpt_path: Optional[Path] = None, **options: Any
) -> Any:
    model = _EpochScripted(values, plateau=config)
    fit = trainer(root, **{"max_epochs": len(values), **options})
    fit.fit(model, ckpt_path=ckpt_path)
    return fit


_LIVE_CONFIGS = {
    "slope": PlateauConfig(patience=4, detector="slope"),
    "slope-robust-cooldown": PlateauConfig(patience=4, detector="slope", slope_robust=True, cooldown=1),
    "smoothing": PlateauConfig(patience=1, smoothing=0.5, threshold=0.0, threshold_mode="abs"),
    "slope-max": PlateauConfig(monitor="val_acc", mode="max", patience=3, detector="slope"),
    "smoothing-max": PlateauConfig(
        monitor="val_acc", mode="max", patience=1, smoothing=0.5, threshold=0.0, threshold_mode="abs"
    ),
}


@pytest.mark.parametrize("name", list(_LIVE_CONFIGS))
def test_live_run_equals_replay(tmp_path: Path, name: str) -> None:
    """A fit's history (counts, averages, LRs) and cuts equal the replay of its values, reasons included."""
    config = _LIVE_CONFIGS[name]
    values = list(_NOISY) * 2 if config.smoothing else list(_FLAT_NOISY)
    if config.mode == "max":
        values = [2.0 - value for value in values]
    fit = trainer(tmp_path, max_epochs=len(values))
    model = ScriptedPlateauModel(values, plateau=config, monitor=config.monitor)
    fit.fit(model)
    callback = plateau_of(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    assert scheduler.cuts, "the script must cut, or the comparison proves nothing"
    # The values the fit judged (Lightning logs floats as float32), replayed.
    judged = [row.value for row in callback.history]
    result = replay(judged, config, lr=0.1, epochs=list(range(len(values))))
    live = [
        (row.value, row.smoothed, row.best, row.num_bad, row.cooldown, row.lrs, row.cut) for row in callback.history
    ]
    assert live == [(row.value, row.smoothed, row.best, row.num_bad, row.cooldown, row.lrs, row.cut) for row in result]
    assert [cut.as_dict() | {"global_step": None} for cut in scheduler.cuts] == [
        cut.as_dict() | {"global_step": None} for cut in result.cuts
    ]


def test_live_traces_log_the_raw_and_the_smoothed_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """plateau/value is the raw value, plateau/smoothed the average judged; the messages name the average."""
    config = _LIVE_CONFIGS["smoothing"]
    logger = CSVLogger(tmp_path, name="run")
    fit = trainer(tmp_path, max_epochs=len(_NOISY), logger=logger)
    with caplog.at_level("INFO"):
        fit.fit(ScriptedPlateauModel(_NOISY, plateau=config))
    lines = Path(logger.log_dir, "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    traced = [row for row in rows if row.get("plateau/value")]
    assert [float(row["plateau/value"]) for row in traced] == _NOISY
    assert [float(row["plateau/smoothed"]) for row in traced] == [row.smoothed for row in replay(_NOISY, config)]
    assert "eval 4: val_loss (moving average 0.5) has not improved on 0.7500 (epoch 1) for 2 evaluations" in caplog.text
    assert "best val_loss (moving average 0.5) 0.4004 at epoch 7" in caplog.text  # the end-of-fit summary


@pytest.mark.parametrize(
    ("config", "values"),
    [
        (PlateauConfig(patience=3, detector="slope", slope_robust=True, cooldown=1), _FLAT_NOISY),
        (PlateauConfig(patience=1, smoothing=0.3, cooldown=1), _NOISY),
    ],
    ids=["slope-robust-cooldown", "smoothing-cooldown"],
)
def test_resume_from_every_checkpoint_equals_the_uninterrupted_run(
    tmp_path: Path, config: PlateauConfig, values: list[float]
) -> None:
    """Slope (robust, cooldown) or smoothing: a resume from the checkpoint of any epoch ends as one run."""
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{epoch}", save_top_k=-1, save_on_train_epoch_end=False)
    full = _fit(tmp_path / "full", values, config, callbacks=[checkpoint], enable_checkpointing=True)
    expected = plateau_of(full)
    assert expected.scheduler is not None
    assert len(expected.scheduler.cuts) >= 2
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"), key=lambda file: int(file.stem.split("=")[1]))
    assert len(files) == len(values)
    for file in files[:-1]:
        saved = torch.load(file, weights_only=True)
        assert "detector_state" in saved["lr_schedulers"][0]
        resumed = plateau_of(_fit(tmp_path / file.stem, values, config, ckpt_path=file))
        assert resumed.history == expected.history, f"history differs after resuming from {file.name}"
        assert resumed.scheduler is not None
        assert resumed.scheduler.cuts == expected.scheduler.cuts
        for key in ("detector_state", "smoothing_state"):
            assert resumed.scheduler.state_dict()[key] == expected.scheduler.state_dict()[key]


def test_slope_with_warmup_judges_after_the_warmup_only(tmp_path: Path) -> None:
    """Evaluations of a warmup stay out of the slope's history: the live run equals the replay with its steps."""
    config = PlateauConfig(patience=2, detector="slope", warmup_steps=8)
    values = [5.0, 4.0] + [1.0] * 8
    fit = _fit(tmp_path, values, config)
    history = plateau_of(fit).history
    assert [row.warmup for row in history][:3] == [True, False, False]
    result = replay(values, config, lr=0.1, global_steps=[row.global_step for row in history])
    assert [(row.num_bad, row.cut, row.lrs) for row in history] == [(row.num_bad, row.cut, row.lrs) for row in result]
    # steps 4 and 8 are in the warmup (4 steps an epoch); 1.0 from evaluation 3: flat, 3 values -> cut at 5
    assert [row.evaluation for row in history if row.cut] == [5, 8]


def test_slope_with_windows_judges_the_window_means(tmp_path: Path) -> None:
    """Per-step values judged in windows: the slope counts the window means, live as in the replay."""
    from test_windows import _fit as fit_windows

    values = [4.0, 2.0, 3.0, 3.0, 2.0, 2.0, 3.0, 1.0] * 3
    config = PlateauConfig(monitor="train_loss", window_steps=2, patience=2, detector="slope")
    model, fit = fit_windows(tmp_path, values, config, batches=4, max_epochs=6)
    history = plateau_of(fit).history
    assert [row.value for row in history] == [3.0, 3.0, 2.0, 2.0] * 3
    steps, logged = zip(*model.logged, strict=True)
    result = replay(logged, config, lr=0.1, global_steps=steps)
    assert [(row.window, row.num_bad, row.cut) for row in history] == [(r.window, r.num_bad, r.cut) for r in result]
    assert any(row.cut for row in history)


@pytest.mark.parametrize(
    "config",
    [
        PlateauConfig(patience=3, detector="slope", slope_robust=True, cooldown=1),
        PlateauConfig(patience=1, smoothing=0.3, cooldown=1),
    ],
    ids=["slope", "smoothing"],
)
def test_explain_each_detector_equals_the_live_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: PlateauConfig
) -> None:
    """explain on the run's checkpoint replays its stored policy: every row equals the live history."""
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "last", save_top_k=1, save_on_train_epoch_end=False)
    fit = _fit(tmp_path / "run", _FLAT_NOISY, config, callbacks=[checkpoint], enable_checkpointing=True)
    history = plateau_of(fit).history
    assert any(row.cut for row in history), "the run must cut, or the comparison proves nothing"
    assert main(["explain", str(tmp_path / "ckpt" / "last.ckpt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["config"]["detector"], report["config"]["smoothing"]) == (config.detector, config.smoothing)
    rows = report["evaluations"]
    assert [(r["value"], r["smoothed"], r["best"], r["num_bad"], r["cooldown"], r["cut"]) for r in rows] == [
        (row.value, row.smoothed, row.best, row.num_bad, row.cooldown, row.cut) for row in history
    ]
    if config.detector == "best":
        return
    # the same history under torch's rule, given on the command line: the run's slope settings are left out
    assert main(["explain", str(tmp_path / "ckpt" / "last.ckpt"), "--json", "--detector", "best"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert (best["config"]["detector"], best["config"]["slope_robust"]) == ("best", False)
    expected = replay([row.value for row in history], dataclasses.replace(config, detector="best", slope_robust=False))
    assert [cut["evaluation"] for cut in best["cuts"]] == [cut.evaluation for cut in expected.cuts]


def test_explain_compares_detectors_as_compare_does(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`--detector best slope --patience 4 9 --slope-robust`: one row per policy, each the replay's cuts."""
    source = tmp_path / "values.json"
    source.write_text(json.dumps(_LUCKY))
    args = ["explain", str(source), "--patience", "4", "9", "--detector", "best", "slope"]
    assert main([*args, "--slope-robust", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["varied"]) == ["detector", "patience"]
    grid = {key: {"patience": [4, 9], "detector": ["best", "slope"]}[key] for key in report["varied"]}
    outcomes = compare(_LUCKY, PlateauConfig(detector="slope", slope_robust=True), **grid)
    assert [policy["varied"] for policy in report["policies"]] == [outcome.varied for outcome in outcomes]
    assert [[cut["evaluation"] for cut in policy["cuts"]] for policy in report["policies"]] == [
        [cut.evaluation for cut in outcome.cuts] for outcome in outcomes
    ]
    cuts = {
        (o.config.detector, o.config.patience, o.config.slope_robust): [c.evaluation for c in o.cuts] for o in outcomes
    }
    assert cuts == {
        ("best", 4, False): [11, 16, 21],
        ("slope", 4, True): [9],
        ("best", 9, False): [16],
        ("slope", 9, True): [15],
    }
    assert main([*args]) == 0
    table = capsys.readouterr().out
    assert "detector best" in table
    assert "detector slope" in table


def test_explain_table_shows_the_smoothed_column_and_the_slope_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The table has the raw value and the average side by side; a slope cut gives the count and the confidence."""
    source = tmp_path / "values.json"
    source.write_text(json.dumps([1.0] * 6))
    assert main(["explain", str(source), "--patience", "2", "--smoothing", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "val_loss    smoothed        best   bad" in out
    assert (
        "eval 4: val_loss (moving average 0.5) has not improved on 1.0000 (eval 1) for 3 evaluations (> patience 2):"
        " lr 1e-3 -> 1e-4"
    ) in out
    assert main(["explain", str(source), "--patience", "2", "--detector", "slope"]) == 0
    out = capsys.readouterr().out
    assert (
        "eval 3: val_loss has not decreased over its last 3 evaluations (least-squares slope:"
        " P(decrease) < 0.51; 3 > patience 2): lr 1e-3 -> 1e-4"
    ) in out
    assert "slope_window 0 (patience + 1: 3)" in out
    assert "It ends with 0 evaluations without decrease" not in out  # ends on a cut
    assert main(["explain", str(source), "--patience", "2", "--slope-window", "5"]) == 2
    assert "a setting of the slope detector, but detector='best'" in capsys.readouterr().err


def test_callback_keywords_reach_the_config() -> None:
    """PlateauCallback and PlateauScheduler take each detection field as a keyword, like the other fields."""
    fields = {"patience": 3, "detector": "slope", "slope_window": 7, "slope_confidence": 0.6, "slope_robust": True}
    assert PlateauCallback(**fields).config == PlateauConfig(**fields)  # type: ignore[arg-type]
    scheduler = PlateauScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.1), **fields)
    assert scheduler.config == PlateauConfig(**fields)
    assert "slope detector over 7 evaluations (confidence 0.6), robust" in scheduler.config.describe()
    assert PlateauCallback(patience=3, smoothing=0.2).config == PlateauConfig(patience=3, smoothing=0.2)
    assert "smoothing 0.2" in PlateauConfig(smoothing=0.2).describe()


class _Weights(Callback):
    """The weights each evaluation judged (at validation start) and each epoch trained from (at its start)."""

    def __init__(self) -> None:
        self.evaluated: list[list[float]] = []
        self.epoch_start: list[list[float]] = []

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.evaluated.append(torch.cat([p.detach().flatten() for p in pl_module.parameters()]).tolist())

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.epoch_start.append(torch.cat([p.detach().flatten() for p in pl_module.parameters()]).tolist())


def test_slope_cut_at_a_new_best_restores_that_evaluation(tmp_path: Path) -> None:
    """A slope cut can come at an evaluation that improves the best: restore_best_on_cut keeps its own weights."""
    # 1.0, 0.9 (best), 1.3, 1.3, 0.89: the newest value is a new best, yet the line through the 5 does not fall
    values = [1.0, 0.9, 1.3, 1.3, 0.89, 0.89]
    config = PlateauConfig(patience=4, detector="slope", restore_best_on_cut=True)
    weights = _Weights()
    fit = _fit(tmp_path, values, config, callbacks=[weights])
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert [(cut.evaluation, cut.best_evaluation, cut.restored_from) for cut in scheduler.cuts] == [(5, 5, 5)]
    assert weights.evaluated[4] != weights.evaluated[1], "the weights moved since evaluation 2, or this proves nothing"
    assert weights.epoch_start[5] == weights.evaluated[4]  # not evaluation 2's, the best before this one


def test_slope_cut_withheld_by_max_reductions_keeps_the_count(tmp_path: Path) -> None:
    """PlateauEarlyStopping(max_reductions=1): the slope's second cut is withheld, its count and history kept."""
    from lightning_plateau import PlateauEarlyStopping

    config = PlateauConfig(patience=4, detector="slope")
    fit = _fit(tmp_path, [1.0] * 12, config, callbacks=[PlateauEarlyStopping(max_reductions=1)])
    callback = plateau_of(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    assert [cut.evaluation for cut in scheduler.cuts] == [5]
    assert scheduler.withheld is not None
    assert (scheduler.withheld.evaluation, scheduler.withheld.num_bad) == (10, 5)
    assert [(row.num_bad, row.cut, row.withheld) for row in callback.history[-2:]] == [
        (4, False, False),
        (5, False, True),
    ]
    assert scheduler.state_dict()["detector_state"] == {"history": [1.0] * 5}
    assert fit.early_stopping_callback is not None
    assert fit.early_stopping_callback.stop_rule == "max_reductions"


def test_smoothing_with_the_slope_is_refused_wherever_a_policy_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keywords of the scheduler and the callback, compare's grid and explain's options all refuse the pair."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.1)
    with pytest.raises(ValueError, match=r"smoothing=0\.5 with detector='slope'"):
        PlateauScheduler(optimizer, detector="slope", smoothing=0.5)
    with pytest.raises(ValueError, match=r"smoothing=0\.5 with detector='slope'"):
        PlateauCallback(detector="slope", smoothing=0.5)
    with pytest.raises(ValueError, match=r"smoothing=0\.6 with detector='slope'"):
        compare(_LUCKY, PlateauConfig(patience=4), detector=["best", "slope"], smoothing=[0.6])
    source = tmp_path / "values.json"
    source.write_text(json.dumps(_LUCKY))
    assert main(["explain", str(source), "--detector", "slope", "--smoothing", "0.6"]) == 2
    assert "smoothing=0.6 with detector='slope'" in capsys.readouterr().err


# val_acc rises, then stays exactly at 0.92 from evaluation 5 on; val_loss drops to 0.5 at evaluation 4 and stays.
_GONE_FLAT = {
    "val_acc": ([0.80, 0.85, 0.88, 0.90] + [0.92] * 100, 5, "max"),
    "val_loss": ([1.0] * 3 + [0.5] * 100, 4, "min"),
}


@pytest.mark.parametrize(
    ("metric", "smoothing", "into_the_flat"),
    [
        ("val_acc", 0.0, 6),
        ("val_acc", 0.3, 10),
        ("val_acc", 0.6, 18),
        ("val_acc", 0.9, 69),
        ("val_loss", 0.0, 6),
        ("val_loss", 0.6, 24),
        ("val_loss", 0.9, 88),
    ],
)
def test_smoothing_delays_the_first_cut_on_a_metric_gone_flat(
    metric: str, smoothing: float, into_the_flat: int
) -> None:
    """The README's numbers: the average keeps beating its best by threshold long after the metric stops moving."""
    values, flat_from, mode = _GONE_FLAT[metric]
    config = PlateauConfig(monitor=metric, mode=mode, patience=5, smoothing=smoothing)  # type: ignore[arg-type]
    first = replay(values, config).cuts[0].evaluation
    assert first - flat_from == into_the_flat


def test_smoothing_keeps_a_constant_exact() -> None:
    """The average of a constant is that constant to the last bit: the cuts of a flat metric are the raw ones."""
    flat = [0.1] * 12
    raw = PlateauConfig(patience=3, threshold=0.0, threshold_mode="abs")
    smoothed = replay(flat, dataclasses.replace(raw, smoothing=0.3))
    assert [row.smoothed for row in smoothed] == flat
    assert [cut.evaluation for cut in smoothed.cuts] == _cuts(flat, patience=3, threshold=0.0) == [5, 9]
    rng = random.Random(8)
    for _ in range(300):
        value = rng.choice([rng.uniform(0.0, 3.0), round(rng.uniform(0.0, 3.0), 2), rng.uniform(1e-3, 1e3)])
        weight = rng.choice([0.1, 0.3, 0.6, 0.7, 0.9, 0.99, round(rng.uniform(0.01, 0.99), 2)])
        values = [value] * 30
        result = replay(values, dataclasses.replace(raw, smoothing=weight))
        assert [row.smoothed for row in result] == values, (value, weight)
        assert [cut.evaluation for cut in result.cuts] == [cut.evaluation for cut in replay(values, raw).cuts]


# Noise around a flat level: the slope cuts it at 4 and 9 with patience 3.
_FLAT_BASE = [1.0, 1.2, 0.9, 1.1, 1.0, 1.05, 0.95, 1.0, 1.1, 0.9, 1.0, 1.05]


def test_slope_count_does_not_depend_on_the_scale() -> None:
    """Values times c, for finite c from 1e-300 to 1e300: the same counts, and the same cuts."""
    config = PlateauConfig(patience=3, detector="slope")
    expected_cuts = [cut.evaluation for cut in replay(_FLAT_BASE, config).cuts]
    assert expected_cuts == [4, 9]
    rng = random.Random(5)
    series = [_FLAT_BASE] + [[1.0 + rng.gauss(0.0, 0.1) for _ in range(rng.randint(3, 15))] for _ in range(100)]
    counts = [[count_without_decrease(values[:end], 0.51) for end in range(len(values) + 1)] for values in series]
    # powers of 2 scale exactly: the counts are equal bit for bit; powers of 10 round each value once
    for scale in [2.0**k for k in (-1000, -600, -520, -100, 100, 520, 600, 1000)] + [
        10.0**k for k in range(-300, 301, 50)
    ]:
        for values, expected in zip(series, counts, strict=True):
            scaled = [scale * value for value in values]
            assert [count_without_decrease(scaled[:end], 0.51) for end in range(len(scaled) + 1)] == expected, scale
            robust = count_without_decrease(scaled, 0.51, upper_quantile(scaled))
            assert robust == count_without_decrease(values, 0.51, upper_quantile(values)), scale
        assert [cut.evaluation for cut in replay([scale * value for value in _FLAT_BASE], config).cuts] == expected_cuts


@pytest.mark.parametrize(
    ("detector", "patience", "cooldown", "period"),
    [
        ("best", 0, 0, 1),
        ("best", 1, 2, 4),
        ("best", 4, 0, 5),
        ("slope", 0, 0, 3),
        ("slope", 1, 0, 3),
        ("slope", 1, 2, 5),
        ("slope", 2, 0, 3),
        ("slope", 4, 1, 6),
    ],
)
def test_cut_period_is_the_spacing_of_cuts_on_a_flat_metric(
    detector: str, patience: int, cooldown: int, period: int
) -> None:
    """patience + 1 + cooldown for best; max(patience + 1, 3) + cooldown for the slope, whose line needs 3 values."""
    config = PlateauConfig(patience=patience, cooldown=cooldown, detector=detector)  # type: ignore[arg-type]
    assert config.cut_period == period
    cuts = [cut.evaluation for cut in replay([1.0] * 60, config, lr=1.0).cuts]
    assert len(cuts) >= 3
    assert {later - earlier for earlier, later in itertools.pairwise(cuts)} == {period}


def test_resume_under_another_detector_counts_afresh_from_the_checkpoints_best(tmp_path: Path) -> None:
    """slope -> best: the slope's count is not carried over as "without improvement"; the warning says what happens."""
    # evaluation 5 sets the best 0.44, where the slope's count is 4: a best-rule count would be 0
    values = [1.0, 0.45, 0.9, 0.9, 0.44] + [0.5] * 10
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{epoch}", save_top_k=-1, save_on_train_epoch_end=False)
    slope = PlateauConfig(patience=5, factor=0.5, detector="slope")
    saved = plateau_of(_fit(tmp_path / "slope", values[:5], slope, callbacks=[checkpoint], enable_checkpointing=True))
    assert saved.scheduler is not None
    assert (saved.scheduler.num_bad_epochs, saved.scheduler.best_evaluation) == (4, 5)
    assert saved.scheduler.best == pytest.approx(0.44)  # logged as float32
    best = PlateauConfig(patience=5, factor=0.5)
    with pytest.warns(UserWarning, match="detector 'slope' -> 'best'") as record:
        resumed = plateau_of(_fit(tmp_path / "best", values, best, ckpt_path=tmp_path / "ckpt" / "epoch=4.ckpt"))
    (message,) = [str(w.message) for w in record if "detector" in str(w.message)]
    assert "(detector 'slope' -> 'best'): its best value, cooldown and cuts are restored" in message
    assert (
        "The checkpoint's count (4 evaluations without decrease, by detector 'slope') means something else to"
        " detector 'best' and cannot be rebuilt from the checkpoint, so it is not carried over: the count starts"
        " from 0 at this resume, as after a cut, and the next cut needs at least 6 evaluations without improvement"
        " from here (patience 5)."
    ) in message
    # a best-rule count started afresh from the checkpoint's best: 0.44 judged first, then the values after it
    fresh = replay([saved.scheduler.best, *values[5:]], best, lr=0.1)
    assert [cut.evaluation + 4 for cut in fresh.cuts] == [11]
    assert resumed.scheduler is not None
    assert [cut.evaluation for cut in resumed.scheduler.cuts] == [11]
    assert [row.num_bad for row in resumed.history[5:]] == [row.num_bad for row in fresh][1:]


def test_resume_from_best_under_the_slope_starts_an_empty_history() -> None:
    """best -> slope: the count of evaluations without improvement does not become the slope's; its line restarts."""
    saved = _scheduler(PlateauConfig(patience=1))
    for value in (1.0, 0.5, 0.6, 0.7, 0.7):  # 0.5 is the best; 0.6 and 0.7 bad, cut; 0.7 bad: count 1
        saved.step(value)
    assert saved.num_bad_epochs == 1
    slope = _scheduler(PlateauConfig(patience=1, detector="slope"))
    with pytest.warns(UserWarning, match=r"count \(1 evaluations without improvement, by detector 'best'\)"):
        slope.load_state_dict(saved.state_dict())
    assert (slope.num_bad_epochs, slope.best, slope.best_evaluation, len(slope.cuts)) == (0, 0.5, 2, 1)
    rows = []
    for value in (0.7, 0.7, 0.7):
        slope.step(value)
        rows.append((slope.num_bad_epochs, slope.last_cut is not None and slope.last_cut.evaluation == 8))
    # a line needs 3 values judged since the resume: the cut comes at the third, as max(patience + 1, 3) says
    assert rows == [(0, False), (0, False), (0, True)]


def test_restore_with_smoothing_goes_back_to_the_best_average(tmp_path: Path) -> None:
    """With smoothing the best is the best moving average: its evaluation's weights are restored, not the raw best's."""
    # averages (a = 0.5): 1, 0.625, 0.5625, 0.53125 (each better than the best by more than 0.025), 0.515625,
    # 0.5078125 (not): 2 evaluations without improvement > patience 1, a cut at 6. The raw best is evaluation 2.
    values = [1.0, 0.25] + [0.5] * 6
    config = PlateauConfig(patience=1, smoothing=0.5, threshold=0.025, threshold_mode="abs", restore_best_on_cut=True)
    weights = _Weights()
    fit = _fit(tmp_path, values, config, callbacks=[weights])
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert [(cut.evaluation, cut.best_evaluation, cut.restored_from) for cut in scheduler.cuts] == [(6, 4, 4)]
    assert scheduler.cuts[0].best == 0.53125
    assert weights.evaluated[3] != weights.evaluated[1], "the weights moved since evaluation 2, or this proves nothing"
    assert weights.epoch_start[6] == weights.evaluated[3]  # evaluation 4's weights, not evaluation 2's
    assert [cut.restored_from for cut in replay(values, config).cuts] == [4]


class _BarStates(Callback):
    """The plateau's state in the progress bar after each epoch's evaluation."""

    def __init__(self) -> None:
        self.states: list[Any] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.states.append(trainer.progress_bar_metrics.get("plateau"))


@pytest.mark.parametrize("max_reductions", [None, 0])
def test_progress_bar_never_shows_a_count_above_its_whole(tmp_path: Path, max_reductions: Optional[int]) -> None:
    """A slope count past patience + 1 reads "bad 6 > patience 3", and a cut withheld by max_reductions says so."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from lightning_plateau import PlateauEarlyStopping

    values = [0.73, 0.59, 0.59, 0.51, 0.45, 0.49, 0.81, 1.0, 0.5, 0.43]
    config = PlateauConfig(patience=3, detector="slope", slope_window=8)
    bar = _BarStates()
    callbacks: list[Any] = [TQDMProgressBar(), bar]
    if max_reductions is not None:
        callbacks.append(PlateauEarlyStopping(max_reductions=max_reductions))
    fit = _fit(tmp_path, values, config, callbacks=callbacks, enable_progress_bar=True)
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    if max_reductions is None:
        assert [(cut.evaluation, cut.num_bad) for cut in scheduler.cuts] == [(7, 6)]
        assert bar.states[6] == "lr 0.01 · bad 6 > patience 3"
    else:
        assert bar.states[-1] == "lr 0.1 · bad 6 > patience 3 · cut withheld"
    assert bar.states[:6] == ["lr 0.1 · bad 0/4"] * 6
    # torch's rule at a cut: the count that cut, which is patience + 1
    bar = _BarStates()
    _fit(
        tmp_path / "best",
        [1.0] * 4,
        PlateauConfig(patience=1),
        callbacks=[TQDMProgressBar(), bar],
        enable_progress_bar=True,
    )
    assert bar.states == ["lr 0.1 · bad 0/2", "lr 0.1 · bad 1/2", "lr 0.01 · bad 2/2", "lr 0.01 · bad 1/2"]
