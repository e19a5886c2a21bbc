"""What decides that the monitored value has stopped improving: one small object per rule, chosen by the config.

- ``best`` (:class:`_BestDetector`, the default): torch's ``ReduceLROnPlateau`` comparison with the best value so
  far, run by torch's own ``step``, so the default stays torch's rule exactly.
- ``slope`` (:class:`_SlopeDetector`): dlib's ``count_steps_without_decrease``, as dlib's DNN trainer uses it to
  lower its learning rate: a least-squares line through the latest values instead of a comparison with one best.
- :class:`_Smoothing`: an exponential moving average of the values, in front of either.

Each keeps its own state for the checkpoint (``state_dict``/``load_state_dict``: plain data). The plateau rule
(:class:`~lightning_plateau._rule._PlateauRule`) steps them, for the live callback, ``replay`` and ``compare`` alike.
Torch-only, like the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_plateau._format import format_steps, format_value
from lightning_plateau.config import PlateauConfig

if TYPE_CHECKING:
    from lightning_plateau._rule import PlateauCut, _PlateauRule

# dlib's count_steps_without_decrease_robust leaves out the values above this upper quantile of the history.
ROBUST_DISCARD = 0.10


def count_without_decrease(values: Sequence[float], confidence: float, upper_bound: float = math.inf) -> int:
    """Over how many of the latest values no decrease is confident: dlib's ``count_steps_without_decrease``.

    Walking back from the newest value, each value is added to a least-squares line over ``x = 0, 1, 2, ...`` (so
    the line runs backwards in time). Once the line holds more than 2 values, the probability that the values
    decrease over the ``j`` latest is ``P(backward slope > 0)``, the normal CDF of ``slope / standard_error`` with
    the standard error ``sqrt(residual_sum / (n - 2) / sum((x - mean_x)^2))`` (``12 / (n^3 - n)`` for the sum, as
    dlib writes it); where it is below ``confidence``, the count becomes ``j``. The count is thus the largest ``j``
    whose latest ``j`` values show no confident decrease (0 if there is none, else at least 3).

    A value above ``upper_bound`` (the robust variant's quantile), or one that is not finite, adds no point to the
    line but still counts in ``j``, as dlib's robust variant does with the values it leaves out.

    The line is fitted with running means and co-moments (Welford's updates) rather than dlib's recursive least
    squares with a 1e6 prior: the same fit, without the prior's slight pull towards 0 and without the loss of
    precision that raw sums of squares suffer on values far from 0. The values on the line are first centered on
    the newest of them and scaled by powers of 2 (exact) to at most 1 in size: the count depends only on
    ``slope / standard_error``, which neither changes, and the squares then neither overflow (values from about
    1e154 on) nor underflow to 0 (below about 1e-154), so the count of ``c * values`` is that of ``values`` for
    every finite scale ``c > 0`` (exactly for powers of 2, up to the rounding of ``c * value`` otherwise).

    Args:
        values: the history, oldest first; lower is better (negate the values of a metric to maximize).
        confidence: dlib's ``probability_of_decrease``, in (0.5, 1).
        upper_bound: values above it are left out of the line.

    Returns:
        The count, between 0 and ``len(values)``.
    """
    count = 0
    points = 0
    mean_x = mean_y = co_xx = co_xy = co_yy = 0.0
    normalize = _normalization([y for y in values if y <= upper_bound and math.isfinite(y)])
    for j, y in enumerate(reversed(values), start=1):
        if y <= upper_bound and math.isfinite(y):
            y = normalize(y)
            x = float(points)
            points += 1
            dx = x - mean_x
            mean_x += dx / points
            dy = y - mean_y
            mean_y += dy / points
            co_xx += dx * (x - mean_x)
            co_xy += dx * (y - mean_y)
            co_yy += dy * (y - mean_y)
        if points > 2 and _probability_backward_slope_positive(points, co_xx, co_xy, co_yy) < confidence:
            count = j
    return count


def _normalization(points: Sequence[float]) -> Callable[[float], float]:
    """An affine map taking ``points`` (finite) to at most 1 in size, centered on the newest: scale-free fitting.

    ``y -> (y / 2^e1 - newest / 2^e1) / 2^e2``, with ``2^e1`` and ``2^e2`` the powers of 2 just above the largest
    size before and after centering. Dividing by a power of 2 is exact (short of the subnormal range), and a
    difference of two values within a factor 2 of each other is too, so the line through the mapped points has
    the same ``slope / standard_error`` as the line through the points, without their squares leaving the range
    of a float.
    """
    largest = max((abs(y) for y in points), default=0.0)
    if largest == 0.0:
        return lambda y: y
    first = -math.frexp(largest)[1]
    center = math.ldexp(points[-1], first)
    spread = max(abs(math.ldexp(y, first) - center) for y in points)
    second = -math.frexp(spread)[1] if spread > 0.0 else 0
    return lambda y: math.ldexp(math.ldexp(y, first) - center, second)


def _probability_backward_slope_positive(points: int, co_xx: float, co_xy: float, co_yy: float) -> float:
    """``P(slope > 0)`` of a least-squares line from its co-moments, under the slope's normal approximation."""
    slope = co_xy / co_xx
    # The residual sum of squares; rounding can take an exact fit a hair below 0.
    residual = max(co_yy - co_xy * slope, 0.0)
    error = math.sqrt(residual / (points - 2) / co_xx)
    if error == 0.0:
        # dlib's normal CDF of a point mass: certain on either side of 0, a coin toss on it.
        return 1.0 if slope > 0 else 0.0 if slope < 0 else 0.5
    return 0.5 * math.erfc(-slope / error / math.sqrt(2.0))


def upper_quantile(values: Sequence[float], discard: float = ROBUST_DISCARD) -> float:
    """The value at rank ``round((n - 1) * (1 - discard))``: dlib's ``find_upper_quantile(values, discard)``.

    Over the finite values only (``inf`` if there is none); ``round`` takes halves away from 0, as C++'s does.
    """
    finite = sorted(value for value in values if math.isfinite(value))
    if not finite:
        return math.inf
    return finite[math.floor((len(finite) - 1) * (1.0 - discard) + 0.5)]


class _BestDetector:
    """torch's rule: a value better than the best so far (by ``threshold``) resets the count, any other adds one."""

    name = "best"

    def step(self, rule: _PlateauRule, value: float, epoch: Optional[int]) -> None:
        """Judge ``value`` with torch's own ``ReduceLROnPlateau.step``: best, counters, cooldown and cut."""
        ReduceLROnPlateau.step(rule, value, epoch)

    def lacking(self, mode: str) -> str:
        """What the count counts evaluations without."""
        return "without improvement"

    def cut_phrase(self, cut: PlateauCut, config: PlateauConfig) -> str:
        """Why ``cut`` happened, as the middle of its message: ``has not improved on 0.41 (epoch 4) for 11 ...``."""
        if math.isfinite(cut.best):
            since = ""
            if cut.best_window is not None:
                since = f" ({format_steps(cut.best_window)})"
            elif cut.best_epoch is not None:
                since = f" (epoch {cut.best_epoch})"
            elif cut.best_evaluation is not None:
                since = f" (eval {cut.best_evaluation})"
            judged = f"has not improved on {format_value(cut.best)}{since}"
        else:
            judged = "has had no finite value to improve on"
        return f"{judged} for {cut.num_bad} evaluations (> patience {config.patience})"

    def stop_phrase(self, cut: PlateauCut, config: PlateauConfig) -> str:
        """Why ``cut`` was called for, in PlateauEarlyStopping's words: ``did not improve on 0.41 for 11 ...``."""
        return f"did not improve on {format_value(cut.best)} for {cut.num_bad} evaluations"

    def state_dict(self) -> dict[str, Any]:
        """Nothing: torch's counters are the rule's own attributes, in the rule's state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""


class _SlopeDetector:
    """dlib's count of evaluations without decrease, over the values judged since the last cut.

    The history holds the values judged since the last cut's cooldown ended, the latest
    ``config.effective_slope_window`` of them. At an evaluation in cooldown the value is not added and the count is
    0, as torch counts no bad evaluation then. A cut empties the history: dlib's trainer drops its oldest values
    after each shrink so that its count falls below the threshold and the next shrink waits for values at the new
    rate; emptying it makes the next cut wait for at least ``patience + 1`` values judged at the new LR, as torch's
    rule waits (and at least 3, the fewest a line's slope is judged on: ``max(patience + 1, 3)`` on a flat metric),
    and keeps the jump a cut often causes out of the next line. ``best`` is tracked as torch's rule tracks it.

    A value that is not finite (with ``on_nonfinite="bad"``) stays in the history as an evaluation without a
    point on the line, and the count is at least the number of such values in a row at the end: a run whose values
    stay NaN is cut every ``patience + 1`` evaluations, as torch's rule cuts it.
    """

    name = "slope"

    def __init__(self, config: PlateauConfig) -> None:
        self.size = config.effective_slope_window
        self.confidence = config.slope_confidence
        self.robust = config.slope_robust
        # Lower is better for the count: a metric to maximize is judged negated.
        self.sign = 1.0 if config.mode == "min" else -1.0
        #: the values judged since the last cut's cooldown, oldest first, at most ``size``
        self.history: list[float] = []

    def count(self, patience: int) -> int:
        """The count for the history now: the plain count, or with ``slope_robust`` the robust one past ``patience``.

        A cut then needs both to exceed ``patience``, as in dlib's trainer (which reports the robust count once
        the plain one reaches its threshold).
        """
        values = [self.sign * value for value in self.history]
        non_finite = 0
        for value in reversed(values):
            if math.isfinite(value):
                break
            non_finite += 1
        count = max(count_without_decrease(values, self.confidence), non_finite)
        if self.robust and count > patience:
            robust = count_without_decrease(values, self.confidence, upper_quantile(values))
            count = max(robust, non_finite)
        return count

    def step(self, rule: _PlateauRule, value: float, epoch: Optional[int]) -> None:
        """Judge ``value`` as torch's ``step`` does, with the count as the bad count; a cut empties the history."""
        rule.last_epoch = rule.last_epoch + 1 if epoch is None else epoch
        if rule._is_better(value, rule.best):
            rule.best = value
            rule._improved()  # before a cut this evaluation may call for, which restores the best state
        if rule.in_cooldown:
            rule.cooldown_counter -= 1
            rule.num_bad_epochs = 0
        else:
            self.history.append(value)
            del self.history[: -self.size]
            rule.num_bad_epochs = self.count(rule.patience)
        if rule.num_bad_epochs > rule.patience and rule._call_for_cut(epoch):
            self.history.clear()
            rule.cooldown_counter = rule.cooldown
            rule.num_bad_epochs = 0
        rule._last_lr = [float(group["lr"]) for group in rule.optimizer.param_groups]

    def lacking(self, mode: str) -> str:
        """What the count counts evaluations without."""
        return "without decrease" if mode == "min" else "without increase"

    def cut_phrase(self, cut: PlateauCut, config: PlateauConfig) -> str:
        """Why ``cut`` happened: ``has not decreased over its last 11 evaluations (least-squares slope: ...)``."""
        change, extreme = ("decrease", "largest") if config.mode == "min" else ("increase", "smallest")
        robust = f", with and without its {extreme} {ROBUST_DISCARD:.0%}" if self.robust else ""
        return (
            f"has not {change}d over its last {cut.num_bad} evaluations (least-squares slope: P({change})"
            f" < {self.confidence:g}{robust}; {cut.num_bad} > patience {config.patience})"
        )

    def stop_phrase(self, cut: PlateauCut, config: PlateauConfig) -> str:
        """Why ``cut`` was called for, in PlateauEarlyStopping's words: the slope's own, as in its cut messages."""
        return self.cut_phrase(cut, config)

    def state_dict(self) -> dict[str, Any]:
        """The history, as plain floats."""
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a saved history (its latest ``size`` values, should the window have shrunk since)."""
        history = [float(value) for value in state.get("history", [])]
        self.history = history[len(history) - self.size :] if len(history) > self.size else history


class _Smoothing:
    """The exponential moving average judged in place of the values: ``s_1 = x_1``, ``s_t = s + (1 - a) (x_t - s)``.

    ``s`` is ``s_(t-1)``: the same average as ``a s_(t-1) + (1 - a) x_t``, written so that a value equal to the
    average leaves it exactly as it is (the other form can round a constant one unit in the last place down, and
    that drop would count as an improvement). No zero start, so no bias to correct. A value that is not finite is
    judged as it is and leaves the average alone, so one NaN does not poison every later value.
    """

    def __init__(self, weight: float) -> None:
        self.weight = weight
        #: the average so far, ``None`` before the first finite value
        self.average: Optional[float] = None

    def __call__(self, value: float) -> float:
        """The value to judge for ``value``: the updated average, or ``value`` itself when it is not finite."""
        if not math.isfinite(value):
            return value
        average = self.average
        if average is None:
            self.average = value
        else:
            change = value - average
            # A change past the largest float (values of opposite signs near it) takes the form that cannot overflow.
            if math.isfinite(change):
                self.average = average + (1.0 - self.weight) * change
            else:
                self.average = self.weight * average + (1.0 - self.weight) * value
        return self.average

    def state_dict(self) -> dict[str, Any]:
        """The average so far."""
        return {"average": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a saved average."""
        average = state.get("average")
        self.average = None if average is None else float(average)


Detector = Union[_BestDetector, _SlopeDetector]
_MAKERS: dict[str, Callable[[PlateauConfig], Detector]] = {
    "best": lambda config: _BestDetector(),
    "slope": _SlopeDetector,
}


def make_detector(config: PlateauConfig) -> Detector:
    """The detector ``config.detector`` names, set up from ``config``."""
    return _MAKERS[config.detector](config)


def make_smoothing(config: PlateauConfig) -> Optional[_Smoothing]:
    """The moving average ``config.smoothing`` asks for, ``None`` without smoothing."""
    return _Smoothing(config.smoothing) if config.smoothing else None
