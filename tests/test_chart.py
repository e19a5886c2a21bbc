"""The plateau chart: a real PNG for 0, 1 and several cuts, and the geometry of its shaded spans."""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest
import torch

from lightning_plateau import PlateauConfig, PlateauEvaluation, PlateauScheduler
from lightning_plateau.chart import _cooldown_spans, _cuts, _open_window, _patience_windows, plot_plateau

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FALLING = [1.0, 0.8, 0.65, 0.55, 0.5, 0.47, 0.45, 0.44]
ONE_CUT = [2.3, 1.2, 0.8, 0.6, 0.55, 0.56, 0.57, 0.555, 0.56, 0.5, 0.45]
SEVERAL_CUTS = [2.0, 1.0, 0.6, 0.5, 0.52, 0.51, 0.53, 0.5, 0.5, 0.52, 0.49, 0.5, 0.5, 0.5, 0.5, 0.5]


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
    assert (width, height) == (1210, 660)
    assert 20_000 < path.stat().st_size < 1_000_000


def test_plot_plateau_empty_history_still_writes_a_png(tmp_path: Path) -> None:
    """No evaluation at all (a fit stopped early, an empty replay) gives a labelled, empty chart."""
    path = plot_plateau([], PlateauConfig(), str(tmp_path / "empty.png"), title="nothing yet")

    assert png_size(path) == (1210, 660)


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

    assert _patience_windows(rows, config, cuts) == windows
    assert _cooldown_spans(rows) == cooldowns
    assert _open_window(rows) == open_window
