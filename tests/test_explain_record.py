"""explain shows what the run recorded: its restores, a withheld cut, its skips and warmup, its judged window means.

Where a setting that changes decisions was not stored with the run, explain names it as assumed, and refuses (naming
the evaluation, the record and the option to pass) where the run's own record contradicts the assumption.
"""

from __future__ import annotations

import csv
import json
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
from helpers import ScriptedModel, ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from test_windows import CASES, _config, _fit

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauEarlyStopping, replay
from lightning_plateau._wandb_file import read_run
from lightning_plateau.chart import _plateau_figure
from lightning_plateau.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`",  # the resumed Trainer needs no ModelCheckpoint
    "ignore:.*log_every_n_steps.*",
    "ignore:.*holds no best weights.*",  # a resume that turns restore_best_on_cut on: the point of a test here
    "ignore:The checkpoint's plateau policy differs.*",
)

NAN = math.nan


def explain(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["explain", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


class _Resumable(ScriptedPlateauModel):
    """A scripted validation metric whose script position is in the checkpoint, so a resume goes on with it; the
    plateau is stored in the hyperparameters (the README's pattern)."""

    def __init__(self, values: Sequence[float], plateau: PlateauConfig, **kwargs: Any) -> None:
        super().__init__(values, plateau=plateau, **kwargs)
        self.save_hyperparameters("plateau")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["script_position"] = self.evaluations

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = checkpoint["script_position"]


def _checkpointed(
    root: Path,
    values: Sequence[float],
    plateau: PlateauConfig,
    epochs: int,
    *,
    callbacks: Sequence[Any] = (),
    ckpt_path: Optional[Path] = None,
    **kwargs: Any,
) -> Any:
    """Fit up to epoch ``epochs`` with a last.ckpt in ``root`` (from ``ckpt_path`` if given); return the Trainer."""
    fit = trainer(
        root,
        max_epochs=epochs,
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True), *callbacks],
        **kwargs,
    )
    fit.fit(_Resumable(values, plateau), ckpt_path=ckpt_path)
    return fit


@pytest.mark.parametrize(
    ("values", "first", "then", "restores", "why"),
    [
        # off for the first 3 evaluations, on from the resume: the cuts of 4 and 6 restored nothing (no best weights
        # were kept before the resume), the cut of 9 those of evaluation 7, the first best after it.
        pytest.param(
            [1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.4, 0.8, 0.8, 0.8], False, True, [None, None, 7], "turned on", id="on"
        ),
        # on for the first 5 evaluations, off from the resume: only the cut of 4 restored (from evaluation 2)
        pytest.param([1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], True, False, [2, None, None], "turned off", id="off"),
    ],
)
def test_explain_shows_the_restores_the_run_recorded(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    values: list[float],
    first: bool,
    then: bool,
    restores: list[Optional[int]],
    why: str,
) -> None:
    """restore_best_on_cut changed at a resume: the cuts show the run's restores, and a warning says why they differ."""
    stop = 3 if then else 5
    _checkpointed(tmp_path / "a", values, PlateauConfig(patience=1, restore_best_on_cut=first), stop)
    resumed = _checkpointed(
        tmp_path / "b",
        values,
        PlateauConfig(patience=1, restore_best_on_cut=then),
        len(values),
        ckpt_path=tmp_path / "a" / "last.ckpt",
    )
    live = plateau_of(resumed).scheduler.cuts
    assert [cut.restored_from for cut in live] == restores
    code, out, err = explain(capsys, tmp_path / "b" / "last.ckpt", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [(cut["evaluation"], cut["restored_from"]) for cut in report["cuts"]] == [
        (cut.evaluation, cut.restored_from) for cut in live
    ]
    assert f"({why} at a resume)" in report["warning"]
    assert "The cuts show the restores the run recorded." in err
    code, out, _ = explain(capsys, tmp_path / "b" / "last.ckpt", "--only-cuts")
    restored = [line.rsplit("; ", 1)[-1] for line in out.splitlines() if line.startswith("     -> ")]
    expected = [
        "no weights restored (no best weights were kept)" if source is None else f"weights restored from eval {source}"
        for source in restores
    ]
    assert [text.split(" (epoch")[0] for text in restored] == expected


def test_explain_shows_a_cut_withheld_by_max_reductions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PlateauEarlyStopping(max_reductions=1): the 2nd cut is withheld and the run stops; explain stops there too."""
    values = [1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    logger = CSVLogger(tmp_path, name="csv")
    fit = _checkpointed(
        tmp_path / "ckpt",
        values,
        PlateauConfig(patience=1, restore_best_on_cut=True),
        len(values),
        logger=logger,
        callbacks=[PlateauEarlyStopping(max_reductions=1)],
    )
    scheduler = plateau_of(fit).scheduler
    assert [cut.evaluation for cut in scheduler.cuts] == [4]
    assert scheduler.withheld is not None
    assert scheduler.withheld.evaluation == 6
    final = fit.optimizers[0].param_groups[0]["lr"]

    code, out, err = explain(capsys, tmp_path / "ckpt" / "last.ckpt", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert [cut["evaluation"] for cut in report["cuts"]] == [4]
    assert report["withheld"]["evaluation"] == 6
    assert report["final_lrs"] == [pytest.approx(final)]
    assert report["num_evaluations"] == 6
    assert report["evaluations"][-1]["withheld"] is True
    assert "PlateauEarlyStopping(max_reductions=1) (from the checkpoint's plateau history" in report["settings"]
    code, out, _ = explain(capsys, tmp_path / "ckpt" / "last.ckpt")
    assert "(cut withheld: the run stopped)" in out
    assert "cut 2 withheld, as PlateauEarlyStopping(max_reductions=1) allows 1 cut: the run stops here, lr stays" in out
    assert "At evaluation 6 (epoch 5) cut 2 was withheld" in out
    assert "weights of evaluations 2, 2" not in out

    # The log traces the withheld cut (plateau/withheld, logged under a cut limit): explain reads it there too.
    code, out, err = explain(capsys, logger.log_dir, "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert ([cut["evaluation"] for cut in report["cuts"]], report["withheld"]["evaluation"]) == ([4], 6)
    assert "PlateauEarlyStopping(max_reductions=1) (from " in report["settings"]
    # A log without that column (an older version's, or with the column dropped) says what it assumes.
    metrics = Path(logger.log_dir) / "metrics.csv"
    rows = list(csv.DictReader(metrics.open()))
    kept = [name for name in rows[0] if name != "plateau/withheld"]
    with metrics.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    code, out, err = explain(capsys, logger.log_dir, "--only-cuts")
    assert code == 0
    assert "this replay cuts the lr 0.01 -> 1e-3, but the run's LR stayed 0.01" in err
    assert "pass --max-reductions 1" in err
    code, out, err = explain(capsys, logger.log_dir, "--max-reductions", "1", "--restore-best-on-cut", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert ([cut["evaluation"] for cut in report["cuts"]], report["withheld"]["evaluation"]) == ([4], 6)
    assert "PlateauEarlyStopping(max_reductions=1) (given)" in report["settings"]


class _Plain(ScriptedModel):
    """No mixin and no save_hyperparameters: a PlateauCallback given to the Trainer, which stores no settings."""


def _unstored_run(tmp_path: Path, values: list[float], **callback: Any) -> tuple[PlateauCallback, Path]:
    plateau = PlateauCallback(**{"patience": 1, **callback})
    logger = CSVLogger(tmp_path, name="run")
    trainer(tmp_path, max_epochs=len(values), logger=logger, callbacks=[plateau]).fit(_Plain(values))
    return plateau, Path(logger.log_dir)


@pytest.mark.parametrize(
    ("values", "setting", "message", "option"),
    [
        pytest.param(
            [1.0, 0.9, NAN, 0.95, 0.8, 0.85, 0.85, 0.85],
            {"on_nonfinite": "skip"},
            "evaluation 3 (epoch 2, global step 12) was skipped by the run (plateau/skipped of",
            ["--on-nonfinite", "skip"],
            id="skip",
        ),
        pytest.param(
            [0.5, 0.9, 0.8, 0.7, 0.75, 0.75, 0.75, 0.75],
            {"warmup_steps": 6},
            "evaluation 1 (epoch 0, global step 4) was in the run's warmup, not judged (plateau/warmup of",
            ["--warmup-steps", "6"],
            id="warmup",
        ),
    ],
)
def test_explain_refuses_an_assumed_setting_the_run_recorded_otherwise(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    values: list[float],
    setting: dict[str, Any],
    message: str,
    option: list[str],
) -> None:
    """The run stored no settings but its traces mark a skip or a warmup: refused, naming the option; given, exact."""
    plateau, log_dir = _unstored_run(tmp_path, values, **setting)
    for compared in ([], ["2"]):  # one policy, or a what-if table of several
        code, out, err = explain(capsys, log_dir, "--patience", "1", *compared)
        assert (code, out) == (2, "")
        assert message in err
        assert f"Pass {option[0]}" in err
    code, out, err = explain(capsys, log_dir, "--patience", "1", *option, "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert [(cut["evaluation"], cut["lrs_after"]) for cut in report["cuts"]] == [
        (cut.evaluation, list(cut.lrs_after)) for cut in plateau.scheduler.cuts
    ]
    # the settings the run did not store, and nobody gave, are named as assumed
    assert "restore_best_on_cut off, smoothing 0, detector best (assumed: not stored with the run" in report["settings"]
    other = "warmup_steps 0" if "skip" in option else "on_nonfinite bad"
    assert other in report["settings"].split("(assumed: not stored with the run")[0]


def test_explain_given_setting_the_record_contradicts_is_a_warned_what_if(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--on-nonfinite bad given on a run that skipped: replayed as asked, with a warning at the skipped evaluation."""
    _, log_dir = _unstored_run(tmp_path, [1.0, 0.9, NAN, 0.95, 0.8], on_nonfinite="skip")
    code, _, err = explain(capsys, log_dir, "--patience", "1", "--on-nonfinite", "bad")
    assert code == 0
    assert "evaluation 3 (epoch 2, global step 12) was skipped by the run" in err
    assert "The rows from there on show what these settings would do, not what the run did." in err


def test_explain_refuses_an_assumed_warmup_start_factor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--warmup-steps given, the start factor not: the run's warmup LR says it was not the default, and which it was."""
    plateau, log_dir = _unstored_run(tmp_path, [0.5, 0.9, 0.8, 0.7, 0.75], warmup_steps=10, warmup_start_factor=0.5)
    code, _, err = explain(capsys, log_dir, "--patience", "1", "--warmup-steps", "10")
    assert code == 2
    assert "in the warmup, the run's LR was 0.07, this replay's is 0.046 with warmup_start_factor 0.1" in err
    assert "Pass --warmup-start-factor with the run's (its LR there says 0.5)." in err
    code, _out, err = explain(
        capsys, log_dir, "--patience", "1", "--warmup-steps", "10", "--warmup-start-factor", "0.5"
    )
    assert (code, err) == (0, "")
    assert [row.lrs for row in plateau.history][:3] == [(pytest.approx(0.07),), (pytest.approx(0.09),), (0.1,)]


def test_explain_windows_replays_the_means_the_run_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Gradient accumulation: the log keeps one micro-batch per step; explain replays plateau/value by default, refuses
    to rebuild windows whose means are not the run's, and names the windows' steps in every reason."""
    spec: dict[str, Any] = CASES["gradient-accumulation"]
    logger = CSVLogger(tmp_path, name="run")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _, fit = _fit(
        tmp_path,
        spec["values"],
        _config(spec["window_steps"], spec["patience"]),
        batches=spec["batches"],
        logger=logger,
        log_every_n_steps=1,
        callbacks=[checkpoint],
        enable_checkpointing=True,
        **spec["trainer"],
    )
    live = plateau_of(fit).scheduler
    assert [cut.window for cut in live.cuts] == spec["cuts"]
    for source in (logger.log_dir, tmp_path / "ckpt" / "last.ckpt"):
        code, out, err = explain(capsys, source, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert [cut["window"] for cut in report["cuts"]] == [list(window) for window in spec["cuts"]]
        assert [row["window"] for row in report["evaluations"]] == [[1, 2], [3, 4], [5, 6]]
        assert [cut["reason"] for cut in report["cuts"]] == [
            "steps 5-6, eval 3: train_loss has not improved on 2.5000 (steps 3-4) for 1 evaluations (> patience 0):"
            " lr 0.1 -> 0.01"
        ]
        assert report["warning"] is None
    code, out, err = explain(capsys, logger.log_dir, "--monitor", "train_loss")
    assert (code, out) == (2, "")
    assert "but the run judged 3.0000 there" in err
    assert "under gradient accumulation one micro-batch's" in err
    # another window_steps is a what-if on the per-step values: replayed, with what it assumes said
    code, out, err = explain(capsys, logger.log_dir, "--window-steps", "3")
    assert code == 0
    assert "2 evaluations of train_loss" in out
    assert "assuming they are every value the run judged" in err


@pytest.mark.parametrize(
    ("trainer_yaml", "message"),
    [
        ("accumulate_grad_batches: 2", "the run accumulated gradients over 2 batches"),
        ("devices: 2", "the run trained on 2 processes"),
        ("accumulate_grad_batches: 1\n  devices: 1", None),
        ("", "assuming they are every value the run judged"),
    ],
)
def test_explain_windows_of_a_column_without_traces_follow_the_stored_trainer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trainer_yaml: str, message: Optional[str]
) -> None:
    """No plateau/value to check the means against: a LightningCLI config.yaml saying they cannot be the run's is
    refused; one saying they are, replayed; none, replayed with what is assumed said."""
    (tmp_path / "metrics.csv").write_text("step,train_loss\n" + "".join(f"{s},{1 + s % 3}\n" for s in range(12)))
    (tmp_path / "config.yaml").write_text(
        f"trainer:\n  {trainer_yaml or 'max_epochs: 3'}\nmodel:\n  plateau:\n    monitor: train_loss\n"
        "    window_steps: 3\n"
    )
    code, out, err = explain(capsys, tmp_path / "metrics.csv")
    if message is not None and "assuming" not in message:
        assert (code, out) == (2, "")
        assert message in err
        return
    assert code == 0
    assert "4 evaluations of train_loss" in out
    assert (message is not None and message in err) or (message is None and err == "")


def test_explain_summary_of_a_history_all_in_the_warmup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every evaluation in the warmup: the summary says the LR the warmup reached, not one the run never had."""
    logger = CSVLogger(tmp_path, name="run")
    model = _Resumable([0.5, 0.4, 0.3], PlateauConfig(warmup_steps=100, warmup_start_factor=0.5), lr=0.2)
    fit = trainer(tmp_path, max_epochs=3, logger=logger)
    fit.fit(model)
    assert [row.warmup for row in plateau_of(fit).history] == [True, True, True]
    code, out, err = explain(capsys, logger.log_dir)
    assert (code, err) == (0, "")
    summary = out.splitlines()[-1]
    assert "the lr stays" not in summary
    assert summary == (
        "No evaluation judged: all 3 evaluations fall in the warmup (global step < 100). The lr rose from 0.1 to"
        " 0.112 by the last (global step 12); the warmup ends at 0.2 at step 100, after this history."
    )


def _write_wandb(path: Path, rows: list[dict[str, float]], *, finished: bool) -> Path:
    """An offline W&B run file: a config record, one history record per row, and an exit record when finished."""
    import wandb.proto.wandb_internal_pb2 as pb

    records = [pb.Record(config=pb.ConfigRecord(update=[pb.ConfigItem(key="lr", value_json="0.1")]))]  # type: ignore[attr-defined]
    for row in rows:
        items = [pb.HistoryItem(key=key, value_json=json.dumps(value)) for key, value in row.items()]  # type: ignore[attr-defined]
        records.append(pb.Record(history=pb.HistoryRecord(item=items)))  # type: ignore[attr-defined]
    if finished:
        records.append(pb.Record(exit=pb.RunExitRecord(exit_code=0)))  # type: ignore[attr-defined]
    data = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for record in records:
        payload = record.SerializeToString()
        crc = zlib.crc32(payload, zlib.crc32(bytes([1])))
        data += struct.pack("<IHB", crc, len(payload), 1) + payload  # one FULL chunk each: all fit the first block
    path.write_bytes(bytes(data))
    return path


def test_explain_an_unfinished_wandb_run_says_to_finish_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No exit record: the run is still open (or died). A column not written yet is an error saying so, not 'no
    column'; what is there is replayed with a warning; a finished run says nothing of it."""
    pytest.importorskip("wandb")
    rows = [{"val_loss": value, "epoch": epoch} for epoch, value in enumerate([1.0, 0.9, 0.9, 0.9])]
    open_run = _write_wandb(tmp_path / "run-open.wandb", rows, finished=False)
    assert read_run(open_run).finished is False
    code, _, err = explain(capsys, open_run, "--patience", "1")
    assert code == 0
    assert "warning: The W&B run" in err
    assert "is not finished (its file has no exit record)" in err
    assert "Finish the run (wandb.finish(), or let the process that logs it end), then explain it" in err
    empty = _write_wandb(tmp_path / "run-empty.wandb", [], finished=False)
    code, out, err = explain(capsys, empty)
    assert (code, out) == (2, "")
    assert "is not finished (its file has no exit record)" in err
    assert "It holds no column 'val_loss' yet (its columns: [])." in err
    finished = _write_wandb(tmp_path / "run-done.wandb", rows, finished=True)
    assert read_run(finished).finished is True
    assert explain(capsys, finished, "--patience", "1")[::2] == (0, "")
    truncated = tmp_path / "run-cut.wandb"
    truncated.write_bytes(finished.read_bytes()[:-3])
    code, _, err = explain(capsys, truncated)
    assert code == 2
    assert "is truncated" in err
    assert "The run is likely still open" in err
    assert "wandb.finish()" in err


def test_chart_title_wraps_instead_of_clipping() -> None:
    """A title with every setting on is wider than the figure: it is wrapped onto lines that fit, nothing cut off."""
    config = PlateauConfig(
        monitor="train_loss",
        patience=1,
        cooldown=2,
        warmup_steps=2,
        on_nonfinite="skip",
        window_steps=3,
        restore_best_on_cut=True,
    )
    result = replay([1.0, 0.2] * 4 + [0.5] * 8 + [0.6] * 30, config, lr=0.1)
    fig = _plateau_figure(result.evaluations(), config, initial_lrs=None, title=None, stop=None)
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle
    box = title.get_window_extent(renderer)
    assert box.x1 <= fig.bbox.width
    text = title.get_text()
    assert "\n" in text
    counts = f"{len(result.cuts)} cuts in {len(result)} evaluations"
    assert text.replace("\n", " ") == f"Plateau on {config.describe()}: {counts}"
    # the axes, their labels and the top axis of window steps start below the title's last line
    axes_top = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes)
    assert box.y0 >= axes_top


def test_replay_windows_and_max_reductions() -> None:
    """replay(windows=...) judges the given window means as they are, naming their steps; max_reductions withholds
    the cut beyond it and ends the replay there."""
    config = PlateauConfig(monitor="train_loss", window_steps=3, patience=0)
    means = [1.0, 0.5, 0.6, 0.7, 0.8]
    result = replay(means, config, lr=0.1, windows=[(1, 3), (4, 6), (7, 9), (10, 12), (13, 15)])
    assert [row.value for row in result] == means
    assert [cut.window for cut in result.cuts] == [(7, 9), (10, 12), (13, 15)]
    assert result.reasons()[0].startswith("steps 7-9, eval 3: train_loss has not improved on 0.5000 (steps 4-6)")
    limited = replay(means, config, lr=0.1, windows=[(1, 3), (4, 6), (7, 9), (10, 12), (13, 15)], max_reductions=1)
    assert len(limited) == 4
    assert [cut.evaluation for cut in limited.cuts] == [3]
    assert limited.withheld is not None
    assert limited.withheld.evaluation == 4
    assert [row.withheld for row in limited] == [False, False, False, True]
    assert limited.final_lrs == (pytest.approx(0.01),)
    assert limited[-1].reason == limited.withheld_reason()
    with pytest.raises(ValueError, match="one window per value"):
        replay(means, config, windows=[(1, 3)])
    with pytest.raises(ValueError, match="`max_reductions` must be an int >= 0"):
        replay(means, config, max_reductions=-1)


@pytest.mark.distributed
def test_explain_windows_of_a_ddp_run_replays_the_mean_over_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2-process DDP: the log keeps rank 0's per-step values, the run judged the mean over ranks. plateau/value
    replays the run's cut, naming its window's steps; the rank-0 column rebuilt into windows is refused."""
    from test_distributed import WINDOW_ARGS, WINDOW_CUT, WINDOW_VALUES, _check_ok, _launch

    _check_ok(_launch("two_nodes", tmp_path, WINDOW_VALUES, *WINDOW_ARGS, "--log-dir", str(tmp_path / "logs")))
    log_dir = tmp_path / "logs" / "run" / "version_0"
    policy = ("--window-steps", "3", "--patience", "1", "--factor", "0.5", "--lr", "0.1")
    code, out, err = explain(capsys, log_dir, "--monitor", "plateau/value", *policy, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [row["value"] for row in report["evaluations"]] == [4.0, 3.0, 3.0, 3.0]
    assert [cut["window"] for cut in report["cuts"]] == [WINDOW_CUT]
    assert report["cuts"][0]["reason"].startswith("steps 10-12, eval 4: plateau/value has not improved on 3.0000")
    code, out, err = explain(capsys, log_dir, "--monitor", "train_loss", *policy)
    assert (code, out) == (2, "")
    assert "is 6.0000, but the run judged 4.0000 there" in err
    assert "under DDP rank zero's alone" in err


_SMOOTHED_RUN = [1.0, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
# the slope's count goes from 0 to 3 at evaluation 4, and no cut is made (patience 6)
_SLOPE_RUN = [1.0, 0.9, 0.85, 0.9, 0.8, 0.82, 0.84, 0.83, 0.85, 0.84]


def _cuts(report: dict[str, Any]) -> list[tuple[int, list[float]]]:
    return [(cut["evaluation"], cut["lrs_after"]) for cut in report["cuts"]]


def _live_cuts(plateau: PlateauCallback) -> list[tuple[int, list[float]]]:
    assert plateau.scheduler is not None
    return [(cut.evaluation, list(cut.lrs_after)) for cut in plateau.scheduler.cuts]


def test_explain_refuses_assumed_smoothing_the_run_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run with smoothing 0.6 that stored no settings: its plateau/smoothed proves smoothing was on, and gives the
    weight; refused (one policy, or a what-if table), then exact with --smoothing 0.6."""
    plateau, log_dir = _unstored_run(tmp_path, _SMOOTHED_RUN, smoothing=0.6)
    for compared in ([], ["2"]):
        code, out, err = explain(capsys, log_dir, "--patience", "1", *compared)
        assert (code, out) == (2, "")
        assert "at evaluation 1 (epoch 0, global step 4) it judged a moving average of the values, 1.0000" in err
        assert "its smoothing was on (its averages say 0.6), where this replay assumed smoothing 0" in err
        assert "Pass --smoothing with the run's" in err
    code, out, err = explain(capsys, log_dir, "--patience", "1", "--smoothing", "0.6", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert _cuts(report) == _live_cuts(plateau)
    averages = [pytest.approx(row.smoothed) for row in plateau.history]
    assert [row["smoothed"] for row in report["evaluations"]] == averages
    # another weight given: a what-if, warned where the averages part, with the run's weight
    code, _, err = explain(capsys, log_dir, "--patience", "1", "--smoothing", "0.5")
    assert code == 0
    assert "evaluation 2 (epoch 1, global step 8): the run judged the moving average 0.8400" in err
    assert "Its averages say smoothing 0.6. The smoothing given is not the run's." in err


def test_explain_refuses_the_assumed_best_detector_of_a_slope_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A slope run without a cut that stored no settings: its plateau/num_bad jumps from 0 to 3, which torch's count
    never does. Refused, though the LRs agree; exact with --detector slope."""
    plateau, log_dir = _unstored_run(tmp_path, _SLOPE_RUN, detector="slope", patience=6)
    assert plateau.scheduler is not None
    assert plateau.scheduler.cuts == []
    for compared in (["6"], ["6", "7"]):
        code, out, err = explain(capsys, log_dir, "--patience", *compared)
        assert (code, out) == (2, "")
        assert "its count (plateau/num_bad) goes from 0 to 3 at evaluation 4, which torch's rule never does" in err
        assert "it used the slope detector, where this replay assumed detector best" in err
    code, out, err = explain(capsys, log_dir, "--patience", "6", "--detector", "slope", "--json")
    assert (code, err) == (0, "")
    assert [row["num_bad"] for row in json.loads(out)["evaluations"]] == [row.num_bad for row in plateau.history]


def test_explain_counts_the_record_contradicts_refuse_assumed_settings_and_warn_given_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with patience 1 that stored none: a replay assuming patience 10 counts otherwise at the run's first cut;
    refused, naming what was assumed and the patience its count says; given --patience 3, a warned what-if."""
    plateau, log_dir = _unstored_run(tmp_path, [1.0, 0.5, 0.9, 0.9, 0.9, 0.9])
    assert [cut.evaluation for cut in plateau.scheduler.cuts] == [4, 6]  # type: ignore[union-attr]
    code, out, err = explain(capsys, log_dir)
    assert (code, out) == (2, "")
    assert "evaluation 4 (epoch 3, global step 16): the run's count after it was 0 (plateau/num_bad of" in err
    assert "this replay's is 2. Under torch's rule (detector best), its count before the cut of" in err
    assert "evaluation 4 says patience 1." in err
    assert "The settings that decide it were assumed (not stored with the run):" in err
    assert "mode min, threshold 0.0001, threshold_mode rel, patience 10, cooldown 0, detector best." in err
    assert "Pass --mode, --threshold, --threshold-mode, --patience, --cooldown, --detector with the run's." in err
    code, _, err = explain(capsys, log_dir, "--patience", "3")
    assert code == 0
    assert "The patience given is not the run's, or an assumed setting is not (mode, threshold" in err
    # a what-if table varying the factor alone (which decides no count) is checked as one replay is
    code, out, err = explain(capsys, log_dir, "--factor", "0.1", "0.5")
    assert (code, out) == (2, "")
    assert "The settings that decide it were assumed (not stored with the run):" in err
    # another column is not the run's judged values: its counts are not compared
    assert explain(capsys, log_dir, "--monitor", "val_mse", "--patience", "1")[0] == 0


def test_explain_names_assumed_smoothing_and_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run that stored no settings: the settings line names smoothing 0 and detector best as assumed."""
    _, log_dir = _unstored_run(tmp_path, [1.0, 0.9, 0.8])
    code, out, err = explain(capsys, log_dir, "--patience", "1", "--json")
    assert (code, err) == (0, "")
    settings = json.loads(out)["settings"]
    assert "smoothing 0, detector best (assumed: not stored with the run; give" in settings
    assert "--smoothing, --detector if it had others)" in settings


def test_explain_monitor_plateau_smoothed_replays_the_averages_as_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--monitor plateau/smoothed: the averages the run judged, not smoothed again (said), with the run's cuts;
    --smoothing with it is refused."""
    plateau, log_dir = _unstored_run(tmp_path, _SMOOTHED_RUN, smoothing=0.6)
    code, out, err = explain(capsys, log_dir, "--monitor", "plateau/smoothed", "--patience", "1", "--json")
    assert code == 0, err
    assert "holds the moving averages the run judged: replayed as they are, not smoothed again" in err
    assert "warning" not in err
    report = json.loads(out)
    assert [row["value"] for row in report["evaluations"]] == [pytest.approx(row.smoothed) for row in plateau.history]
    assert [row["smoothed"] for row in report["evaluations"]] == [None] * len(plateau.history)
    assert _cuts(report) == _live_cuts(plateau)
    assert "smoothing" not in report["settings"]
    code, out, err = explain(capsys, log_dir, "--monitor", "plateau/smoothed", "--smoothing", "0.6")
    assert (code, out) == (2, "")
    assert "plateau/smoothed holds the moving averages the run judged; --smoothing averages the values" in err
