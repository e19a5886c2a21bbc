"""The plateau policy: what to watch and how to cut, as one validated dataclass."""

# No `from __future__ import annotations` here: LightningCLI's parser reads the ranges from the field types
# themselves (postponed annotations would reach it with the ranges stripped).
import dataclasses
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import torch

# The ranges ride on the field types where annotated_types is installed (it comes with pydantic, which LightningCLI's
# jsonargparse uses to check them): the parser itself then refuses `--model.plateau.factor 1.5` in one line that
# names the key and the range, before anything is built. The config checks the same ranges itself in any case.
try:
    from annotated_types import Ge, Gt, Le, Lt, MinLen, Predicate

    _Factor = Annotated[float, Gt(0), Lt(1)]
    _StartFactor = Annotated[float, Gt(0), Le(1)]
    _Count = Annotated[int, Ge(0)]
    _NonNegative = Annotated[float, Ge(0), Predicate(math.isfinite)]
    _Bounds = Annotated[list[_NonNegative], MinLen(1)]
    _Smoothing = Annotated[float, Ge(0), Lt(1)]
    _Confidence = Annotated[float, Gt(0.5), Lt(1)]
except ImportError:  # pragma: no cover - a plain install
    _Factor = float  # type: ignore[misc]
    _StartFactor = float  # type: ignore[misc]
    _Count = int  # type: ignore[misc]
    _NonNegative = float  # type: ignore[misc]
    _Bounds = list[float]  # type: ignore[misc]
    _Smoothing = float  # type: ignore[misc]
    _Confidence = float  # type: ignore[misc]

_MODES = ("min", "max")
_THRESHOLD_MODES = ("rel", "abs")
_NON_FINITE_POLICIES = ("bad", "skip", "raise")
_DETECTORS = ("best", "slope")
# The settings of the slope detector, with their defaults: given with detector="best", they would change nothing.
_SLOPE_DEFAULTS = {"slope_window": 0, "slope_confidence": 0.51, "slope_robust": False}
# The fewest values a least-squares line gives a standard error for: dlib's count needs more than 2.
_MIN_SLOPE_WINDOW = 3

# Numbers torch's ReduceLROnPlateau takes (it checks only `factor < 1`) that the config refuses: what torch does
# with them and why they are refused here, appended to the error so a user porting a torch config sees both.
_STRICTER_THAN_TORCH = {
    "factor": "torch's ReduceLROnPlateau accepts any factor below 1: 0 or less sets the LR straight to min_lr at the"
    " first cut, NaN never cuts; refused here because neither is a reduction by a factor, and with the default"
    " min_lr 0.0 a factor of 0 stops training at the first plateau",
    "patience": "torch's ReduceLROnPlateau accepts any number: a negative patience cuts at every evaluation,"
    " improvements included, a float is compared as is; refused here because patience counts evaluations",
    "cooldown": "torch's ReduceLROnPlateau accepts any number: a negative cooldown acts as 0, a float counts down"
    " by 1 past 0; refused here because cooldown counts evaluations",
    "threshold": "torch's ReduceLROnPlateau accepts any number: a negative threshold counts values worse than the"
    " best as improvements, inf or NaN lets no value improve, bar at most the first; refused here because either"
    " turns the rule into a cut every patience + 1 evaluations or into never cutting on a real plateau",
    "eps": "torch's ReduceLROnPlateau accepts any number: a negative eps applies cuts that change nothing and"
    " raises an LR below min_lr up to min_lr, inf or NaN never cuts; refused here because eps is the smallest"
    " change a cut must make",
    "min_lr": "torch's ReduceLROnPlateau accepts any number: a negative min_lr acts as 0, NaN as no bound, inf"
    " never cuts; refused here because a bound below 0 says what 0 says and one that is not finite disables the"
    " bound or the cuts",
}


@dataclass(frozen=True)
class PlateauConfig:
    """When and how to reduce the learning rate once a monitored value stops improving.

    The rule is torch's ``ReduceLROnPlateau``: after more than ``patience`` evaluations without
    improvement, every param group's LR is multiplied by ``factor`` (never below ``min_lr``).
    LightningCLI reads this dataclass from YAML or from ``--model.plateau.patience 3``.

    Args:
        monitor: the logged metric to watch, e.g. ``"val_loss"`` or ``"val_acc"``.
        mode: ``"min"`` when lower is better, ``"max"`` when higher is better.
        factor: multiplier applied to the LR at each cut, in (0, 1).
        patience: evaluations without improvement that are tolerated; the cut comes at the
            ``patience + 1``-th one. Counted in fresh values of ``monitor``, not in epochs.
        threshold: how much better a value must be to count as an improvement.
        threshold_mode: ``"rel"`` (better than ``best`` by ``threshold * |best|``) or ``"abs"``
            (better by ``threshold``).
        cooldown: evaluations after a cut during which bad evaluations are not counted.
        min_lr: lower bound on the LR, one float for all param groups or one per group.
        eps: a cut smaller than this is not applied.
        strict: raise when ``monitor`` is never logged (``False``: warn once and leave the LR alone).
        warmup_steps: optimizer steps (``trainer.global_step``) over which each param group's LR rises linearly
            from ``warmup_start_factor * lr`` to ``lr`` before the plateau takes over; ``0``: no warmup. The LR of
            optimizer step ``k < warmup_steps`` is ``lr * (start + (1 - start) * k / warmup_steps)``, torch's
            ``LinearLR(start_factor=start, total_iters=warmup_steps)`` stepped once per optimizer step. An
            evaluation judged at ``global_step < warmup_steps`` is recorded but not judged: it neither counts
            toward patience nor sets ``best``, so no cut can come during warmup.
        warmup_start_factor: the LR multiplier at the first optimizer step of the warmup, in (0, 1].
        on_nonfinite: what a NaN or infinite value does: ``"bad"`` counts it as an evaluation without
            improvement (torch's rule), ``"skip"`` leaves the rule untouched (recorded, warned once), ``"raise"``
            stops training with an error naming the evaluation and the value.
        window_steps: ``0`` (the default): one value per validation run, or per training epoch for a metric
            logged with ``on_epoch=True``. ``N > 0``: ``monitor`` is a training metric logged per step
            (``self.log(..., on_step=True)`` in ``training_step``), judged every ``N`` optimizer steps on the mean
            of every value logged in those steps (every micro-batch under gradient accumulation, every rank), for
            a long epoch with rare or no validation. Windows count optimizer steps across epochs; a window the
            fit ends inside is not judged. ``patience`` and ``cooldown`` then count windows.
        restore_best_on_cut: at each cut, load the module's weights (buffers included: BatchNorm's running
            statistics) and every optimizer's per-parameter state (momentum, Adam's moments and step) from the
            evaluation that set the best value so far, then go on at the cut LR. The param groups' settings, the
            LRs included, are not rewound: the LR is the one the cut set. Costs one copy of that state in CPU
            memory, taken at each new best (a device-to-host copy per improving evaluation, nothing per step):
            the weights plus the optimizer state, e.g. 3x the parameters' bytes with Adam, 2x with SGD and
            momentum; a checkpoint holds the copy too, so it grows by about as much. Refused under strategies
            that shard the module (FSDP, DeepSpeed, ModelParallel). ``False`` (the default): torch's behaviour,
            training goes on from the current weights. With ``smoothing``, the best evaluation is the one whose
            moving average was best, so its weights are the ones restored, not those of the best raw value.
        smoothing: the weight ``a`` of an exponential moving average of the monitored values, in [0, 1), judged in
            their place by torch's rule (refused with ``detector="slope"``, whose line already averages the
            noise): ``s_1 = x_1``, ``s_t = s_(t-1) + (1 - a) * (x_t - s_(t-1))``, i.e.
            ``a * s_(t-1) + (1 - a) * x_t`` computed so that a constant stays exactly constant, over the values
            judged (not those of a warmup or skipped), from the first, cuts included; ``0`` (the default): no
            smoothing. A NaN or infinite value is judged as it is and left out of the average, which goes on from
            the last finite values. ``best`` is then the best average, and the evaluation it was reached at is the
            one whose weights ``restore_best_on_cut`` restores: it lags the best raw value. So does every cut:
            after the values change by ``D``, the average keeps beating its best by more than ``threshold`` for
            about ``log(threshold * |best| / ((1 - a) * D)) / log(a)`` evaluations, and only then does
            ``patience`` start counting (a metric that goes exactly flat is first cut 18 evaluations into the
            flat stretch with ``a = 0.6`` and patience 5, against 6 without smoothing; see the README).
        detector: what says the value has stopped improving. ``"best"`` (the default): torch's rule, a value
            better than the best so far by ``threshold``; ``patience`` counts the evaluations since.
            ``"slope"``: dlib's ``count_steps_without_decrease``, as its DNN trainer uses it: the count is the
            largest ``j`` such that a least-squares line through the last ``j`` values judged does not slope
            down with probability ``slope_confidence`` (the slope's normal approximation); a cut when it exceeds
            ``patience``. A line needs 3 values, so on a flat metric the cuts come every
            ``max(patience + 1, 3) + cooldown`` evaluations. The values since the last cut (and its cooldown) are
            kept, at most ``slope_window``; a cut empties them. ``mode="max"`` judges the negated values.
            ``best`` is still tracked, by ``threshold``, for the reports, ``restore_best_on_cut`` and early
            stopping.
        slope_window: with ``detector="slope"``, how many of the latest evaluations the count looks at;
            ``0`` (the default): ``patience + 1`` (at least 3), dlib's trainer's choice (its history holds as many
            values as its threshold), so a cut needs every value kept to show no decrease. A larger window lets
            a cut come from a longer stretch without decrease. The count never exceeds it, so it must be more
            than ``patience`` and at least 3.
        slope_confidence: with ``detector="slope"``, the probability of a decrease below which a stretch counts
            as without decrease, in (0.5, 1): dlib's ``probability_of_decrease``, 0.51 by default. Higher counts
            a slow, noisy decrease as none sooner.
        slope_robust: with ``detector="slope"``, also require the count with the largest 10% of the kept values
            left out (dlib's ``count_steps_without_decrease_robust``; the smallest 10% for ``mode="max"``) to
            exceed ``patience``, as dlib's trainer does: one bad spike then cannot cause a cut.

    Raises:
        ValueError: if a field is outside its allowed range; the message names the value given and, for a number
            torch's ``ReduceLROnPlateau`` takes (a factor of 0 or below or NaN, a negative or non-integer
            patience or cooldown, a negative or non-finite threshold, eps or min_lr), what torch does with it
            and why it is refused here. Also for settings that do not go together: a slope setting with
            ``detector="best"``, a ``slope_window`` of at most ``patience``, ``smoothing`` with ``detector="slope"``.

    Example::

        PlateauConfig(monitor="val_acc", mode="max", patience=3, factor=0.5)
    """

    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    factor: _Factor = 0.1
    patience: _Count = 10
    threshold: _NonNegative = 1e-4
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: _Count = 0
    min_lr: Union[_NonNegative, _Bounds] = 0.0
    eps: _NonNegative = 1e-8
    strict: bool = True
    warmup_steps: _Count = 0
    warmup_start_factor: _StartFactor = 0.1
    on_nonfinite: Literal["bad", "skip", "raise"] = "bad"
    window_steps: _Count = 0
    restore_best_on_cut: bool = False
    smoothing: _Smoothing = 0.0
    detector: Literal["best", "slope"] = "best"
    slope_window: _Count = 0
    slope_confidence: _Confidence = 0.51
    slope_robust: bool = False

    def __post_init__(self) -> None:
        # NumPy's and torch's scalars (np.str_, np.bool_, np.float32, a 0-dim tensor) as the plain values they
        # hold, so YAML, checkpoints and LightningCLI read the config anywhere.
        for name in ("monitor", "mode", "threshold_mode", "on_nonfinite", "detector"):
            value = getattr(self, name)
            if isinstance(value, str) and type(value) is not str:
                object.__setattr__(self, name, str(value))
        for name in (
            "factor",
            "patience",
            "threshold",
            "cooldown",
            "eps",
            "strict",
            "warmup_steps",
            "warmup_start_factor",
            "window_steps",
            "restore_best_on_cut",
            "smoothing",
            "slope_window",
            "slope_confidence",
            "slope_robust",
        ):
            value = getattr(self, name)
            if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
                object.__setattr__(self, name, value.item())
        if hasattr(self.min_lr, "tolist"):  # a NumPy array or a tensor of bounds, as torch's class takes them
            object.__setattr__(self, "min_lr", self.min_lr.tolist())
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"`monitor` must be a non-empty metric name, got {self.monitor!r}")
        if self.mode not in _MODES:
            raise ValueError(f"`mode` can be 'min' or 'max', got {self.mode!r}")
        if self.threshold_mode not in _THRESHOLD_MODES:
            raise ValueError(f"`threshold_mode` can be 'rel' or 'abs', got {self.threshold_mode!r}")
        _check_number("factor", self.factor, "a float in (0, 1)", lambda v: 0.0 < v < 1.0, lambda v: not v >= 1.0)
        _check_int("patience", self.patience)
        _check_int("cooldown", self.cooldown)
        _check_int("window_steps", self.window_steps)
        _check_number("threshold", self.threshold, "a finite float >= 0", lambda v: v >= 0.0)
        _check_number("eps", self.eps, "a finite float >= 0", lambda v: v >= 0.0)
        if isinstance(self.min_lr, (list, tuple)):
            if not self.min_lr:
                raise ValueError("`min_lr` must be a float or a non-empty list of floats (one per param group), got []")
            for value in self.min_lr:
                _check_number("min_lr", value, "a finite float >= 0 or a list of them", lambda v: v >= 0.0)
            object.__setattr__(self, "min_lr", [float(v) for v in self.min_lr])
        else:
            _check_number("min_lr", self.min_lr, "a finite float >= 0 or a list of them", lambda v: v >= 0.0)
            object.__setattr__(self, "min_lr", float(self.min_lr))
        if not isinstance(self.strict, bool):
            raise ValueError(f"`strict` must be True or False, got {self.strict!r}")
        _check_int("warmup_steps", self.warmup_steps)
        _check_number("warmup_start_factor", self.warmup_start_factor, "a float in (0, 1]", lambda v: 0.0 < v <= 1.0)
        if self.on_nonfinite not in _NON_FINITE_POLICIES:
            raise ValueError(f"`on_nonfinite` can be 'bad', 'skip' or 'raise', got {self.on_nonfinite!r}")
        if not isinstance(self.restore_best_on_cut, bool):
            raise ValueError(f"`restore_best_on_cut` must be True or False, got {self.restore_best_on_cut!r}")
        self._check_detection()
        # Plain numbers (not the parser's range-checked subclasses), so hparams and YAML hold plain data.
        for name in ("factor", "threshold", "eps", "warmup_start_factor", "smoothing", "slope_confidence"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("patience", "cooldown", "warmup_steps", "window_steps", "slope_window"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def _check_detection(self) -> None:
        """Refuse a smoothing, detector or slope setting out of range, or a slope setting that could change nothing."""
        _check_number("smoothing", self.smoothing, "a float in [0, 1)", lambda v: 0.0 <= v < 1.0)
        if self.detector not in _DETECTORS:
            raise ValueError(f"`detector` can be 'best' or 'slope', got {self.detector!r}")
        _check_int("slope_window", self.slope_window)
        _check_number("slope_confidence", self.slope_confidence, "a float in (0.5, 1)", lambda v: 0.5 < v < 1.0)
        if not isinstance(self.slope_robust, bool):
            raise ValueError(f"`slope_robust` must be True or False, got {self.slope_robust!r}")
        if self.detector == "best":
            given = [
                f"{name}={getattr(self, name)!r}"
                for name, default in _SLOPE_DEFAULTS.items()
                if getattr(self, name) != default
            ]
            if given:
                what = "a setting" if len(given) == 1 else "settings"
                raise ValueError(
                    f"{', '.join(given)}: {what} of the slope detector, but detector='best' (the default) compares"
                    " each value with the best so far and would ignore it. Set detector='slope' to use the slope"
                    " detector, or leave the slope settings out."
                )
            return
        if self.smoothing:
            raise ValueError(
                f"smoothing={self.smoothing!r} with detector='slope': the two do not combine. The slope's"
                " least-squares line already averages the noise over its window, and the values of a moving average"
                " are autocorrelated (each holds most of the one before), so the slope's confidence, computed as if"
                " each value had noise of its own, means nothing: once the metric goes flat after a change, the"
                " average approaches the new level along a smooth curve that the line reads as a confident"
                " improvement, and the LR is not cut for dozens to hundreds of evaluations (69 into an exactly flat"
                " stretch with smoothing 0.6 and patience 5), whatever patience says. Use detector='slope' with"
                " smoothing=0 (the slope judges the values themselves), or smoothing with detector='best' (the"
                " default)."
            )
        window = self.slope_window
        if window and (window < _MIN_SLOPE_WINDOW or window <= self.patience):
            raise ValueError(
                f"`slope_window` must be more than patience ({self.patience}) and at least {_MIN_SLOPE_WINDOW}, or 0"
                f" (patience + 1, at least {_MIN_SLOPE_WINDOW}), got {window}: the slope's count never exceeds the"
                f" number of values kept, so with {window} it could never exceed patience {self.patience} and the LR"
                " would never be cut"
                + ("" if window >= _MIN_SLOPE_WINDOW else f" (a line's slope needs {_MIN_SLOPE_WINDOW} values)")
            )

    @property
    def effective_slope_window(self) -> int:
        """How many of the latest evaluations the slope detector keeps: ``slope_window``, or its default."""
        return self.slope_window or max(self.patience + 1, _MIN_SLOPE_WINDOW)

    @property
    def cut_period(self) -> int:
        """Evaluations from one cut to the next on a flat metric: where the plateau calls for its next cut.

        ``patience + 1 + cooldown`` with ``detector="best"``; with ``"slope"``, ``max(patience + 1, 3) + cooldown``,
        since a line needs 3 values before its count can exceed ``patience``. The default patience of
        :class:`~lightning_plateau.PlateauEarlyStopping`.
        """
        needed = self.patience + 1
        if self.detector == "slope":
            needed = max(needed, _MIN_SLOPE_WINDOW)
        return needed + self.cooldown

    def __hash__(self) -> int:
        # The generated hash fails on a list `min_lr`, which stays a list because LightningCLI and YAML read it as
        # one; hashing it as a tuple keeps "equal configs hash equal" (equality is the generated field-wise one).
        return hash(tuple(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(self)))

    @classmethod
    def coerce(cls, config: "PlateauConfig | Mapping[str, Any] | None") -> "PlateauConfig":
        """Return ``config`` as a ``PlateauConfig``: a config as is, a mapping as keyword arguments.

        LightningCLI stores dataclass arguments in ``hparams`` as plain dicts, so every place that
        takes a config takes a dict too. ``None`` gives the defaults.

        Raises:
            TypeError: if ``config`` is of another type, or a mapping has keys that are not fields.
        """
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(str(key) for key in config if key not in names)
            if unknown:
                raise TypeError(f"Unknown PlateauConfig field(s) {unknown}; the fields are {sorted(names)}")
            return cls(**dict(config))
        raise TypeError(f"Expected a PlateauConfig or a dict of its fields, got {type(config).__name__}: {config!r}")

    @classmethod
    def keyword_fields(cls, namespace: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``namespace`` that are fields, e.g. of an ``__init__``'s ``locals()`` that writes them out.

        ``PlateauScheduler`` and ``PlateauCallback`` name every field as a keyword of their own (LightningCLI and
        ``help()`` read the signature); taking them back from ``locals()`` keeps a keyword from being forgotten.
        """
        return {field.name: namespace[field.name] for field in dataclasses.fields(cls)}

    @classmethod
    def from_arguments(
        cls, owner: str, config: "PlateauConfig | Mapping[str, Any] | None", fields: Mapping[str, Any]
    ) -> "PlateauConfig":
        """The config of ``owner(config=..., **fields)``: a config (or dict), or keyword fields, never both.

        ``fields`` maps field names to the keyword values given, ``None`` for those not given. Without either,
        the defaults apply.

        Raises:
            TypeError: if both a config and keyword fields are given, or ``config`` is of another type.
            ValueError: if a keyword field is outside its allowed range.
        """
        given = {name: value for name, value in fields.items() if value is not None}
        if config is None:
            return cls(**given)
        if given:
            keywords = ", ".join(f"{name}={value!r}" for name, value in given.items())
            raise TypeError(
                f"{owner} got a config and the keyword(s) {keywords}: give one or the other, either"
                f" {owner}(..., {keywords}) or {owner}(..., PlateauConfig({keywords}, ...))."
            )
        return cls.coerce(config)

    def min_lr_for(self, num_groups: int) -> float | list[float]:
        """Return ``min_lr`` as torch's scheduler takes it for an optimizer with ``num_groups`` param groups.

        Raises:
            ValueError: if ``min_lr`` is a list whose length is not ``num_groups``.
        """
        if isinstance(self.min_lr, list) and len(self.min_lr) != num_groups:
            raise ValueError(
                f"`min_lr` has {len(self.min_lr)} values {self.min_lr} but the optimizer has {num_groups} param"
                " group(s): give one value per group, or a single float for all of them"
            )
        return self.min_lr

    def describe(self) -> str:
        """A one-line summary used in messages, e.g. ``val_loss (min), patience 10, factor 0.1``."""
        extra = f", cooldown {self.cooldown}" if self.cooldown else ""
        if self.warmup_steps:
            extra += f", warmup {self.warmup_steps} steps"
        if self.on_nonfinite != "bad":
            extra += f", non-finite: {self.on_nonfinite}"
        if self.window_steps:
            extra += f", windows of {self.window_steps} steps"
        if self.restore_best_on_cut:
            extra += ", restoring the best weights at each cut"
        if self.smoothing:
            extra += f", smoothing {self.smoothing:g}"
        if self.detector != "best":
            extra += f", {self.detector} detector over {self.effective_slope_window} evaluations"
            if self.slope_confidence != _SLOPE_DEFAULTS["slope_confidence"]:
                extra += f" (confidence {self.slope_confidence:g})"
            if self.slope_robust:
                extra += ", robust"
        return f"{self.monitor} ({self.mode}), patience {self.patience}, factor {self.factor:g}{extra}"


# Lightning writes `hparams` into checkpoints and torch >= 2.6 loads them with `weights_only=True`: allow the
# config so a module with a `plateau: PlateauConfig` init argument reloads and resumes outside LightningCLI too.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([PlateauConfig])


def _is_number(value: Any) -> bool:
    # numbers.Real takes NumPy's scalars too (np.float32(0.5), np.int64(3)), as torch's class does.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, _numpy_bool_types()))


def _numpy_bool_types() -> tuple[type, ...]:
    """NumPy's bool scalar type where NumPy is imported (it is not a numbers.Real), else nothing."""
    numpy = sys.modules.get("numpy")
    return (numpy.bool_,) if numpy is not None else ()


def _refuse(name: str, value: Any, allowed: str, torch_accepts: bool) -> ValueError:
    # Settings torch's class does not have are refused without a note.
    note = f" ({_STRICTER_THAN_TORCH[name]})" if torch_accepts and name in _STRICTER_THAN_TORCH else ""
    return ValueError(f"`{name}` must be {allowed}, got {value!r}{note}")


def _check_int(name: str, value: Any) -> None:
    if not _is_number(value) or not isinstance(value, numbers.Integral) or value < 0:
        raise _refuse(name, value, "an int >= 0", torch_accepts=_is_number(value))


def _check_number(
    name: str, value: Any, allowed: str, ok: Callable[[float], bool], torch_ok: Callable[[float], bool] | None = None
) -> None:
    # torch_ok: which refused numbers torch's class would take (None: all of them)
    if not _is_number(value) or not math.isfinite(value) or not ok(value):
        torch_accepts = _is_number(value) and (torch_ok is None or torch_ok(value))
        raise _refuse(name, value, allowed, torch_accepts)
