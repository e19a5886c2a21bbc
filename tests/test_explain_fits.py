"""explain replays one fit as it ran: a reused Trainer's fresh fit warms up from its own first step, a log holding two
fits is refused (never replayed as one run), and a run resumed with a longer warmup_steps judges as it did."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_plateau import PlateauConfig, PlateauEvaluation, replay
from lightning_plateau.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`",
    "ignore:.*log_every_n_steps.*",
    "ignore:The checkpoint's plateau policy differs.*",
    "ignore:Checkpoint directory .* exists and is not empty.*",
)

REUSED = PlateauConfig(patience=1, warmup_steps=6, warmup_start_factor=0.25)


class _Stored(ScriptedPlateauModel):
    """The plateau in the hyperparameters (the README's pattern); the script position in the checkpoint."""

    def __init__(self, values: Sequence[float], plateau: PlateauConfig) -> None:
        super().__init__(values, plateau=plateau)
        self.save_hyperparameters("plateau")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["script_position"] = self.evaluations

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = checkpoint["script_position"]


def explain(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["explain", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(row["evaluation"], row["warmup"], row["cut"], row["lrs"]) for row in report["evaluations"]]


def _live(history: Sequence[PlateauEvaluation]) -> list[tuple[Any, ...]]:
    return [(row.evaluation, row.warmup, row.cut, [pytest.approx(lr) for lr in row.lrs]) for row in history]


@pytest.fixture(scope="module")
def reused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PlateauEvaluation]]:
    """Two fits of fresh models on one Trainer (the second starts at step 12), one CSV log, a checkpoint per epoch."""
    root = tmp_path_factory.mktemp("reused")
    saver = ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1)
    fit = trainer(root, max_epochs=3, callbacks=[saver], enable_checkpointing=True, logger=CSVLogger(root, name="run"))
    fit.fit(_Stored([1.0] * 6, REUSED))
    fit.fit_loop.max_epochs = 6
    fit.fit(_Stored([1.0] * 6, REUSED))
    history = plateau_of(fit).history
    expected = [(16, True, False), (20, False, False), (24, False, False)]
    assert [(row.global_step, row.warmup, row.cut) for row in history] == expected
    return root, history


def test_explain_reused_trainer_fit_warms_up_from_its_own_start(
    reused: tuple[Path, list[PlateauEvaluation]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The second fit's checkpoint: its warmup counts from step 12, so step 16 is in it and no cut is made."""
    root, live = reused
    code, out, err = explain(capsys, root / "ckpt" / "epoch=5-step=24.ckpt", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert _rows(report) == _live(live)
    assert report["cuts"] == []
    assert report["warmup_start_step"] == 12
    assert "warmup counted from global step 12, where the run's fit started" in report["settings"]
    code, out, _ = explain(capsys, root / "ckpt" / "epoch=5-step=24.ckpt")
    assert "1 evaluation in the warmup (global step < 18) not judged." in out


def test_explain_log_of_two_fits_is_refused_and_one_fit_of_it_replays_exactly(
    reused: tuple[Path, list[PlateauEvaluation]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Both fits in one metrics.csv: refused, naming the lines; the second fit's lines alone replay as it ran."""
    root, live = reused
    metrics = root / "run" / "version_0" / "metrics.csv"
    code, out, err = explain(capsys, metrics.parent)
    assert (code, out) == (2, "")
    assert f"{metrics} holds more than one fit: its plateau traces count evaluations again at line 9" in err
    assert "(plateau/evaluation 1, after 3 at line 7)" in err
    assert "a checkpoint it wrote (.ckpt)" in err
    # a copy holding the header and the second fit's lines (its first value is on line 8, before its trace)
    lines = metrics.read_text().splitlines(keepends=True)
    (tmp_path / "metrics.csv").write_text(lines[0] + "".join(lines[7:]))
    (tmp_path / "hparams.yaml").write_text((metrics.parent / "hparams.yaml").read_text())
    code, out, err = explain(capsys, tmp_path, "--json")
    assert (code, err) == (0, "")
    assert _rows(json.loads(out)) == _live(live)


def test_replay_warmup_start_step_counts_the_warmup_from_there() -> None:
    """replay(warmup_start_step=12): steps 16 and 17 are in a 6-step warmup, 18 is not; a step before 12 is refused."""
    steps = [16, 17, 18, 20, 22]
    result = replay([1.0, 0.9, 0.9, 0.9, 0.9], REUSED, lr=0.1, global_steps=steps, warmup_start_step=12)
    assert [row.warmup for row in result] == [True, True, False, False, False]
    ramp = [pytest.approx(0.1 * (0.25 + 0.75 * taken / 6)) for taken in (4, 5)]
    assert [row.lrs[0] for row in result][:2] == ramp
    assert [cut.evaluation for cut in result.cuts] == [5]
    with pytest.raises(ValueError, match="value 1 is at step 8, before the step the warmup counts from"):
        replay([1.0], REUSED, global_steps=[8], warmup_start_step=12)
    with pytest.raises(ValueError, match="`warmup_start_step` must be an int >= 0, got -1"):
        replay([1.0], REUSED, global_steps=[8], warmup_start_step=-1)


_LONGER = [1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]


def _resumed_longer(root: Path, first_warmup: int) -> tuple[Path, Path, list[PlateauEvaluation]]:
    """A fit with warmup_steps=first_warmup to epoch 3, resumed with warmup_steps=40 to epoch 8.

    Returns the last checkpoint, a log of the whole run (both fits' rows in one metrics.csv, as a logger that goes on
    with a resumed run holds them: CSVLogger starts a version afresh) and the live history.
    """
    first = trainer(
        root,
        max_epochs=3,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
        enable_checkpointing=True,
        logger=CSVLogger(root, name="run"),
    )
    first.fit(_Stored(_LONGER, PlateauConfig(patience=1, warmup_steps=first_warmup)))
    resumed = trainer(
        root,
        max_epochs=8,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True)],
        enable_checkpointing=True,
        logger=CSVLogger(root, name="run"),
    )
    with pytest.warns(UserWarning, match="does not start again"):
        resumed.fit(_Stored(_LONGER, PlateauConfig(patience=1, warmup_steps=40)), ckpt_path=root / "ckpt" / "last.ckpt")
    history = plateau_of(resumed).history
    assert not any(row.warmup for row in history[2:])
    rows = []
    for version in ("version_0", "version_1"):
        with (root / "run" / version / "metrics.csv").open() as handle:
            rows += list(csv.DictReader(handle))
    merged = root / "merged"
    merged.mkdir()
    with (merged / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({key for row in rows for key in row}))
        writer.writeheader()
        writer.writerows(rows)
    (merged / "hparams.yaml").write_text((root / "run" / "version_1" / "hparams.yaml").read_text())
    return root / "ckpt" / "last.ckpt", merged, history


@pytest.mark.parametrize(
    ("first_warmup", "note"),
    [
        pytest.param(4, "its warmup ended at global step 4, after 4 steps", id="warmup-over"),
        pytest.param(0, "it had no warmup", id="no-warmup"),
    ],
)
def test_explain_run_resumed_with_a_longer_warmup_judges_as_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first_warmup: int, note: str
) -> None:
    """Resumed with warmup_steps=40 after a warmup that was over (or none): the checkpoint and the log replay every
    evaluation judged, the run's cuts, saying why the stored 40 is not replayed; --warmup-steps 40 is a what-if."""
    checkpoint, log_dir, live = _resumed_longer(tmp_path, first_warmup)
    assert [row.evaluation for row in live if row.cut] == [4, 6, 8]
    for source in (checkpoint, log_dir):
        code, out, err = explain(capsys, source, "--json")
        assert code == 0, err
        assert _rows(json.loads(out)) == _live(live)
        assert "the run's settings say warmup_steps 40" in err
        assert "warning" not in err
    code, _, err = explain(capsys, checkpoint)
    assert note in err
    assert "Replayed with warmup_steps" in err
    code, out, err = explain(capsys, checkpoint, "--warmup-steps", "40", "--json")
    assert code == 0
    assert [row["warmup"] for row in json.loads(out)["evaluations"]] == [True] * 8
    assert "judged after the run's warmup" in err


def test_explain_log_whose_stored_warmup_the_record_contradicts_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 10-step warmup over at step 10, resumed with 40 into the same log: its rows say the warmup ended between
    steps 9 and 12, the stored setting says 40. Refused with the bounds; given them, the run's rows."""
    _, log_dir, live = _resumed_longer(tmp_path, 10)
    assert [row.warmup for row in live][:3] == [True, True, False]
    assert [row.evaluation for row in live if row.cut] == [5, 7]
    code, out, err = explain(capsys, log_dir)
    assert (code, out) == (2, "")
    assert "evaluation 3 (epoch 2, global step 12) was judged after the run's warmup" in err
    assert "The run stores its last fit's setting: it changed at a resume" in err
    assert "Pass --warmup-steps with the run's warmup_steps (by its record, from 9 to 12)" in err
    code, out, err = explain(capsys, log_dir, "--warmup-steps", "10", "--json")
    assert (code, err) == (0, "")
    assert _rows(json.loads(out)) == _live(live)


def test_explain_tensorboard_log_of_two_fits_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reused Trainer's two fits in one TensorBoardLogger version: refused, naming the steps where each ends."""
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, name="tb")
    fit = trainer(tmp_path, max_epochs=2, logger=logger)
    fit.fit(_Stored([1.0] * 4, REUSED))
    fit.fit_loop.max_epochs = 4
    fit.fit(_Stored([1.0] * 4, REUSED))
    code, out, err = explain(capsys, logger.log_dir)
    assert (code, out) == (2, "")
    assert "holds more than one fit: its plateau traces count evaluations again at step 11" in err
    assert "(plateau/evaluation 1, after 2 at step 7)" in err


def test_explain_wandb_run_of_two_fits_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A W&B run whose plateau/evaluation counts again from 1 at its 4th history row: refused, naming the rows."""
    pytest.importorskip("wandb")
    from test_explain_record import _write_wandb

    rows = [
        {"val_loss": 1.0, "plateau/lr": 0.1, "plateau/evaluation": evaluation, "_step": step}
        for step, evaluation in enumerate([1, 2, 3, 1, 2])
    ]
    run = _write_wandb(tmp_path / "run-two.wandb", rows, finished=True)
    code, out, err = explain(capsys, run)
    assert (code, out) == (2, "")
    assert "count evaluations again at history row 4 (_step 3) (plateau/evaluation 1, after 3 at history row 3" in err
