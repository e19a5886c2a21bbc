"""The plateau chart: the monitored value, its best, the LR and every cut with its reason, in one PNG."""

from __future__ import annotations

import math
import os
import pathlib
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from lightning_plateau._detectors import _SlopeDetector, make_detector
from lightning_plateau._format import cuts_in_evaluations, format_lr, format_lrs, plural
from lightning_plateau._rule import PlateauEvaluation
from lightning_plateau.config import PlateauConfig

_VALUE = "#1f77b4"
_BEST = "#2ca02c"
_LR = "#ff7f0e"
_CUT = "#d62728"
_COOLDOWN = "#7f7f7f"
_PATIENCE = "#ffbf00"
_WARMUP = "#9467bd"
_SKIPPED = "#8c564b"
_SMOOTHED = "#17becf"
# Beyond this many cuts the labels would overlap: only the cut number is written.
_MAX_LABELLED_CUTS = 12
# Values spanning more than this ratio (a loss falling from 2.3 to 0.02) are drawn on a log scale.
_LOG_RATIO = 30.0
# Extra height above the data, as a fraction of its span, that keeps the rotated cut labels off the lines.
_HEADROOM = 0.4
# Up to this many distinct LRs each get a tick of their own on the LR axis.
_MAX_LR_TICKS = 10
# Space around the data, as a fraction of its span (matplotlib's own default margin).
_MARGIN = 0.05
# Values whose largest magnitude is 10**100 or more (or 10**-100 or less) are drawn divided by a power of ten,
# named on the axis: near 1e308 the span between two values, or its margin, is no float any more.
_MAX_PLAIN_EXPONENT = 100
# Log-axis limits stay within 10**-307 .. 10**307 (normal floats); an LR of 0 or below is drawn on the bottom edge.
_MAX_LOG_EXPONENT = 307
# The title starts at this fraction of the figure's width and may run to _TITLE_RIGHT; a longer one is wrapped.
_TITLE_LEFT = 0.08
_TITLE_RIGHT = 0.98
_TITLE_SIZE = 11
# matplotlib is not thread-safe: the package's charts are drawn one at a time, whichever thread asks.
_DRAWING = threading.Lock()


@dataclass(frozen=True)
class _Cut:
    number: int
    evaluation: int
    value: float
    lrs_before: tuple[float, ...]
    lrs_after: tuple[float, ...]


def plot_plateau(
    history: Sequence[PlateauEvaluation],
    config: PlateauConfig,
    path: str | os.PathLike[str],
    *,
    initial_lrs: Sequence[float] | None = None,
    title: str | None = None,
    stop: tuple[int, str] | None = None,
) -> pathlib.Path:
    """Draw a plateau history as a PNG: value, best so far, LR, cuts, cooldowns and patience windows.

    The x axis counts evaluations (fresh values judged), with epochs on the top axis when they differ (with
    ``window_steps``, the optimizer step each window ends at).
    The LR is a step line on a log-scaled right axis: the LR after evaluation ``i`` is drawn from ``i``
    on, so each cut shows as a drop at the evaluation that caused it, marked and labelled
    (``cut 2: 1e-4 -> 1e-5``). Shaded spans show each cut's patience window (the ``patience + 1``
    evaluations without improvement that triggered it), each cooldown, and the bad evaluations counted
    since the last reset when the history ends inside a window. A panel below counts the evaluations without
    improvement, climbing to ``patience + 1`` at each cut; a dotted line on the LR axis marks the ``min_lr``
    floor, a cut that floor capped is labelled with the ratio it really applied, and ``stop`` marks where early
    stopping ended the run. The evaluations of a warmup are shaded and labelled with its length (the LR line
    shows the ramp at each of them), and each evaluation skipped as non-finite is a dashed line with a cross.

    Any history is drawn: NaN and infinite values are left out (a history without a finite value says so),
    values of magnitude 1e100 or more are drawn divided by the power of ten named on the axis label, and an LR
    of 0 (cuts with ``eps=0`` until the LR underflows) lies on the bottom edge of the LR axis.

    Rendering uses matplotlib's Agg canvas directly, so it works headless and leaves pyplot's global
    backend alone. Safe to call from any thread: the package's charts are drawn one at a time (PlateauCallback
    draws its end-of-fit chart on a background thread).

    Args:
        history: the evaluations, oldest first (``PlateauCallback.history``, or a replay's rows).
        config: the plateau policy that produced them (for the title, patience and the labels).
        path: where to write the PNG; parent directories are created.
        initial_lrs: LR of each param group before the first evaluation. ``None``: taken from the first
            row (divided by ``factor`` when that row is a cut; as it is when that row is in the warmup).
        title: the chart's title; ``None`` gives the monitor, the policy and the number of cuts.
        stop: ``(evaluation, rule)`` where early stopping ended the run (``PlateauEarlyStopping.stop_rule``),
            ``None``: it did not.

    Returns:
        The path written.

    Raises:
        ImportError: if matplotlib is not installed (``pip install "lightning-plateau[plot]"``).

    Example::

        plot_plateau(callback.history, callback.config, "plateau.png")
    """
    with _DRAWING:
        fig = _plateau_figure(history, config, initial_lrs=initial_lrs, title=title, stop=stop)
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, format="png")
    return target


def _plateau_figure(
    history: Sequence[PlateauEvaluation],
    config: PlateauConfig,
    *,
    initial_lrs: Sequence[float] | None,
    title: str | None,
    stop: tuple[int, str] | None,
) -> Any:
    """The chart of :func:`plot_plateau` as a matplotlib Figure (on an Agg canvas), not yet written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            'The plateau chart needs matplotlib: pip install "lightning-plateau[plot]" (or pip install matplotlib)'
        ) from err

    rows = list(history)
    cuts = _cuts(rows, config, initial_lrs)
    # Fixed margins: constrained layout would measure every label again, about a third of the drawing time.
    fig = Figure(figsize=(11, 7), dpi=110)
    fig.subplots_adjust(left=0.08, right=0.91, top=0.93, bottom=0.14, hspace=0.08)
    FigureCanvasAgg(fig)
    ax, count_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    heading = title if title is not None else _default_title(rows, config, len(cuts))
    if rows:
        counts = _cut_counts(rows, config)
        _draw(fig, ax, rows, config, cuts, counts, initial_lrs, stop)
        _draw_counts(count_ax, rows, config, counts)
        count_ax.set_xlabel(ax.get_xlabel())  # the panels share the x axis; its label goes under the lower one
        ax.set_xlabel("")
    else:
        count_ax.set_visible(False)
        ax.text(0.5, 0.5, "no evaluation was judged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    _set_title(fig, heading, y=0.975)
    return fig


def _set_title(fig: Any, text: str, *, y: float) -> None:
    """Write ``text`` at the figure's top left, wrapped to its width; the axes move down for each extra line.

    A title with many settings on is longer than the figure is wide: matplotlib would clip it at the right edge.
    """
    title = fig.suptitle(text, x=_TITLE_LEFT, y=y, ha="left", fontsize=_TITLE_SIZE)
    width = title.get_window_extent(fig.canvas.get_renderer()).width
    room = fig.bbox.width * (_TITLE_RIGHT - _TITLE_LEFT)
    if width <= room:
        return
    # Characters per line in proportion to the measured width, a little under it: letters differ in width.
    lines = textwrap.wrap(text, max(20, int(len(text) * room / width * 0.95)))
    title.set_text("\n".join(lines))
    line_height = _TITLE_SIZE * 1.25 / (fig.get_figheight() * 72)  # points, as a fraction of the figure's height
    top = fig.subplotpars.top
    fig.subplots_adjust(top=top - (len(lines) - 1) * line_height)


def _default_title(rows: Sequence[PlateauEvaluation], config: PlateauConfig, num_cuts: int) -> str:
    return f"Plateau on {config.describe()}: {cuts_in_evaluations(num_cuts, len(rows))}"


def _first_lrs(
    rows: Sequence[PlateauEvaluation], config: PlateauConfig, initial_lrs: Sequence[float] | None
) -> tuple[float, ...]:
    if initial_lrs is not None:
        return tuple(float(lr) for lr in initial_lrs)
    first = rows[0]
    # A cut at the very first evaluation (patience 0) leaves no row with the LR before it.
    return tuple(lr / config.factor for lr in first.lrs) if first.cut and not first.warmup else first.lrs


def _cuts(rows: Sequence[PlateauEvaluation], config: PlateauConfig, initial_lrs: Sequence[float] | None) -> list[_Cut]:
    cuts: list[_Cut] = []
    if not rows:
        return cuts
    before = _first_lrs(rows, config, initial_lrs)
    for row in rows:
        if row.cut:
            cuts.append(_Cut(len(cuts) + 1, row.evaluation, row.value, before, row.lrs))
        before = row.lrs
    return cuts


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _scale_exponent(values: Sequence[float]) -> int:
    """The power of ten the values are divided by to be drawn: 0 unless their magnitude is extreme."""
    largest = max((abs(v) for v in values if math.isfinite(v) and v != 0), default=0.0)
    if largest == 0:
        return 0
    exponent = math.floor(math.log10(largest))
    return exponent if abs(exponent) >= _MAX_PLAIN_EXPONENT else 0


def _scaled(values: Sequence[float], exponent: int) -> list[float]:
    if exponent == 0:
        return list(values)
    # In two steps: 10**324 (to lift the smallest float to 1) is itself no float.
    half = exponent // 2
    return [v / 10.0**half / 10.0 ** (exponent - half) for v in values]


def _value_limits(values: Sequence[float], *, log: bool, headroom: float) -> Optional[tuple[float, float]]:
    """The y limits for ``values`` (NaN ignored) with a margin and ``headroom`` above; ``None``: nothing to draw.

    On a log axis the margins are taken in decades. Limits are computed here rather than by matplotlib's
    autoscaling, which overflows to infinity for values near the largest float.
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    if log:
        return _log_limits(min(finite), max(finite), below=_MARGIN, above=_MARGIN + headroom, least_span=0.0)
    low, high = min(finite), max(finite)
    span = high - low
    if span == 0:
        # A flat history: a band around the value (or around 0) instead of matplotlib's singular-limit warning.
        span = abs(low) or 1.0
    return low - _MARGIN * span, high + (_MARGIN + headroom) * span


def _log_limits(low: float, high: float, *, below: float, above: float, least_span: float) -> tuple[float, float]:
    """Log-axis limits around ``low .. high`` (both > 0), with margins as fractions of the span in decades."""
    low_exponent, high_exponent = math.log10(low), math.log10(high)
    decades = max(high_exponent - low_exponent, least_span)
    bottom = max(low_exponent - below * decades, -_MAX_LOG_EXPONENT)
    top = min(high_exponent + above * decades, _MAX_LOG_EXPONENT)
    if top <= bottom:
        bottom, top = bottom - 0.5, top + 0.5
    return 10.0**bottom, 10.0**top


def _draw(
    fig: Any,
    ax: Any,
    rows: Sequence[PlateauEvaluation],
    config: PlateauConfig,
    cuts: Sequence[_Cut],
    counts: dict[int, int],
    initial_lrs: Sequence[float] | None,
    stop: tuple[int, str] | None = None,
) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    xs = [row.evaluation for row in rows]
    raw_values = _finite([row.value for row in rows])
    exponent = _scale_exponent(raw_values)
    values = _scaled(raw_values, exponent)
    bests = _scaled(_finite([row.best for row in rows]), exponent)
    last = xs[-1]
    left = xs[0] - 1
    handles: list[Any] = []

    handles += ax.plot(
        xs, values, color=_VALUE, marker="o", markersize=3, linewidth=1.4, label=config.monitor, zorder=3
    )
    if any(row.smoothed is not None for row in rows):
        # The average the rule judged: the best, the counts and the cuts follow it, not the raw values.
        averages = _scaled(_finite([math.nan if row.smoothed is None else row.smoothed for row in rows]), exponent)
        handles += ax.plot(
            xs,
            averages,
            color=_SMOOTHED,
            linewidth=1.6,
            label=f"moving average {config.smoothing:g} (judged)",
            zorder=3,
        )
    # The best holds until the next improvement: a step, not a slope between evaluations.
    handles += ax.step(
        xs, bests, where="post", color=_BEST, linestyle="--", linewidth=1.2, label="best so far", zorder=2
    )
    unit = f", x1e{exponent}" if exponent else ""
    ax.set_ylabel(f"{config.monitor} ({config.mode}{unit})", color=_VALUE)
    finite = [v for v in values if not math.isnan(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) / min(finite) > _LOG_RATIO
    if log:
        ax.set_yscale("log")
    limits = _value_limits(values, log=log, headroom=_HEADROOM if cuts else 0.0)
    if limits is None:
        ax.set_ylim(0.0, 1.0)
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            f"no finite {config.monitor} to draw",
            ha="center",
            va="center",
            color=_VALUE,
            transform=ax.transAxes,
        )
    else:
        robust = None if log else _robust_limits(values, headroom=_HEADROOM if cuts else 0.0)
        ax.set_ylim(*(robust or limits))
        if robust is not None:
            # The early values the robust axis leaves out are still drawn, as markers on its edge.
            low, high = robust
            for x, value in zip(xs, values, strict=True):
                if value > high or value < low:
                    edge = high if value > high else low
                    ax.plot(x, edge, marker="^" if value > high else "v", color=_VALUE, clip_on=False, zorder=3)
            handles.append(
                Line2D([], [], color=_VALUE, marker="^", linestyle="none", label="off the axis (early values)")
            )

    # What the detector counts: evaluations without improvement (torch's rule), or without decrease (the slope).
    lacking = make_detector(config).lacking(config.mode)
    windows = _patience_windows(rows, cuts, counts)
    for start, end in windows:
        ax.axvspan(start, end, color=_PATIENCE, alpha=0.13, linewidth=0, zorder=0)
        # Back-to-back windows (patience 0 or 1) would merge into one band without an edge.
        ax.axvline(start, color=_PATIENCE, alpha=0.6, linewidth=0.8, zorder=0)
    if windows:
        if config.detector == "slope":
            # The slope's count jumps: a cut comes when it passes patience, over however many evaluations it spans.
            label = f"patience {config.patience}: {lacking} over more than {config.patience} evaluations cuts"
        else:
            label = f"patience {config.patience}: the {_ordinal(config.patience + 1)} evaluation {lacking} cuts"
        handles.append(Patch(color=_PATIENCE, alpha=0.3, label=label))
    open_window = _open_window(rows)
    if open_window is not None:
        start, end, count = open_window
        hatch: dict[str, Any] = {"facecolor": "none", "edgecolor": (1.0, 0.75, 0.0, 0.45), "hatch": "//"}
        ax.axvspan(start, end, linewidth=0, zorder=0, **hatch)
        handles.append(Patch(label=f"{lacking} so far: {count} of {config.patience + 1}", **hatch))
    cooldowns = _cooldown_spans(rows)
    for start, end in cooldowns:
        ax.axvspan(start, end, color=_COOLDOWN, alpha=0.15, linewidth=0, zorder=0)
    if cooldowns:
        handles.append(Patch(color=_COOLDOWN, alpha=0.3, label=f"cooldown ({config.cooldown})"))
    warmup = [row.evaluation for row in rows if row.warmup]
    if warmup:
        # The warmup ends between its last evaluation and the next: the band stops half-way.
        ax.axvspan(left, max(warmup) + 0.5, color=_WARMUP, alpha=0.12, linewidth=0, zorder=0)
        handles.append(Patch(color=_WARMUP, alpha=0.3, label=f"warmup ({config.warmup_steps} steps): not judged"))
    skipped = [row.evaluation for row in rows if row.skipped]
    for x in skipped:
        ax.axvline(x, color=_SKIPPED, linestyle="--", linewidth=1.0, zorder=1)
    if skipped:
        ax.plot(
            skipped,
            [0.02] * len(skipped),
            linestyle="none",
            marker="x",
            color=_SKIPPED,
            zorder=4,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )
        handles.append(Line2D([], [], color=_SKIPPED, marker="x", linestyle="--", label="skipped (not finite)"))

    lr_ax = ax.twinx()
    lr_ax.set_yscale("log")
    lr_xs = [left, *xs, last + 0.5]
    first_lrs = _first_lrs(rows, config, initial_lrs)
    every_lr = [lr for lrs in (first_lrs, *(row.lrs for row in rows)) for lr in lrs]
    drawable = sorted({lr for lr in every_lr if _drawable_lr(lr)})
    bottom, top = _lr_limits(drawable, room_for_labels=bool(cuts))
    groups = max(len(first_lrs), *(len(row.lrs) for row in rows))
    for group in range(groups):
        raw = [_group_lr(first_lrs, group)] + [_group_lr(row.lrs, group) for row in rows]
        ys = [min(max(lr, bottom), top) for lr in raw]
        ys.append(ys[-1])
        label = "lr" if groups == 1 else f"lr pg{group}"
        if any(lr < bottom for lr in raw):
            label += " (0 on the bottom edge)"
        style = "-" if group == 0 else (0, (4, 1 + group))
        handles += lr_ax.step(lr_xs, ys, where="post", color=_LR, linestyle=style, linewidth=1.8, label=label)
    lr_ax.set_ylabel("learning rate (log scale)", color=_LR)
    lr_ax.set_ylim(bottom, top)
    _set_lr_ticks(lr_ax, drawable, zero=any(not _drawable_lr(lr) for lr in every_lr), bottom=bottom)
    floor = config.min_lr[0] if isinstance(config.min_lr, list) else config.min_lr
    if _drawable_lr(floor) and bottom <= floor <= top:
        handles.append(
            lr_ax.axhline(floor, color=_LR, linestyle=":", linewidth=1.0, label=f"min_lr {format_lr(floor)}")
        )

    label_all = len(cuts) <= _MAX_LABELLED_CUTS
    for cut in cuts:
        ax.axvline(cut.evaluation, color=_CUT, linestyle=":", linewidth=1.2, zorder=1)
        text = f"cut {cut.number}: {format_lrs(cut.lrs_before)} -> {format_lrs(cut.lrs_after)}"
        ratio = _applied_ratio(cut)
        if ratio is not None and not math.isclose(ratio, config.factor, rel_tol=1e-6):
            text += f" (x{ratio:.2g}: min_lr)"
        ax.annotate(
            text if label_all else str(cut.number),
            xy=(cut.evaluation, 0.985),
            xycoords=ax.get_xaxis_transform(),
            xytext=(-3, 0),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
            color=_CUT,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            zorder=5,
        )
    if cuts:
        cut_values = _scaled(_finite([cut.value for cut in cuts]), exponent)
        ax.plot([c.evaluation for c in cuts], cut_values, linestyle="none", marker="v", markersize=8, color=_CUT)
        handles.append(
            Line2D(
                [], [], color=_CUT, marker="v", linestyle=":", markersize=7, label=f"cut (x factor {config.factor:g})"
            )
        )

    if stop is not None:
        evaluation, rule = stop
        ax.axvline(evaluation, color="black", linestyle="-", linewidth=1.4, zorder=4)
        handles.append(Line2D([], [], color="black", linewidth=1.4, label=f"early stop: {rule.replace('_', ' ')}"))

    ax.set_xlim(left, last + 0.5)
    ax.set_zorder(lr_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.grid(True, alpha=0.25)
    _label_x(ax, rows)
    # Four to a row once there are many: five long labels to a row run off the figure's edges. A third row of the
    # legend takes room from the axes, not from the x axis label.
    columns = 5 if len(handles) <= 8 else 4
    legend_rows = math.ceil(len(handles) / columns)
    if legend_rows > 2:
        fig.subplots_adjust(bottom=0.14 + 0.035 * (legend_rows - 2))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), columns), fontsize=9, frameon=False)


def _robust_limits(values: Sequence[float], *, headroom: float) -> Optional[tuple[float, float]]:
    """Limits fitted to the values after the first quarter, when the early ones would squash them flat.

    A falling loss starts far above its plateau: an axis set by its first values draws the plateau, and the gap
    between the value and the best that makes each cut, as one flat line. ``None``: every value fits well anyway.
    """
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 8:
        return None
    tail = [v for v in values[len(values) // 4 :] if math.isfinite(v)]
    if not tail:
        return None
    low, high = min(tail), max(tail)
    span = high - low or abs(high) * 0.05 or 1.0
    bottom, top = low - 0.6 * span, high + (0.6 + headroom) * span
    # Worth it only when the early values stretch the axis to more than three times the tail's room.
    if (min(finite) >= bottom and max(finite) <= top) or (max(finite) - min(finite)) < 3 * (top - bottom):
        return None
    return bottom, top


def _draw_counts(ax: Any, rows: Sequence[PlateauEvaluation], config: PlateauConfig, cut_counts: dict[int, int]) -> None:
    """The evaluations without improvement, up to the count that called for each cut (``patience + 1`` or more).

    The count restarts at 0 right after a cut; the panel shows the count that called for it (``cut_counts``), and at a
    withheld cut the count the row kept.
    """
    counts = [cut_counts.get(row.evaluation, row.num_bad) for row in rows]
    ax.step([row.evaluation for row in rows], counts, where="mid", color=_PATIENCE, linewidth=1.4)
    ax.axhline(config.patience + 1, color=_CUT, linestyle=":", linewidth=1.0)
    # The slope's count may pass patience + 1 with a window longer than that.
    ax.set_ylim(0, max(config.patience + 1, *counts) + 0.8)
    ax.set_yticks([0, config.patience + 1])
    ax.set_ylabel("bad", fontsize=9)
    ax.grid(True, alpha=0.25)


def _setting_text(value: Any) -> str:
    """A varied setting's value in a legend: a name (``slope``) as it is, a number as ``%g``."""
    return value if isinstance(value, str) else f"{value:g}"


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _applied_ratio(cut: _Cut) -> Optional[float]:
    """The ratio the cut applied to the first param group, ``None`` when it cannot be told (an LR of 0)."""
    before, after = cut.lrs_before[0], cut.lrs_after[0]
    return after / before if before > 0 and math.isfinite(after / before) else None


def _group_lr(lrs: Sequence[float], group: int) -> float:
    # A param group added mid-fit has no LR before it appeared: nothing is drawn there.
    return float(lrs[group]) if group < len(lrs) else math.nan


def _drawable_lr(lr: float) -> bool:
    # 0 (an LR cut with eps=0 until it underflows) and subnormal LRs have no place on a log axis worth its ticks.
    return math.isfinite(lr) and 10.0**-_MAX_LOG_EXPONENT <= lr <= 10.0**_MAX_LOG_EXPONENT


def _lr_limits(lrs: Sequence[float], *, room_for_labels: bool) -> tuple[float, float]:
    """The LR axis limits around the sorted drawable ``lrs``, with room for the cut labels when there are cuts."""
    if not lrs:
        # Only LRs of 0: they lie on the bottom edge of a decade's axis.
        return 1e-3, 1e-2
    return _log_limits(lrs[0], lrs[-1], below=0.15, above=_HEADROOM if room_for_labels else 0.15, least_span=1.0)


def _set_lr_ticks(lr_ax: Any, lrs: Sequence[float], *, zero: bool, bottom: float) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    if len(lrs) <= _MAX_LR_TICKS:
        # The LRs actually taken are the ticks worth reading: 0.1, 0.01, 1e-3 rather than 10^-2 and 2x10^-1.
        ticks = [*([bottom] if zero else []), *lrs]
        lr_ax.set_yticks(ticks, [*(["0"] if zero else []), *(format_lr(lr) for lr in lrs)])
        lr_ax.yaxis.set_minor_locator(NullLocator())
    else:
        lr_ax.yaxis.set_major_formatter(FuncFormatter(lambda lr, _: format_lr(lr)))
        lr_ax.yaxis.set_minor_formatter(NullFormatter())


def _patience_windows(
    rows: Sequence[PlateauEvaluation], cuts: Sequence[_Cut], counts: dict[int, int]
) -> list[tuple[float, float]]:
    """The evaluations each cut's count spans: from the last good (or reset) one to the cut."""
    first = rows[0].evaluation - 1
    return [(max(first, _back(rows, cut.evaluation, counts[cut.evaluation])), cut.evaluation) for cut in cuts]


def _cut_counts(rows: Sequence[PlateauEvaluation], config: PlateauConfig) -> dict[int, int]:
    """The count that called for each cut, by evaluation: what its reason says (``for 11 evaluations``).

    torch's rule counts one more bad evaluation at a time, so each of its cuts comes at ``patience + 1``. The slope's
    count jumps, and may pass ``patience + 1`` with a window longer than that; a row keeps only the count after its
    cut (0), so the slope detector counts again over the values it held at the cut: those judged (the moving average,
    with smoothing) since the previous cut, outside cooldown, warmup and skips, as the rule fed them to it.
    """
    detector = make_detector(config)
    if not isinstance(detector, _SlopeDetector):
        return {row.evaluation: config.patience + 1 for row in rows if row.cut}
    counts: dict[int, int] = {}
    in_cooldown = False
    for row in rows:
        if row.warmup or row.skipped:
            continue  # not judged: the detector never saw it, and the cooldown did not move
        if not in_cooldown:
            detector.history.append(row.value if row.smoothed is None else row.smoothed)
            del detector.history[: -detector.size]
        if row.cut:
            counts[row.evaluation] = detector.count(config.patience)
            detector.history.clear()
        in_cooldown = row.cooldown > 0
    return counts


def _back(rows: Sequence[PlateauEvaluation], evaluation: int, count: int) -> int:
    """The evaluation ``count`` judged evaluations before ``evaluation``: skipped ones widen the window."""
    index = evaluation - rows[0].evaluation
    if not 0 <= index < len(rows) or rows[index].evaluation != evaluation:
        return evaluation - count  # rows not one per evaluation (a slice of a history): as counted
    judged = 0
    while index >= 0 and judged < count:
        row = rows[index]
        judged += not (row.warmup or row.skipped)
        index -= 1
    return rows[index].evaluation if index >= 0 else rows[0].evaluation - 1


def _open_window(rows: Sequence[PlateauEvaluation]) -> Optional[tuple[float, float, int]]:
    last = rows[-1]
    if last.num_bad == 0 or last.cut:
        return None
    return (max(rows[0].evaluation - 1, _back(rows, last.evaluation, last.num_bad)), last.evaluation, last.num_bad)


def _cooldown_spans(rows: Sequence[PlateauEvaluation]) -> list[tuple[float, float]]:
    # A row with cooldown c > 0 means the next evaluation is still in cooldown: shade up to it.
    spans: list[tuple[float, float]] = []
    for row in rows:
        if row.cooldown <= 0:
            continue
        start, end = row.evaluation, row.evaluation + 1
        if spans and spans[-1][1] >= start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    last = rows[-1].evaluation + 0.5
    return [(start, min(end, last)) for start, end in spans]


def _label_x(ax: Any, rows: Sequence[PlateauEvaluation]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rows and all(row.window is not None for row in rows):
        # Windows of optimizer steps (window_steps): the steps each one ends at, on the top axis.
        ax.set_xlabel("evaluation (one per window of optimizer steps)")
        ax.get_figure().subplots_adjust(top=0.87)
        top = ax.secondary_xaxis("top")
        every = max(1, math.ceil(len(rows) / 12))
        ends = [(row.evaluation, row.window[1]) for row in rows if row.window is not None][::every]
        top.set_xticks([evaluation for evaluation, _ in ends], [str(step) for _, step in ends])
        top.set_xlabel("optimizer step (end of each window)")
        return
    epochs = [row.epoch for row in rows]
    if any(epoch is None for epoch in epochs):
        ax.set_xlabel("evaluation")
        return
    if all(epoch == row.evaluation - 1 for epoch, row in zip(epochs, rows, strict=True)):
        ax.set_xlabel("evaluation (one per epoch: epoch N is evaluation N + 1)")
        return
    ax.set_xlabel("evaluation")
    ax.get_figure().subplots_adjust(top=0.87)
    top = ax.secondary_xaxis("top")
    firsts: dict[int, int] = {}
    for row in rows:
        assert row.epoch is not None
        firsts.setdefault(row.epoch, row.evaluation)
    every = max(1, math.ceil(len(firsts) / 15))
    shown = list(firsts.items())[::every]
    top.set_xticks([evaluation for _, evaluation in shown], [str(epoch) for epoch, _ in shown])
    top.set_xlabel("epoch (first evaluation of each)")


def plot_comparison(values: Sequence[float], outcomes: Sequence[Any], path: str | os.PathLike[str]) -> pathlib.Path:
    """Draw a what-if comparison as a PNG: the monitored values, and each policy's LR (first param group) over them.

    Args:
        values: the history the policies were replayed on.
        outcomes: :func:`~lightning_plateau.compare.compare`'s results.
        path: where to write the PNG; parent directories are created.

    Returns:
        The path written.

    Raises:
        ImportError: if matplotlib is not installed (``pip install "lightning-plateau[plot]"``).

    Example::

        plot_comparison(history, compare(history, patience=[2, 5, 10]), "what-if.png")
    """
    with _DRAWING:
        fig = _comparison_figure(values, outcomes)
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, format="png")
    return target


def _comparison_figure(values: Sequence[float], outcomes: Sequence[Any]) -> Any:
    """The chart of :func:`plot_comparison` as a matplotlib Figure (on an Agg canvas), not yet written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            'The plateau chart needs matplotlib: pip install "lightning-plateau[plot]" (or pip install matplotlib)'
        ) from err

    fig = Figure(figsize=(11, 6), dpi=110)
    fig.subplots_adjust(left=0.08, right=0.91, top=0.92, bottom=0.1)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    monitor = outcomes[0].config.monitor if outcomes else "value"
    policies = f"{len(outcomes)} {'policy' if len(outcomes) == 1 else 'policies'}"
    title = f"What if? {policies} on {plural(len(values), 'evaluation')} of {monitor}"
    _set_title(fig, title, y=0.97)
    xs = list(range(1, len(values) + 1))
    raw = _finite(list(values))
    exponent = _scale_exponent(raw)
    scaled = _scaled(raw, exponent)
    handles = list(ax.plot(xs, scaled, color=_VALUE, marker="o", markersize=3, linewidth=1.4, label=monitor))
    unit = f", x1e{exponent}" if exponent else ""
    ax.set_ylabel(f"{monitor}{unit}", color=_VALUE)
    ax.set_xlabel("evaluation")
    limits = _value_limits(scaled, log=False, headroom=0.0)
    if limits is not None:
        ax.set_ylim(*limits)
    lr_ax = ax.twinx()
    lr_ax.set_yscale("log")
    trajectories = []
    for outcome in outcomes:
        rows = list(outcome.replay)
        trajectories.append([outcome.replay.initial_lrs[0]] + [row.lrs[0] for row in rows])
    drawable = sorted({lr for lrs in trajectories for lr in lrs if _drawable_lr(lr)})
    bottom, top = _lr_limits(drawable, room_for_labels=False)
    for index, (outcome, lrs) in enumerate(zip(outcomes, trajectories, strict=True)):
        ys = [min(max(lr, bottom), top) for lr in lrs] + [min(max(lrs[-1], bottom), top)]
        name = ", ".join(f"{key} {_setting_text(value)}" for key, value in outcome.varied.items())
        if outcome.early_stop is not None:
            name += f" (stop at {outcome.early_stop})"
        handles += lr_ax.step(
            [0, *xs, len(xs) + 0.5], ys, where="post", linewidth=1.3, label=name, color=f"C{(index + 1) % 10}"
        )
    lr_ax.set_ylim(bottom, top)
    lr_ax.set_ylabel("lr (first param group)")
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    return fig
