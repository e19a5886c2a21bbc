"""The plateau chart: a real PNG for 0, 1 and several cuts, and the geometry of its shaded spans."""

from __future__ import annotations

import math
import struct
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from lightning_plateau import PlateauConfig, PlateauEvaluation, PlateauScheduler, replay
from lightning_plateau.chart import (
    _cooldown_spans,
    _cut_counts,
    _cuts,
    _lr_limits,
    _open_window,
    _patience_windows,
    _value_limits,
    plot_plateau,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FALLING = [1.0, 0.8, 0.65, 0.55, 0.5, 0.47, 0.45, 0.44]
ONE_CUT = [2.3, 1.2, 0.8, 0.6, 0.55, 0.56, 0.57, 0.555, 0.56, 0.5, 0.45]
SEVERAL_CUTS = [2.0, 1.0, 0.6, 0.5, 0.52, 0.51, 0.53, 0.5, 0.5, 0.52, 0.49, 0.5, 0.5, 0.5, 0.5, 0.5]
NAN, INF = math.nan, math.inf
# Histories whose axis limits matplotlib cannot find by itself ("Axis limits cannot be NaN or Inf"), and the
# degenerate ones next to them: the chart must draw each.
EXTREME_HISTORIES = [
    pytest.param([1e308, 1.5e308, 1.7e308, 1.7e308], PlateauConfig(patience=0), id="values-near-1e308"),
    pytest.param([-1e308, 1.7e308, -1.5e308, 1.7e308], PlateauConfig(patience=0), id="span-beyond-largest-float"),
    # 0.1, 1e-81, 1e-161, 1e-241, 1e-321 (subnormal), then 0: eps=0 lets every cut through
    pytest.param([1.0] * 8, PlateauConfig(patience=0, factor=1e-80, eps=0.0), id="lr-underflows-to-0-eps-0"),
    pytest.param([NAN] * 4, PlateauConfig(patience=1), id="all-nan"),
    pytest.param([INF] * 4, PlateauConfig(patience=1), id="all-inf"),
    pytest.param([NAN, INF, 1.0, -INF, 1e308, NAN, 0.5], PlateauConfig(patience=1), id="mixed"),
    pytest.param([0.5], PlateauConfig(), id="single-evaluation"),
    pytest.param([0.3] * 5, PlateauConfig(patience=1), id="zero-span"),
]


def judge(
    values: Sequence[float],
    config: PlateauConfig,
    *,
    groups: int = 1,
    evaluations_per_epoch: int = 1,
) -> tuple[list[PlateauEvaluation], PlateauScheduler]:
    """Step a real PlateauScheduler over ``values``, as the callback does; return its rows."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    optimizer = torch.optim.SGD([{"params": [p], "lr": 0.1 / (index + 1)} for index, p in enumerate(params)])
    scheduler = PlateauScheduler(optimizer, config)
    rows = []
    for index, value in enumerate(values):
        scheduler._context = (index // evaluations_per_epoch, 10 * (index + 1))
        scheduler.step(value)
        rows.append(scheduler.snapshot())
    return rows, scheduler


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("values", "config", "groups", "evaluations_per_epoch", "expected_cuts"),
    [
        (FALLING, PlateauConfig(patience=2), 1, 1, 0),
        (ONE_CUT, PlateauConfig(patience=3), 1, 1, 1),
        (SEVERAL_CUTS, PlateauConfig(patience=1, cooldown=1), 1, 1, 4),
        (SEVERAL_CUTS, PlateauConfig(patience=1), 2, 3, 5),
        ([1.0] * 16, PlateauConfig(patience=0, factor=0.5), 1, 1, 15),
    ],
    ids=["no-cut", "one-cut", "several-cuts-cooldown", "two-groups-three-evals-per-epoch", "a-cut-every-evaluation"],
)
def test_plot_plateau_writes_a_png(
    tmp_path: Path,
    values: list[float],
    config: PlateauConfig,
    groups: int,
    evaluations_per_epoch: int,
    expected_cuts: int,
) -> None:
    """0, 1 and many cuts, one or two param groups: a valid PNG of a sensible size at the path given."""
    rows, scheduler = judge(values, config, groups=groups, evaluations_per_epoch=evaluations_per_epoch)
    assert scheduler.num_reductions == expected_cuts

    path = plot_plateau(rows, config, tmp_path / "deep" / "er" / "plateau.png")

    assert path == tmp_path / "deep" / "er" / "plateau.png"
    width, height = png_size(path)
    assert (width, height) == (1210, 770)
    assert 20_000 < path.stat().st_size < 1_000_000


def test_plot_plateau_empty_history_still_writes_a_png(tmp_path: Path) -> None:
    """No evaluation at all (a fit stopped early, an empty replay) gives a labelled, empty chart."""
    path = plot_plateau([], PlateauConfig(), str(tmp_path / "empty.png"), title="nothing yet")

    assert png_size(path) == (1210, 770)


@pytest.mark.parametrize(("values", "config"), EXTREME_HISTORIES)
def test_plot_plateau_draws_extreme_histories(tmp_path: Path, values: list[float], config: PlateauConfig) -> None:
    """Huge values, an LR cut to 0, NaN or inf only, one evaluation, a flat line: a PNG, without a warning."""
    rows, _ = judge(values, config)

    with warnings.catch_warnings():
        # matplotlib's overflow and "non-positive ylim" warnings are the symptoms of limits it had to repair
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("error", UserWarning)
        path = plot_plateau(rows, config, tmp_path / "plateau.png")

    assert png_size(path) == (1210, 770)


@pytest.mark.parametrize(
    ("values", "log", "expected"),
    [
        ([1.0, 2.0], False, (0.95, 2.05)),
        ([0.3, 0.3], False, (0.285, 0.315)),
        ([0.0, NAN, INF], False, (-0.05, 0.05)),
        ([0.01, NAN, 10.0], True, (10**-2.15, 10**1.15)),
        ([NAN, INF, -INF], False, None),
    ],
)
def test_chart_value_limits_ignore_what_cannot_be_drawn(
    values: list[float], log: bool, expected: Optional[tuple[float, float]]
) -> None:
    """The value axis spans the finite values with a 5% margin (in decades on a log axis); none: no limits."""
    limits = _value_limits(values, log=log, headroom=0.0)

    assert limits == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("lrs", "room_for_labels", "expected"),
    [
        ([1e-3, 0.1], False, (10**-3.3, 10**-0.7)),
        ([1e-3], True, (10**-3.15, 10**-2.6)),
        # 300 decades of cuts: the bottom stops at the smallest normal power of ten instead of underflowing to 0
        ([1e-300, 1.0], False, (1e-307, 10**45)),
        ([], False, (1e-3, 1e-2)),
    ],
)
def test_chart_lr_limits_stay_positive_and_finite(
    lrs: list[float], room_for_labels: bool, expected: tuple[float, float]
) -> None:
    """The LR axis spans the drawable LRs with margins in decades, clamped to normal floats; LR 0 sits below."""
    assert _lr_limits(lrs, room_for_labels=room_for_labels) == pytest.approx(expected, rel=1e-9)


def test_plot_plateau_leaves_pyplot_backend_alone(tmp_path: Path) -> None:
    """The chart draws on its own Agg canvas: pyplot's backend is the same before and after."""
    import matplotlib

    before = matplotlib.get_backend()
    rows, _ = judge(ONE_CUT, PlateauConfig(patience=3))
    plot_plateau(rows, PlateauConfig(patience=3), tmp_path / "plateau.png")

    assert matplotlib.get_backend() == before


def test_plot_plateau_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With matplotlib not importable the error says which extra to install, and nothing is written."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    rows, _ = judge(ONE_CUT, PlateauConfig(patience=3))

    with pytest.raises(ImportError, match=r'pip install "lightning-plateau\[plot\]"'):
        plot_plateau(rows, PlateauConfig(patience=3), tmp_path / "plateau.png")
    assert not (tmp_path / "plateau.png").exists()


@pytest.mark.parametrize(
    ("values", "config", "initial_lrs", "expected"),
    [
        # (evaluation, lr before, lr after) of each cut
        ([1.0, 1.0, 1.0, 1.0], PlateauConfig(patience=1), None, [(3, 0.1, 0.01)]),
        ([1.0, 2.0, 3.0, 4.0, 5.0], PlateauConfig(patience=1), None, [(3, 0.1, 0.01), (5, 0.01, 1e-3)]),
        ([1.0, 1.0], PlateauConfig(patience=0), None, [(2, 0.1, 0.01)]),
        # a cut at the very first evaluation: the LR before it is initial_lrs, else the LR after / factor
        ([float("nan")], PlateauConfig(patience=0, factor=0.5), None, [(1, 0.1, 0.05)]),
        ([float("nan")], PlateauConfig(patience=0, factor=0.5), [0.1], [(1, 0.1, 0.05)]),
    ],
)
def test_chart_cuts_carry_lr_before_and_after(
    values: list[float],
    config: PlateauConfig,
    initial_lrs: Optional[list[float]],
    expected: list[tuple[int, float, float]],
) -> None:
    """Each cut's label reads the LR before it (the previous row's, or the initial one) and after it."""
    rows, scheduler = judge(values, config)

    cuts = _cuts(rows, config, initial_lrs)

    assert [cut.number for cut in cuts] == list(range(1, len(expected) + 1))
    assert [cut.evaluation for cut in cuts] == [evaluation for evaluation, _, _ in expected]
    assert [lr for cut in cuts for lr in cut.lrs_before] == pytest.approx([before for _, before, _ in expected])
    assert [lr for cut in cuts for lr in cut.lrs_after] == pytest.approx([after for _, _, after in expected])
    assert [lr for cut in cuts for lr in cut.lrs_before] == pytest.approx(
        [lr for cut in scheduler.cuts for lr in cut.lrs_before]
    )


@pytest.mark.parametrize(
    ("values", "config", "windows", "cooldowns", "open_window"),
    [
        # best at 2, patience 2: 3 bad evaluations (3, 4, 5), cut at 5; then 6 and 7 are bad again
        ([1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6], PlateauConfig(patience=2), [(2, 5)], [], (5, 7, 2)),
        # the same with cooldown 2: 6 and 7 are in cooldown, nothing counts yet
        ([1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6], PlateauConfig(patience=2, cooldown=2), [(2, 5)], [(5, 7)], None),
        # cooldown 1 on a flat metric: cuts every patience + 1 + cooldown evaluations
        ([1.0] * 8, PlateauConfig(patience=1, cooldown=1), [(1, 3), (4, 6)], [(3, 4), (6, 7)], (7, 8, 1)),
        # cut at the first evaluation: the window cannot start before the history
        ([1.0, 1.0], PlateauConfig(patience=0), [(1, 2)], [], None),
        # still improving: no window at all
        ([3.0, 2.0, 1.0], PlateauConfig(patience=0), [], [], None),
    ],
)
def test_chart_spans_follow_the_rule(
    values: list[float],
    config: PlateauConfig,
    windows: list[tuple[int, int]],
    cooldowns: list[tuple[int, int]],
    open_window: Optional[tuple[int, int, int]],
) -> None:
    """Patience windows end at their cut, cooldowns follow it, and an unfinished window is shown as such."""
    rows, _ = judge(values, config)
    cuts = _cuts(rows, config, None)

    assert _patience_windows(rows, cuts, _cut_counts(rows, config)) == windows
    assert _cooldown_spans(rows) == cooldowns
    assert _open_window(rows) == open_window


def _texts(fig: Any) -> list[str]:
    """Every text the figure shows: title, axis labels, annotations, legend entries."""
    from matplotlib.text import Text

    return [artist.get_text() for artist in fig.findobj(Text) if artist.get_text()]


@pytest.mark.parametrize(
    ("values", "config", "expected_cuts"),
    [
        ([1.0, 0.9, 0.8, 0.7], PlateauConfig(patience=2), 0),
        ([1.0, 0.9, 0.9, 0.9, 0.9], PlateauConfig(patience=2, factor=0.5), 1),
        ([1.0] + [1.0] * 12, PlateauConfig(patience=1, factor=0.5, cooldown=1), 4),
    ],
    ids=["no-cut", "one-cut", "several-cuts"],
)
def test_chart_shows_why_the_title_legend_and_count_panel_agree(
    values: list[float], config: PlateauConfig, expected_cuts: int
) -> None:
    """The legend names the same patience as the title; a lower panel counts bad evaluations up to patience + 1."""
    from lightning_plateau.chart import _plateau_figure

    result = replay(values, config, lr=0.1)
    assert len(result.cuts) == expected_cuts
    fig = _plateau_figure(result.evaluations(), config, initial_lrs=result.initial_lrs, title=None, stop=None)
    texts = _texts(fig)
    assert any(f"patience {config.patience}," in text for text in texts)  # title
    if expected_cuts:
        assert f"patience {config.patience}: the {config.patience + 1}" in " ".join(texts)
    main_ax, count_ax = fig.axes[0], fig.axes[1]
    assert count_ax.get_ylabel() == "bad"
    (steps, *_) = count_ax.get_lines()
    counts = list(steps.get_ydata())
    assert counts.count(config.patience + 1) == expected_cuts
    assert max(counts) <= config.patience + 1
    assert main_ax.get_ylim()[0] <= min(values)


def test_chart_marks_min_lr_floor_capped_cut_and_early_stop() -> None:
    """The min_lr floor is drawn, a cut it capped says the ratio it applied, and the early stop is marked by rule."""
    from lightning_plateau.chart import _plateau_figure

    config = PlateauConfig(patience=0, factor=0.1, min_lr=3e-3)
    result = replay([1.0, 1.0, 1.0, 1.0], config, lr=0.1)
    assert [cut.lrs_after for cut in result.cuts] == [(pytest.approx(0.01),), (3e-3,)]
    fig = _plateau_figure(
        result.evaluations(), config, initial_lrs=result.initial_lrs, title=None, stop=(4, "lr_exhausted")
    )
    texts = " ".join(_texts(fig))
    assert "min_lr 3e-3" in texts
    assert "cut 2: 0.01 -> 3e-3 (x0.3: min_lr)" in texts
    assert "cut 1: 0.1 -> 0.01" in texts
    assert "cut 1: 0.1 -> 0.01 (x" not in texts  # a full cut keeps the nominal factor of the legend
    assert "early stop: lr exhausted" in texts


def test_chart_robust_axis_keeps_the_plateau_readable() -> None:
    """A loss falling from 2.3 to a plateau near 0.27: the axis fits the plateau, the early values sit on its edge."""
    from lightning_plateau.chart import _plateau_figure

    values = [2.3, 1.2, 0.8, 0.5, 0.35, 0.3, 0.28] + [0.27] * 8 + [0.26] * 8
    config = PlateauConfig(patience=2)
    result = replay(values, config, lr=0.1)
    fig = _plateau_figure(result.evaluations(), config, initial_lrs=result.initial_lrs, title=None, stop=None)
    low, high = fig.axes[0].get_ylim()
    assert high < 0.5
    assert low < 0.26
    assert "off the axis (early values)" in _texts(fig)


def test_plot_comparison_names_each_policy_of_a_grid_of_detectors(tmp_path: Path) -> None:
    """A what-if chart over several detectors (names, not numbers) is drawn, each LR line named by its policy."""
    from lightning_plateau import plot_comparison
    from lightning_plateau.chart import _comparison_figure
    from lightning_plateau.compare import compare

    values = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    outcomes = compare(values, PlateauConfig(patience=2), detector=["best", "slope"], patience=[2, 3])
    texts = _texts(_comparison_figure(values, outcomes))
    for name in ("detector best, patience 2", "detector best, patience 3", "detector slope, patience 2"):
        assert name in texts
    assert png_size(plot_comparison(values, outcomes, tmp_path / "what-if.png")) == (1210, 660)


def test_chart_slope_cut_shows_the_count_that_called_for_it() -> None:
    """A slope cut over 6 evaluations (patience 3, window 8): the panel climbs to 6 and the band spans those 6."""
    from lightning_plateau.chart import _plateau_figure

    values = [0.73, 0.59, 0.59, 0.51, 0.45, 0.49, 0.81, 1.0, 0.5, 0.43]
    config = PlateauConfig(patience=3, detector="slope", slope_window=8)
    result = replay(values, config, lr=0.1)
    assert [(cut.evaluation, cut.num_bad) for cut in result.cuts] == [(7, 6)]
    assert "over its last 6 evaluations" in result.reasons()[0]
    rows = result.evaluations()
    assert _patience_windows(rows, _cuts(rows, config, None), _cut_counts(rows, config)) == [(1, 7)]
    fig = _plateau_figure(rows, config, initial_lrs=result.initial_lrs, title=None, stop=None)
    (steps, *_) = fig.axes[1].get_lines()
    assert list(steps.get_ydata()) == [0, 0, 0, 0, 0, 0, 6, 0, 0, 0]
    assert fig.axes[1].get_ylim()[1] > 6
    assert "patience 3: without decrease over more than 3 evaluations cuts" in _texts(fig)


@pytest.mark.parametrize(
    "config",
    [
        PlateauConfig(patience=2, detector="slope", slope_window=9),
        PlateauConfig(patience=3, detector="slope", slope_window=12, slope_robust=True, cooldown=2),
        PlateauConfig(patience=2, detector="slope", mode="max", slope_confidence=0.8),
        PlateauConfig(patience=1, detector="slope", slope_window=6, warmup_steps=25, on_nonfinite="skip"),
        PlateauConfig(patience=2, smoothing=0.5, cooldown=1),
    ],
    ids=["window-9", "robust-cooldown", "max", "warmup-skip", "best-smoothing"],
)
def test_chart_cut_counts_are_the_counts_the_rule_cut_at(config: PlateauConfig) -> None:
    """On noisy histories with NaNs, the count the chart draws at each cut is the count that called for it."""
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        noise = torch.rand(60, generator=generator).tolist()
        values = [1.0 / (1 + index) + 0.3 * level for index, level in enumerate(noise)]
        values[17] = values[40] = NAN
        result = replay(values, config, lr=0.1, global_steps=[10 * (index + 1) for index in range(60)])
        assert result.cuts
        assert _cut_counts(result.evaluations(), config) == {cut.evaluation: cut.num_bad for cut in result.cuts}
