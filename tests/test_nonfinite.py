"""Non-finite values: counted as bad (torch), skipped (recorded, warned once) or refused, as on_nonfinite says."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from helpers import ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.loggers import CSVLogger

from lightning_plateau import PlateauConfig, PlateauEarlyStopping, PlateauScheduler, replay
from lightning_plateau.cli import main as explain_main

NAN, INF = math.nan, math.inf
# One value per epoch (4 steps each): NaN at evaluation 2 (epoch 1, step 8), inf at evaluation 4 (epoch 3, step 16).
VALUES = [1.0, NAN, 0.9, INF, 0.95, 0.96]


@pytest.mark.parametrize(
    ("policy", "expected_cuts", "expected_skipped"),
    [
        # torch's rule: NaN and inf are bad evaluations; 0.9 improves; inf and 0.95 make 2 bad (> patience 1): cut at 5
        ("bad", [5], []),
        # skipped: only 0.95 and 0.96 are bad after the best 0.9: the cut comes one evaluation later
        ("skip", [6], [2, 4]),
    ],
)
def test_nonfinite_policy_decides_as_the_table_says(
    tmp_path: Path, policy: str, expected_cuts: list[int], expected_skipped: list[int]
) -> None:
    """A scripted NaN and inf at known evaluations: cuts, skipped rows and replay agree with the hand computation."""
    config = PlateauConfig(patience=1, on_nonfinite=policy)  # type: ignore[arg-type]
    fit = trainer(tmp_path, max_epochs=len(VALUES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit.fit(ScriptedPlateauModel(VALUES, plateau=config))
    callback = plateau_of(fit)
    assert callback.scheduler is not None
    assert [cut.evaluation for cut in callback.scheduler.cuts] == expected_cuts
    history = callback.history
    assert [row.evaluation for row in history if row.skipped] == expected_skipped
    for row in history:
        if row.skipped:
            before = history[row.evaluation - 2]
            # left out of the rule: best and counters as the evaluation before left them
            assert (row.best, row.num_bad, row.cooldown, row.cut) == (
                before.best,
                before.num_bad,
                before.cooldown,
                False,
            )
    result = replay(
        [row.value for row in history],
        config,
        lr=0.1,
        epochs=[row.epoch for row in history],
        global_steps=[row.global_step for row in history],
    )
    assert json.dumps([vars(row) for row in result.evaluations()]) == json.dumps([vars(row) for row in history])
    assert result.skipped_evaluations == expected_skipped


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, NAN, 0.9], "val_loss is nan at evaluation 2 (epoch 1, global step 8)"),
        ([1.0, 0.9, INF], "val_loss is inf at evaluation 3 (epoch 2, global step 12)"),
        ([-INF], "val_loss is -inf at evaluation 1 (epoch 0, global step 4)"),
    ],
)
def test_nonfinite_raise_names_the_evaluation_and_value(tmp_path: Path, values: list[float], expected: str) -> None:
    """on_nonfinite='raise' stops the fit at the first non-finite value, naming it, where and how to fix it."""
    model = ScriptedPlateauModel(values, plateau=PlateauConfig(on_nonfinite="raise"))
    fit = trainer(tmp_path, max_epochs=len(values))
    with pytest.raises(ValueError, match=re.escape(expected)) as excinfo:
        fit.fit(model)
    assert "on_nonfinite='skip'" in str(excinfo.value)
    history = plateau_of(fit).history
    # the values before it are recorded, the refused one is not
    assert len(history) == next(index for index, value in enumerate(values) if not math.isfinite(value))


def test_nonfinite_skip_warns_once_and_marks_traces_and_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two skipped values: one warning (naming the first), plateau/skipped flags them, the summary counts them."""
    logger = CSVLogger(tmp_path, name="run")
    fit = trainer(tmp_path, max_epochs=len(VALUES), logger=logger)
    skipped = r"val_loss is nan at evaluation 2 \(epoch 1, global step 8\): skipped"
    with pytest.warns(UserWarning, match=skipped) as record, caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1, on_nonfinite="skip")))
    assert sum("skipped, as PlateauConfig(on_nonfinite='skip')" in str(w.message) for w in record) == 1
    with (Path(logger.log_dir) / "metrics.csv").open() as handle:
        traced = [row for row in csv.DictReader(handle) if row.get("plateau/value")]
    assert [int(float(row["plateau/skipped"])) for row in traced] == [0, 1, 0, 1, 0, 0]
    assert "plateau/warmup" not in traced[0]
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")]
    assert "non-finite: skip): 1 cut in 6 evaluations (2 skipped (not finite))" in summary


@pytest.mark.parametrize(("policy", "expected_cuts", "expected_best"), [("bad", [4], -INF), ("skip", [5], 0.9)])
def test_nonfinite_minus_inf_is_best_forever_unless_skipped(
    policy: str, expected_cuts: list[int], expected_best: float
) -> None:
    """With mode 'min' torch takes -inf as an improvement that nothing beats again; 'skip' keeps it out."""
    rows = replay([1.0, -INF, 0.9, 0.95, 0.96], PlateauConfig(patience=1, on_nonfinite=policy))  # type: ignore[arg-type]
    assert [cut.evaluation for cut in rows.cuts] == expected_cuts
    assert rows[-1].best == expected_best


def test_nonfinite_replay_raise_and_scheduler_outside_a_trainer() -> None:
    """replay with 'raise' refuses like the live run; a scheduler stepped by hand warns once when it skips."""
    with pytest.raises(ValueError, match=re.escape("val_loss is nan at evaluation 2 (epoch 1)")):
        replay([1.0, NAN], PlateauConfig(on_nonfinite="raise"), epochs=[0, 1])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = PlateauScheduler(optimizer, on_nonfinite="skip", patience=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for value in (NAN, INF, 1.0, 2.0):
            scheduler.step(value)
    assert [str(w.message).split(":")[0] for w in record] == ["val_loss is nan at evaluation 1"]
    assert scheduler.num_evaluations == 4
    assert [cut.evaluation for cut in scheduler.cuts] == [4]
    assert scheduler.snapshot().skipped is False


def test_nonfinite_explain_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """explain --on-nonfinite skip replays the skips (rows marked); raise exits 2 with the evaluation named."""
    source = tmp_path / "values.txt"
    source.write_text("1.0\nnan\n0.9\ninf\n0.95\n0.96\n")
    assert explain_main(["explain", str(source), "--patience", "1", "--on-nonfinite", "skip", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["skipped"] for row in report["evaluations"]] == [False, True, False, True, False, False]
    assert [cut["evaluation"] for cut in report["cuts"]] == [6]
    assert "on_nonfinite skip (given)" in report["settings"]
    assert explain_main(["explain", str(source), "--patience", "1", "--on-nonfinite", "skip"]) == 0
    out = capsys.readouterr().out
    assert sum("(skipped: not finite)" in line for line in out.splitlines()) == 2
    assert "2 evaluations skipped (not finite)." in out
    assert explain_main(["explain", str(source), "--on-nonfinite", "raise"]) == 2
    assert "error: val_loss is nan at evaluation 2, and PlateauConfig(on_nonfinite='raise')" in capsys.readouterr().err
    # the default says nothing of a feature that is off
    assert explain_main(["explain", str(source), "--json"]) == 0
    assert "on_nonfinite" not in json.loads(capsys.readouterr().out)["settings"]


@pytest.mark.parametrize(
    ("policy", "check_finite", "expected_stopped_epoch"),
    [
        ("bad", None, 1),  # as Lightning's EarlyStopping: the NaN stops the run
        ("skip", None, None),  # the plateau leaves the NaN out, and so does early stopping
        ("skip", True, 1),  # asked for explicitly: stop at the first non-finite value all the same
        ("bad", False, None),
    ],
)
def test_nonfinite_early_stopping_follows_the_plateau(
    tmp_path: Path, policy: str, check_finite: Optional[bool], expected_stopped_epoch: Optional[int]
) -> None:
    """PlateauEarlyStopping's check_finite defaults to the plateau's policy: a skipped value does not stop the run."""
    stopper = PlateauEarlyStopping(check_finite=check_finite)
    fit = trainer(tmp_path, max_epochs=len(VALUES), callbacks=[stopper])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1, on_nonfinite=policy)))  # type: ignore[arg-type]
    assert (stopper.stopped_epoch if stopper.stop_rule else None) == expected_stopped_epoch
    assert stopper.stop_rule == ("non_finite" if expected_stopped_epoch is not None else None)


def test_nonfinite_early_stopping_patience_skips_skipped_evaluations(tmp_path: Path) -> None:
    """Classic early-stopping patience counts the evaluations the plateau judged: skipped ones do not count."""
    values = [1.0, NAN, 1.0, NAN, 1.0, 1.0, 1.0]
    stopper = PlateauEarlyStopping(wait_for_min_lr=False, patience=3, reset_on_cut=False)
    fit = trainer(tmp_path, max_epochs=len(values), callbacks=[stopper])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit.fit(ScriptedPlateauModel(values, plateau=PlateauConfig(patience=10, on_nonfinite="skip")))
    # best at 1; judged without improvement: 3, 5, 6 -> the 3rd is evaluation 6 (epoch 5); counting every row
    # would have stopped at evaluation 4
    assert stopper.stop_rule == "patience"
    assert stopper.stopped_epoch == 5
    assert stopper.wait_count == 3


@pytest.mark.parametrize(
    ("value", "expected"), [("ignore", "'bad', 'skip' or 'raise', got 'ignore'"), (None, "got None")]
)
def test_nonfinite_config_refuses_unknown_policy(value: Any, expected: str) -> None:
    """An unknown policy names what is allowed; the default is torch's."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        PlateauConfig(on_nonfinite=value)
    assert PlateauConfig().on_nonfinite == "bad"
    assert PlateauConfig(on_nonfinite="skip").describe() == "val_loss (min), patience 10, factor 0.1, non-finite: skip"
