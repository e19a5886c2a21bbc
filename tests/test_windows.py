"""Training-metric windows: a per-step metric judged every N optimizer steps on the mean of the window's values."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import pytest
import torch
import yaml
from helpers import loader, needs_lightning_2_6, plateau_of, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]

from lightning_plateau import (
    PlateauCallback,
    PlateauConfig,
    PlateauEarlyStopping,
    PlateauMixin,
    PlateauScheduler,
    replay,
)
from lightning_plateau._lightning import StepValueReader
from lightning_plateau._window import _StepWindow, window_means
from lightning_plateau.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`",
    "ignore:You're resuming from a checkpoint that ended before the epoch ended",
    "ignore:.*log_every_n_steps.*",
)


class StepLogging(pl.LightningModule):
    """Logs ``train_loss`` per step from a script: ``values[k]`` in the fit's k-th training batch (micro-batch).

    The position is Lightning's own count of batches started, which a checkpoint restores, so a resumed fit logs
    what the uninterrupted one logged at the same batch. ``logged`` records (optimizer step it belongs to, value).
    """

    def __init__(
        self,
        values: Sequence[Optional[float]],
        batches: int = 4,
        on_step: bool = True,
        on_epoch: bool = False,
        validation_monitor: bool = False,
    ) -> None:
        super().__init__()
        self.values = list(values)
        self.batches = batches
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.validation_monitor = validation_monitor
        self.layer = torch.nn.Linear(4, 1)
        self.logged: list[tuple[int, float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        position = self.trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1
        value = self.values[min(position, len(self.values) - 1)]
        if value is not None:  # None: not logged in that batch
            self.log("train_loss", value, on_step=self.on_step, on_epoch=self.on_epoch)
            self.logged.append((self.trainer.global_step + 1, value))
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.validation_monitor:
            self.log("val_loss", 1.0)

    def train_dataloader(self) -> Any:
        return loader(2 * self.batches)

    def val_dataloader(self) -> Any:
        return loader(4)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class StepModel(PlateauMixin, StepLogging):
    """:class:`StepLogging` with the mixin; the plateau is an init argument kept in the hyperparameters."""

    def __init__(self, values: Sequence[Optional[float]], plateau: PlateauConfig, **kwargs: Any) -> None:
        super().__init__(values, **kwargs)
        self.save_hyperparameters("plateau")

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    configure_optimizers = PlateauMixin.configure_optimizers


def _fit(
    root: Path,
    values: Sequence[Optional[float]],
    plateau: PlateauConfig,
    *,
    batches: int = 4,
    callbacks: Sequence[pl.Callback] = (),
    ckpt_path: Optional[Path] = None,
    model_kwargs: Optional[dict[str, Any]] = None,
    **trainer_kwargs: Any,
) -> tuple[StepModel, pl.Trainer]:
    model = StepModel(values, plateau, batches=batches, **(model_kwargs or {}))
    options: dict[str, Any] = {"limit_val_batches": 0, "callbacks": list(callbacks)}
    options.update(trainer_kwargs)
    fit = trainer(root, **options)
    fit.fit(model, ckpt_path=ckpt_path)
    return model, fit


def _config(window_steps: int, patience: int, **fields: Any) -> PlateauConfig:
    return PlateauConfig(monitor="train_loss", window_steps=window_steps, patience=patience, **fields)


# Each window's values differ, so judging the last micro-batch (what Lightning's step-interval plateau judges)
# would cut elsewhere than judging the mean.
CASES = {
    # 3 batches an epoch: windows of 2 steps straddle epochs. Means 3, 2.5, 2.5, 3, 3, 3; patience 1: best 2.5 in
    # steps 3-4, bad in 5-6 and 7-8 -> cut in 7-8; bad in 9-10 and 11-12 -> cut in 11-12. The last values (1, 2,
    # 1, 3, 1, 3) would cut in 5-6.
    "straddling-epochs": dict(
        values=[5, 1, 3, 2, 4, 1, 3, 3, 5, 1, 3, 3],
        window_steps=2,
        patience=1,
        trainer=dict(max_epochs=4, accumulate_grad_batches=1),
        batches=3,
        means=[3.0, 2.5, 2.5, 3.0, 3.0, 3.0],
        cuts=[(7, 8), (11, 12)],
    ),
    # accumulate 2: a window of 2 steps is 4 micro-batches, all counted. Means 3, 2.5, 3; patience 0: cut in 5-6.
    # The stepping micro-batches alone (1, 2, 3) would cut in 3-4.
    "gradient-accumulation": dict(
        values=[4, 4, 3, 1, 3, 3, 2, 2, 1, 5, 3, 3],
        window_steps=2,
        patience=0,
        trainer=dict(max_epochs=3, accumulate_grad_batches=2),
        batches=4,
        means=[3.0, 2.5, 3.0],
        cuts=[(5, 6)],
    ),
    # 8 steps in windows of 3: means 2, 2; steps 7-8 end the fit inside a window and are not judged.
    "trailing-window": dict(
        values=[2, 2, 2, 1, 1, 4, 9, 9],
        window_steps=3,
        patience=0,
        trainer=dict(max_epochs=2, accumulate_grad_batches=1),
        batches=4,
        means=[2.0, 2.0],
        cuts=[(4, 6)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_windows_cut_where_computed_by_hand(tmp_path: Path, case: str) -> None:
    """The judged means and the cut windows of a scripted per-step series are the hand-computed ones."""
    spec: dict[str, Any] = CASES[case]
    config = _config(spec["window_steps"], spec["patience"])
    _, fit = _fit(tmp_path, spec["values"], config, batches=spec["batches"], **spec["trainer"])
    callback = plateau_of(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    assert [row.value for row in callback.history] == spec["means"]
    n = spec["window_steps"]
    assert [row.window for row in callback.history] == [(k * n + 1, (k + 1) * n) for k in range(len(spec["means"]))]
    assert [row.global_step for row in callback.history] == [(k + 1) * n for k in range(len(spec["means"]))]
    assert [cut.window for cut in scheduler.cuts] == spec["cuts"]
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** len(spec["cuts"]))
    # the rows' epochs are the trainer's at each window's end
    assert all(row.epoch is not None and row.epoch >= 0 for row in callback.history)


@pytest.mark.parametrize("case", list(CASES))
def test_windows_replay_of_the_logged_series_equals_the_live_run(tmp_path: Path, case: str) -> None:
    """replay() of every value the fit logged, with the step each belongs to, gives the live means, rows and cuts."""
    spec: dict[str, Any] = CASES[case]
    config = _config(spec["window_steps"], spec["patience"])
    model, fit = _fit(tmp_path, spec["values"], config, batches=spec["batches"], **spec["trainer"])
    callback = plateau_of(fit)
    steps, values = zip(*model.logged, strict=True)
    result = replay(values, config, lr=0.1, global_steps=steps)
    live = callback.history
    assert [(row.value, row.window, row.global_step, row.cut) for row in result] == [
        (row.value, row.window, row.global_step, row.cut) for row in live
    ]
    assert [(cut.window, cut.best_window, cut.lrs_after) for cut in result.cuts] == [
        (cut.window, cut.best_window, cut.lrs_after)
        for cut in callback.scheduler.cuts  # type: ignore[union-attr]
    ]
    assert result.reasons() == [row.reason for row in result if row.cut]


def test_windows_reasons_and_summary_name_the_steps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cut's reason says "steps 4-6" where an epoch would be, and the summary names the trailing window unjudged."""
    spec: dict[str, Any] = CASES["trailing-window"]
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, spec["values"], _config(3, 0), **spec["trainer"])
    messages = [record.getMessage() for record in caplog.records]
    assert (
        "steps 4-6, eval 2: train_loss has not improved on 2.0000 (steps 1-3) for 1 evaluations (> patience 0):"
        " lr 0.1 -> 0.01"
    ) in messages
    (summary,) = [message for message in messages if message.startswith("PlateauCallback (")]
    assert summary.startswith("PlateauCallback (train_loss (min), patience 0, factor 0.1, windows of 3 steps): 1 cut")
    assert "best train_loss 2.0000 in steps 1-3" in summary
    assert "steps 7-8 not judged (the fit ended inside that window of 3 steps)" in summary


def test_windows_restore_note_names_the_best_windows_steps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With restore_best_on_cut, the cut's note names the restored evaluation by its window's steps, not an epoch."""
    spec: dict[str, Any] = CASES["trailing-window"]
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, spec["values"], _config(3, 0, restore_best_on_cut=True), **spec["trainer"])
    assert (
        "steps 4-6, eval 2: train_loss has not improved on 2.0000 (steps 1-3) for 1 evaluations (> patience 0):"
        " lr 0.1 -> 0.01; weights restored from eval 1 (steps 1-3)"
    ) in [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize(
    ("values", "window_steps", "steps", "expected"),
    [
        pytest.param([1, 2, 3, 4, 5], 2, None, ([1.5, 3.5], [1, 3], [(1, 2), (3, 4)]), id="one-value-per-step"),
        # micro-batches share their step; the window closes after the last value of step 2
        pytest.param([1, 3, 2, 2, 7], 2, [1, 1, 2, 2, 3], ([2.0], [3], [(1, 2)]), id="micro-batches"),
        # steps that jump (manual optimization, several optimizers) close the window they pass
        pytest.param([1, 2, 3], 3, [2, 4, 6], ([1.5, 3.0], [1, 2], [(1, 4), (5, 6)]), id="jumping-steps"),
        pytest.param([1, 2], 3, None, ([], [], []), id="no-complete-window"),
    ],
)
def test_window_means_cut_a_series_as_the_callback_does(
    values: list[float], window_steps: int, steps: Optional[list[int]], expected: tuple[Any, ...]
) -> None:
    """window_means: the mean, the index of the last value and the steps of each window, by hand."""
    means, lasts, spans = window_means([float(v) for v in values], steps, window_steps)
    assert (means, lasts, spans) == expected


@pytest.mark.parametrize(
    ("steps", "match"),
    [([1, 2, 1], "value 3 is at step 1, after step 2"), ([0, 1, 2], "below 1"), ([1, 2], "one step per value")],
)
def test_window_means_refuse_bad_steps(steps: list[int], match: str) -> None:
    """Steps that go back, start below 1 or do not match the values are refused, naming the value."""
    with pytest.raises(ValueError, match=match):
        window_means([1.0, 2.0, 3.0], steps, 2)


def test_window_steps_is_validated_and_described() -> None:
    """window_steps is an int >= 0, 0 by default (off), and named in describe() when on."""
    assert PlateauConfig().window_steps == 0
    assert "window" not in PlateauConfig().describe()
    assert PlateauConfig(window_steps=1000).describe().endswith("windows of 1000 steps")
    for bad in (-1, 1.5, True, "5"):
        with pytest.raises(ValueError, match=r"`window_steps` must be an int >= 0, got"):
            PlateauConfig(window_steps=bad)  # type: ignore[arg-type]


# Lightning 2.4 resumes these checkpoints exactly without gradient accumulation, but with it pairs the micro-batches
# of the resumed epoch differently, so the windows hold other values (checked on 2.4.0).
@needs_lightning_2_6
@pytest.mark.parametrize(("accumulate", "every"), [(1, 3), (2, 3), (1, 5)])
def test_windows_mid_window_resume_equals_uninterrupted_run(tmp_path: Path, accumulate: int, every: int) -> None:
    """Resumed from any ModelCheckpoint(every_n_train_steps=k) file, most of them mid-window, the judged values,
    windows and cuts are the uninterrupted run's: the partial window's sum and count are in the checkpoint."""
    # No window's mean equals the mean of its later values: a resume that lost the partial window would judge another.
    values = [5, 1, 2, 0, 4, 1, 0.5, 0.5, 0, 0, 3, 3, 1, 1, 1, 4] * 3
    config = _config(4, 1)
    kwargs: dict[str, Any] = dict(batches=6, max_epochs=3 * accumulate, accumulate_grad_batches=accumulate)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_top_k=-1)
    _, full = _fit(tmp_path / "full", values, config, callbacks=[checkpoint], enable_checkpointing=True, **kwargs)
    reference = plateau_of(full)
    assert reference.scheduler is not None
    assert reference.scheduler.cuts, "no cut: the comparison proves nothing"
    files = sorted(checkpoint.dirpath and Path(checkpoint.dirpath).glob("*.ckpt"))  # type: ignore[arg-type]
    partial_counts = []
    for file in files:
        saved = torch.load(file, weights_only=True)
        (state,) = [s for key, s in saved["callbacks"].items() if key.startswith("PlateauCallback") and s]
        partial_counts.append(state["window"]["count"])
        _, resumed = _fit(tmp_path / file.stem, values, config, ckpt_path=file, **kwargs)
        plateau = plateau_of(resumed)
        assert plateau.history == reference.history, f"history differs after resuming from {file.name}"
        assert plateau.scheduler is not None
        assert plateau.scheduler.cuts == reference.scheduler.cuts
        assert resumed.optimizers[0].param_groups[0]["lr"] == full.optimizers[0].param_groups[0]["lr"]
    # most checkpoints were written inside a window, with values pending (micro-batches, under accumulation)
    assert sum(count > 0 for count in partial_counts) >= len(files) // 2
    assert max(partial_counts) > 0


@pytest.mark.parametrize(
    ("stopper", "config_fields", "stop_step", "message"),
    [
        pytest.param(
            PlateauEarlyStopping(max_reductions=0),
            {},
            6,
            "max reductions: train_loss did not improve on 1.0000 for 2 evaluations at steps 5-6, which calls for"
            " cut 1",
            id="max-reductions",
        ),
        pytest.param(
            PlateauEarlyStopping(),
            {"min_lr": 0.01},
            10,
            "lr exhausted: lr reached min_lr 0.01 in steps 5-6 and train_loss did not improve on 1.0000 for 2"
            " evaluations",
            id="lr-exhausted",
        ),
    ],
)
def test_windows_early_stopping_stops_mid_epoch(
    tmp_path: Path, stopper: PlateauEarlyStopping, config_fields: dict[str, Any], stop_step: int, message: str
) -> None:
    """PlateauEarlyStopping follows the windows: it stops at a window's end, inside the epoch, naming its steps."""
    # flat: best in steps 1-2, bad in 3-4 and 5-6 -> patience 1 calls for a cut in 5-6
    _, fit = _fit(tmp_path, [1.0] * 32, _config(2, 1, **config_fields), batches=16, max_epochs=2, callbacks=[stopper])
    # inside the first epoch, of 16 steps (Lightning counts the epoch it stopped in as completed)
    assert fit.global_step == stop_step
    assert stopper.stopped_epoch == 0
    assert stopper.stopping_reason_message is not None
    assert stopper.stopping_reason_message.startswith(message)
    assert plateau_of(fit).history[-1].window == (stop_step - 1, stop_step)


@pytest.mark.parametrize(
    ("window_steps", "error", "match"),
    [
        # the validation at the epoch's end (step 4) comes first
        (8, MisconfigurationException, r"'val_loss' is logged in validation.*window_steps=0"),
        # the first window ends first (step 2), with no per-step value of it
        (2, RuntimeError, r"no training step logged it in steps 1-2.*logged in validation.*window_steps=0"),
    ],
)
def test_windows_refuse_a_validation_monitor(
    tmp_path: Path, window_steps: int, error: type[Exception], match: str
) -> None:
    """A monitor logged in validation is refused at the first validation or window end, whichever comes first."""
    model = StepModel([1.0], PlateauConfig(monitor="val_loss", window_steps=window_steps), validation_monitor=True)
    fit = trainer(tmp_path, max_epochs=1)
    with pytest.raises(error, match=match):
        fit.fit(model)


@pytest.mark.parametrize(
    ("monitor", "on_step", "on_epoch", "match"),
    [
        ("train_loss", False, True, r"'train_loss' is logged in `training_step` with on_step=False"),
        ("train_loss_epoch", True, True, r"'train_loss_epoch' is the epoch mean of 'train_loss'"),
    ],
)
def test_windows_refuse_a_monitor_not_logged_per_step(
    tmp_path: Path, monitor: str, on_step: bool, on_epoch: bool, match: str
) -> None:
    """A training metric logged once per epoch is refused at the first batch, with how to log it."""
    config = PlateauConfig(monitor=monitor, window_steps=2)
    with pytest.raises(MisconfigurationException, match=match):
        _fit(tmp_path, [1.0], config, model_kwargs=dict(on_step=on_step, on_epoch=on_epoch), max_epochs=1)


@pytest.mark.parametrize("monitor", ["train_loss", "train_loss_step"])
def test_windows_accept_a_metric_logged_per_step_and_per_epoch(tmp_path: Path, monitor: str) -> None:
    """With on_step and on_epoch both, the plain name and `_step` name the per-step values."""
    config = PlateauConfig(monitor=monitor, window_steps=2)
    _, fit = _fit(tmp_path, [4, 2, 1, 1], config, model_kwargs=dict(on_epoch=True), max_epochs=1)
    assert [row.value for row in plateau_of(fit).history] == [3.0, 1.0]


@pytest.mark.parametrize("strict", [True, False])
def test_windows_missing_monitor_is_reported_at_the_first_window(tmp_path: Path, strict: bool) -> None:
    """A monitor no step logs: strict raises at the first window's end, naming its steps; else one warning."""
    config = PlateauConfig(monitor="train_acc", window_steps=3, strict=strict)
    text = r"'train_acc' with window_steps=3, but no training step logged it in steps 1-3. Available metrics"
    if strict:
        with pytest.raises(RuntimeError, match=text):
            _fit(tmp_path, [1.0], config, max_epochs=1)
    else:
        with pytest.warns(RuntimeWarning, match=text + r".*strict=False"):
            _, fit = _fit(tmp_path, [1.0], config, max_epochs=2)
        assert plateau_of(fit).history == []


def test_windows_later_empty_window_is_not_judged(tmp_path: Path) -> None:
    """A window in which no step logged the monitor, after the first, is skipped with one warning."""
    with pytest.warns(RuntimeWarning, match=r"no training step logged 'train_loss' in steps 3-4: that window is not"):
        _, fit = _fit(tmp_path, [1, 3, None, None, 2, 2, 5, None], _config(2, 1), max_epochs=2)
    history = plateau_of(fit).history
    assert [(row.window, row.value) for row in history] == [((1, 2), 2.0), ((5, 6), 2.0), ((7, 8), 5.0)]


def test_windows_off_do_no_per_step_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """window_steps=0 (the default): no value is read or added per step; N > 0: one read per training batch."""
    reads: list[int] = []
    adds: list[int] = []
    original_read, original_add = StepValueReader.read, _StepWindow.add

    def read(self: StepValueReader, trainer: pl.Trainer) -> Any:
        reads.append(trainer.global_step)
        return original_read(self, trainer)

    def add(self: _StepWindow, value: Any) -> None:
        adds.append(1)
        original_add(self, value)

    monkeypatch.setattr(StepValueReader, "read", read)
    monkeypatch.setattr(_StepWindow, "add", add)
    _, fit = _fit(tmp_path / "off", [1.0], PlateauConfig(monitor="train_loss", strict=False), max_epochs=2)
    callback = plateau_of(fit)
    assert (reads, adds) == ([], [])
    assert callback._window is None
    assert callback._reader is None
    assert "window" not in callback.state_dict()
    _fit(tmp_path / "on", [1.0], _config(2, 1), max_epochs=2)
    assert len(reads) == len(adds) == 8


def test_windows_traces_csv_and_explain_give_the_live_cuts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Traces are logged at each window's last step; explain windows the CSV's per-step column with the run's stored
    window_steps, and replays plateau/value as it is: both give the live run's cuts."""
    spec: dict[str, Any] = CASES["straddling-epochs"]
    logger = CSVLogger(tmp_path, name="run", version=0)
    _, fit = _fit(tmp_path, spec["values"], _config(2, 1), batches=3, max_epochs=4, logger=logger, log_every_n_steps=1)
    live = plateau_of(fit)
    csv = tmp_path / "run" / "version_0" / "metrics.csv"
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    header = rows[0]
    column = header.index("plateau/value")
    traced = [(int(row[header.index("step")]), float(row[column])) for row in rows[1:] if row[column]]
    # the logger's step of a window's last per-step value is its last optimizer step - 1
    assert traced == [(row.global_step - 1, row.value) for row in live.history if row.global_step is not None]

    code = main(["explain", str(csv), "--monitor", "train_loss", "--lr", "0.1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["config"]["window_steps"] == 2
    assert [row["value"] for row in report["evaluations"]] == spec["means"]
    assert [row["window"] for row in report["evaluations"]] == [list(row.window) for row in live.history if row.window]
    assert [cut["window"] for cut in report["cuts"]] == [list(window) for window in spec["cuts"]]
    assert report["warning"] is None

    code = main(["explain", str(csv), "--monitor", "plateau/value", "--only-cuts"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "replayed one per evaluation, not windowed again" in err
    # the windows of the traced values, from plateau/global_step: the reasons name them as the live run's do
    assert "-> steps 7-8, eval 4: train_loss has not improved on 2.5000 (steps 3-4) for 2 evaluations" in out
    assert "2 cuts in 6 evaluations, at steps 7-8, steps 11-12: lr 0.1 -> 1e-3." in out


def test_explain_windows_a_per_step_series_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--window-steps N on a bare list: one value per step, a row per window labelled by its steps."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("5 1 3 2 4 1 3 3 5 1 3 3 9"))
    code = main(["explain", "-", "--window-steps", "2", "--patience", "1", "--lr", "0.1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "     eval  steps    val_loss        best   bad  cooldown  lr" in out
    assert "CUT     4    7-8      3.0000      2.5000     0         0  0.01" in out
    assert "-> steps 7-8, eval 4: val_loss has not improved on 2.5000 (steps 3-4) for 2 evaluations" in out
    assert "2 cuts in 6 evaluations, at steps 7-8, steps 11-12: lr 0.1 -> 1e-3." in out
    assert "window_steps 2 (given)" in out


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        ("epoch,step,train_loss\n0,1,1.0\n0,3,2.0\n", "a first value at step 1, not 0"),
        ("epoch,step,train_loss\n0,0,1.0\n0,1,2.0\n0,3,2.0\n", "step 3 after step 1"),
    ],
)
def test_explain_refuses_a_per_step_series_with_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], csv: str, match: str
) -> None:
    """A column logged every few steps (log_every_n_steps) cannot give a window's mean: refused, saying why."""
    path = tmp_path / "metrics.csv"
    path.write_text(csv)
    code = main(["explain", str(path), "--monitor", "train_loss", "--window-steps", "2"])
    _, err = capsys.readouterr()
    assert code == 2
    assert match in err
    assert "log_every_n_steps=1" in err


def test_explain_replays_a_windowed_checkpoint_as_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint holds the judged window means: explain replays them as they are and gives the live cuts."""
    spec: dict[str, Any] = CASES["straddling-epochs"]
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    _fit(
        tmp_path,
        spec["values"],
        _config(2, 1),
        batches=3,
        max_epochs=4,
        callbacks=[checkpoint],
        enable_checkpointing=True,
    )
    code = main(["explain", str(tmp_path / "ckpt" / "last.ckpt"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "not windowed again" in err
    report = json.loads(out)
    assert [row["value"] for row in report["evaluations"]] == spec["means"]
    assert [cut["evaluation"] for cut in report["cuts"]] == [4, 6]
    assert report["warning"] is None


@pytest.fixture
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when `args` is given while sys.argv holds pytest's own arguments.
    monkeypatch.setattr(sys, "argv", ["lightning-cli-test"])


class CliStepModel(PlateauMixin, pl.LightningModule):
    """The README's pattern, logging its training loss per step: the plateau comes from YAML or the command line."""

    def __init__(self, plateau: PlateauConfig = PlateauConfig()) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def train_dataloader(self) -> Any:
        return loader(16)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class CliFlatModel(pl.LightningModule):
    """No mixin, no configure_optimizers: --optimizer and --lr_scheduler configure it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def train_dataloader(self) -> Any:
        return loader(16)


_TRAINER_ARGS = [
    *("--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.logger", "false"),
    *("--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"),
    *("--trainer.enable_checkpointing", "false", "--trainer.enable_model_summary", "false"),
]


@pytest.mark.usefixtures("_no_pytest_argv")
@pytest.mark.parametrize("form", ["model-command-line", "model-yaml", "lr-scheduler-command-line"])
def test_lightning_cli_sets_window_steps(tmp_path: Path, form: str) -> None:
    """`--model.plateau.window_steps`, the YAML key and `--lr_scheduler.window_steps` reach the fitted plateau: 16
    steps in windows of 4 give 4 evaluations."""
    model_class: type[pl.LightningModule] = CliStepModel
    if form == "model-command-line":
        args = ["--model.plateau.monitor", "train_loss", "--model.plateau.window_steps", "4"]
    elif form == "model-yaml":
        path = tmp_path / "plateau.yaml"
        path.write_text(yaml.safe_dump({"model": {"plateau": {"monitor": "train_loss", "window_steps": 4}}}))
        args = ["--config", str(path)]
    else:
        model_class = CliFlatModel
        args = [
            *("--optimizer", "SGD", "--optimizer.lr", "0.01", "--lr_scheduler", "lightning_plateau.PlateauScheduler"),
            *("--lr_scheduler.monitor", "train_loss", "--lr_scheduler.window_steps", "4"),
        ]
    result = LightningCLI(
        model_class,
        args=["fit", "--trainer.default_root_dir", str(tmp_path), *_TRAINER_ARGS, *args],
        save_config_kwargs={"overwrite": True},
    )
    (scheduler_config,) = result.trainer.lr_scheduler_configs
    scheduler = scheduler_config.scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == PlateauConfig(monitor="train_loss", window_steps=4)
    history = plateau_of(result.trainer).history
    assert [row.window for row in history] == [(1, 4), (5, 8), (9, 12), (13, 16)]


@pytest.mark.usefixtures("_no_pytest_argv")
def test_lightning_cli_refuses_negative_window_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--model.plateau.window_steps -1` stops the parser, naming the key."""
    with pytest.raises(SystemExit):
        LightningCLI(
            CliStepModel,
            args=["--trainer.default_root_dir", str(tmp_path), "--model.plateau.window_steps", "-1"],
            run=False,
        )
    assert 'Parser key "model.plateau.window_steps"' in capsys.readouterr().err


def test_callback_keyword_window_steps(tmp_path: Path) -> None:
    """PlateauCallback(monitor=..., window_steps=N) without the mixin attaches and drives a windowed plateau."""
    model = StepLogging([2, 2, 1, 1])
    callback = PlateauCallback(monitor="train_loss", window_steps=2, patience=0)
    fit = trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[callback])
    fit.fit(model)
    assert [row.value for row in callback.history] == [2.0, 1.0]


def test_windows_refuse_a_monitor_logged_in_on_train_batch_end(tmp_path: Path) -> None:
    """A value logged in the module's on_train_batch_end (called after the callbacks') is refused: it would be late."""

    class LateModel(StepModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.log("train_loss", 1.0, on_step=True)

    fit = trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(MisconfigurationException, match=r"logged in `on_train_batch_end`.*Log it in `training_step`"):
        fit.fit(LateModel([1.0], _config(2, 1)))


def test_windows_beside_lightning_early_stopping_warn(tmp_path: Path) -> None:
    """Lightning's EarlyStopping on the windowed monitor counts epochs, not windows: a warning points to ours."""
    from lightning.pytorch.callbacks import EarlyStopping

    stopper = EarlyStopping(monitor="train_loss", patience=100)
    with pytest.warns(UserWarning, match=r"judges the mean of each window of 2 optimizer steps.*PlateauEarlyStopping"):
        _fit(tmp_path, [1.0], _config(2, 1), max_epochs=1, callbacks=[stopper])


def test_compare_windows_each_policy_judges_the_same_means() -> None:
    """compare() on a per-step series: every policy judges the same window means; cuts and stops by window."""
    from lightning_plateau import compare

    values = [5, 1, 3, 2, 4, 1, 3, 3, 5, 1, 3, 3, 9]
    outcomes = compare(values, _config(2, 0), lr=0.1, patience=[0, 1])
    for outcome in outcomes:
        assert [row.value for row in outcome.replay] == [3.0, 2.5, 2.5, 3.0, 3.0, 3.0]
    assert [[cut.window for cut in outcome.cuts] for outcome in outcomes] == [
        [(5, 6), (7, 8), (9, 10), (11, 12)],
        [(7, 8), (11, 12)],
    ]
