"""replay(): the live scheduler's decisions over a history you already have, row by row."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ScriptedPlateauModel, plateau_of, trainer
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_plateau import (
    PlateauCallback,
    PlateauConfig,
    PlateauEvaluation,
    PlateauScheduler,
    Replay,
    ReplayRow,
    replay,
)
from lightning_plateau._format import format_cut

# best at epoch 5, then nothing better: the question people ask
CLASSIC = [1.0, 0.9, 0.8, 0.7, 0.6] + [0.65] * 15
NAN = math.nan


def test_replay_classic_example_cuts_at_the_end_of_epoch_16(tmp_path: Path) -> None:
    """Best at epoch 5 with patience 10: epochs 6..15 are 10 bad ones, epoch 16 the 11th, and it cuts."""
    rows = replay(CLASSIC, PlateauConfig(patience=10), lr=1e-3, epochs=list(range(len(CLASSIC))))
    assert [row.evaluation for row in rows if row.cut] == [16]
    assert [row.num_bad for row in rows[5:16]] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]
    cut = rows[15]
    assert cut.epoch == 15
    assert cut.lrs == (1e-4,)
    assert cut.reason == (
        "epoch 15, eval 16: val_loss has not improved on 0.6000 (epoch 4) for 11 evaluations (> patience 10):"
        " lr 1e-3 -> 1e-4"
    )
    assert rows[14].lrs == (1e-3,)


@pytest.mark.parametrize(
    ("values", "fields", "expected_cuts", "final_lr"),
    [
        pytest.param([1.0, 2.0, 3.0], {"patience": 0}, [2, 3], 1e-5, id="patience-0-cuts-every-bad-one"),
        pytest.param([1.0] * 7, {"patience": 2}, [4, 7], 1e-5, id="equal-is-not-better"),
        pytest.param([1.0] * 10, {"patience": 1, "cooldown": 2}, [3, 7], 1e-5, id="cooldown-period-p+1+c"),
        pytest.param([0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3], {"patience": 1, "mode": "max"}, [4, 7], 1e-5, id="max-mode"),
        pytest.param(
            [1.0, 0.95, 0.92, 0.5, 0.45],
            {"patience": 1, "threshold": 0.1, "threshold_mode": "abs"},
            [3],
            1e-4,
            id="abs-threshold",
        ),
        pytest.param([1.0, 0.99995, 0.9999], {"patience": 1}, [3], 1e-4, id="rel-threshold-1e-4"),
        pytest.param([-1.0, -0.99, -0.98], {"patience": 1}, [3], 1e-4, id="negative-metric-gets-worse"),
        pytest.param([1.0, NAN, NAN], {"patience": 1}, [3], 1e-4, id="nan-is-bad"),
        pytest.param([1.0, 2.0, 3.0, 4.0], {"patience": 0, "min_lr": 1e-4}, [2], 1e-4, id="min-lr-floor"),
        pytest.param([3.0, 2.0, 1.0, 0.5], {"patience": 0}, [], 1e-3, id="always-improving"),
        pytest.param([1.0, 2.0], {"patience": 0, "eps": 1e-3}, [], 1e-3, id="cut-below-eps-not-applied"),
    ],
)
def test_replay_cuts_where_counted_by_hand(
    values: list[float], fields: dict[str, Any], expected_cuts: list[int], final_lr: float
) -> None:
    """Each sequence cuts at the evaluations worked out by hand from torch's rule."""
    result = replay(values, PlateauConfig(**fields), lr=1e-3)
    assert [row.evaluation for row in result if row.cut] == expected_cuts
    assert [cut.evaluation for cut in result.cuts] == expected_cuts
    assert result.final_lrs == pytest.approx((final_lr,))
    assert result[-1].lrs == pytest.approx((final_lr,))


def test_replay_rows_carry_best_bad_count_and_cooldown() -> None:
    """A flat metric with patience 1 and cooldown 2: the counters row by row, as worked out by hand."""
    rows = replay([1.0] * 10, {"patience": 1, "cooldown": 2, "factor": 0.5}, lr=1.0)
    assert [row.num_bad for row in rows] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert [row.cooldown for row in rows] == [0, 0, 2, 1, 0, 0, 2, 1, 0, 0]
    assert [row.best for row in rows] == [1.0] * 10
    assert [row.lrs[0] for row in rows] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert [row.reason is not None for row in rows] == [row.cut for row in rows]


def test_replay_best_before_any_finite_value_is_infinite() -> None:
    """NaN never improves: the best stays at +inf (min mode) until a number arrives, as in training."""
    rows = replay([NAN, NAN, 2.0], {"patience": 5})
    assert [row.best for row in rows] == [math.inf, math.inf, 2.0]


def test_replay_several_param_groups_with_per_group_min_lr() -> None:
    """One LR per group; a group at its min_lr stays there while the others keep falling."""
    result = replay([1.0, 2.0, 3.0, 4.0], {"patience": 0, "min_lr": [1e-3, 5e-3]}, lr=[0.1, 0.01])
    assert result.initial_lrs == (0.1, 0.01)
    # the fourth evaluation would cut neither group: both are at their floor
    expected = [(0.1, 0.01), (0.01, 5e-3), (1e-3, 5e-3), (1e-3, 5e-3)]
    assert [lr for row in result for lr in row.lrs] == pytest.approx([lr for lrs in expected for lr in lrs])
    assert [row.evaluation for row in result if row.cut] == [2, 3]
    assert result[1].reason is not None
    assert result[1].reason.endswith("lr [0.1, 0.01] -> [0.01, 5e-3]")


def test_replay_labels_flow_into_rows_and_reasons() -> None:
    """Epoch and step labels (two evaluations per epoch here) reach the rows and the cut's reason."""
    values = [1.0, 0.8, 0.9, 0.9, 0.9]
    result = replay(values, {"patience": 2}, epochs=[0, 0, 1, 1, 2], global_steps=[5, 10, 15, 20, 25])
    assert [(row.epoch, row.global_step) for row in result] == [(0, 5), (0, 10), (1, 15), (1, 20), (2, 25)]
    (cut,) = result.cuts
    assert (cut.evaluation, cut.epoch, cut.global_step, cut.best_epoch) == (5, 2, 25, 0)
    assert result[4].reason is not None
    assert result[4].reason.startswith("epoch 2, eval 5: val_loss has not improved on 0.8000 (epoch 0) for 3")


def test_replay_is_a_sequence_of_rows() -> None:
    """Indexing, negative indexing, slicing, iteration and cut_rows agree; rows convert to PlateauEvaluation."""
    result = replay(CLASSIC, {"patience": 3})
    assert isinstance(result, Replay)
    rows = list(result)
    assert len(result) == len(rows) == len(CLASSIC)
    assert [result[i] for i in range(len(result))] == rows
    assert result[-1] == rows[-1]
    assert result[3:7] == rows[3:7]
    assert result[::-5] == rows[::-5]
    assert result.cut_rows() == [row for row in rows if row.cut]
    assert all(isinstance(row, ReplayRow) for row in rows)
    evaluations = result.evaluations()
    assert all(isinstance(row, PlateauEvaluation) for row in evaluations)
    # a replay has no cut limit, so no cut is ever withheld; without window_steps no row has a window, without
    # restore_best_on_cut nothing is restored, without warmup or skip no row is in either, without smoothing no
    # row has an average
    assert [tuple(row.__dict__.values()) for row in evaluations] == [
        (*row[:9], False, None, None, False, False, None) for row in rows
    ]
    assert result.reasons() == [row.reason for row in rows if row.cut]
    assert repr(result) == "Replay(20 evaluations, 3 cuts, val_loss (min), patience 3, factor 0.1)"
    with pytest.raises(IndexError, match="out of range for 20 rows"):
        result[20]


def test_replay_of_nothing_is_empty() -> None:
    """No values, no rows, no cuts; the LR is the one given."""
    result = replay([], lr=0.5)
    assert (len(result), list(result), result.cuts, result.final_lrs) == (0, [], [], (0.5,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, r"`lr` must be a finite float > 0 or a non-empty list of them .*, got 0.0"),
        ({"lr": []}, r"`lr` must be .*, got \[\]"),
        ({"lr": [0.1, "x"]}, r"`lr` must be .*, got \[0.1, 'x'\]"),
        ({"lr": math.inf}, r"`lr` must be .*, got inf"),
        ({"epochs": [0, 1]}, r"`epochs` must give one label per value: 3 values, got 2 labels"),
        ({"global_steps": [1, 2, 3, 4]}, r"`global_steps` must give one label per value: 3 values, got 4 labels"),
        ({"values": [1.0, "abc", 2.0]}, r"`values` must be numbers; value 2 is 'abc'"),
        ({"values": "1.0"}, r"`values` must be numbers, one per evaluation, got the string '1.0'"),
        ({"config": {"patience": -1}}, r"`patience` must be an int >= 0, got -1"),
        ({"config": {"min_lr": [0.0, 0.0]}}, r"`min_lr` has 2 values \[0.0, 0.0\] but the optimizer has 1 param"),
    ],
)
def test_replay_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    """Bad LRs, labels, values and configs raise ValueError naming what was given."""
    arguments: dict[str, Any] = {"values": [1.0, 2.0, 3.0], "config": None}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        replay(arguments.pop("values"), arguments.pop("config"), **arguments)


def _fit(tmp_path: Path, values: list[float], plateau: PlateauConfig, **kwargs: Any) -> PlateauCallback:
    model = ScriptedPlateauModel(values, plateau=plateau, lr=0.1, train_batches=2)
    fit = trainer(tmp_path, **kwargs)
    fit.fit(model)
    callback = plateau_of(fit)
    return callback


@pytest.mark.parametrize(
    ("values", "plateau", "trainer_kwargs"),
    [
        pytest.param(
            [1.0, 0.5, 0.6, 0.7, 0.4, 0.45, 0.45, 0.45, 0.45, 0.3],
            PlateauConfig(patience=1, cooldown=1, factor=0.5),
            {"max_epochs": 10},
            id="one-evaluation-per-epoch",
        ),
        pytest.param(
            [2.0, 1.0, 1.5, 1.5, 1.5, 0.9, 1.2, 1.2],
            PlateauConfig(patience=2, factor=0.1, min_lr=5e-3),
            {"max_epochs": 4, "val_check_interval": 0.5},
            id="two-evaluations-per-epoch-and-min-lr",
        ),
    ],
)
def test_replay_equals_live_training(
    tmp_path: Path, values: list[float], plateau: PlateauConfig, trainer_kwargs: dict[str, Any]
) -> None:
    """Replaying what a real fit judged gives that fit's history and cuts, field for field."""
    callback = _fit(tmp_path, values, plateau, **trainer_kwargs)
    history = callback.history
    scheduler = callback.scheduler
    assert scheduler is not None
    assert len(history) == len(values)
    assert scheduler.cuts, "the scripted sequence must cut at least once"
    result = replay(
        [row.value for row in history],
        plateau,
        lr=0.1,
        epochs=[row.epoch for row in history],
        global_steps=[row.global_step for row in history],
    )
    assert result.evaluations() == history
    assert result.cuts == scheduler.cuts
    assert result.reasons() == [format_cut(cut, plateau) for cut in scheduler.cuts]


# Deterministic and quick: the same examples on every run, no example database written into the tree.
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    values=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, NAN]) | st.floats(-2, 2), max_size=30),
    patience=st.integers(0, 3),
    cooldown=st.integers(0, 2),
)
def test_replay_rows_agree_with_the_scheduler_snapshot(values: list[float], patience: int, cooldown: int) -> None:
    """Every row equals the scheduler's own snapshot after that value, stepped one value at a time."""
    config = PlateauConfig(patience=patience, cooldown=cooldown, factor=0.5)
    scheduler = PlateauScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=1.0), config)
    snapshots = []
    for value in values:
        scheduler.step(value)
        snapshots.append(scheduler.snapshot())
    result = replay(values, config, lr=1.0)
    expected = [tuple(row.__dict__.values())[:9] for row in snapshots]
    assert not any(row.withheld for row in snapshots)
    got = [row[:9] for row in result]
    # NaN != NaN: compare their text
    assert repr(got) == repr(expected)
    assert [row[:9] for row in result.cut_rows()] == [row for row in got if row[8]]


def test_replay_stays_the_function_after_its_module_is_imported() -> None:
    """`lightning_plateau.replay` is the function even when the command line imported its module first."""
    import subprocess
    import sys

    code = (
        "import lightning_plateau.cli, lightning_plateau.replay\n"
        "from lightning_plateau import replay\n"
        "assert callable(replay) and replay.__name__ == 'replay', replay\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
