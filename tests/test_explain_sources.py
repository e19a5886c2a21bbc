"""explain reads the run: the plateau settings and starting LRs stored with a W&B run or a CSVLogger run are used."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lightning_plateau import PlateauConfig
from lightning_plateau.cli import main

# Not explain's defaults (patience 10, factor 0.1, lr 1e-3): a replay that ignored the run would cut elsewhere.
RUN_PLATEAU = PlateauConfig(patience=2, factor=0.3)
RUN_LR = 0.01
VALUES = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8]


class _HparamsModel(ScriptedPlateauModel):
    """The README's pattern: the plateau and the LR are init arguments kept by save_hyperparameters()."""

    def __init__(self, plateau: PlateauConfig = RUN_PLATEAU, lr: float = RUN_LR) -> None:
        super().__init__(VALUES, plateau=None, lr=lr)
        self.save_hyperparameters()


@pytest.fixture
def logged_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Path, Path]]:
    """One real fit logged to an offline W&B run and a CSVLogger: (the plateau callback, W&B run dir, metrics.csv)."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    csv_logger = CSVLogger(tmp_path, name="csv")
    fit = trainer(tmp_path, max_epochs=len(VALUES), logger=[WandbLogger(offline=True, save_dir=tmp_path), csv_logger])
    fit.fit(_HparamsModel())
    wandb.finish()
    wandb.teardown()
    try:
        yield plateau_of(fit), tmp_path / "wandb" / "latest-run", Path(csv_logger.log_dir) / "metrics.csv"
    finally:
        wandb.finish()
        wandb.teardown()


def explain(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["explain", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("source", ["wandb", "csv"])
def test_explain_replays_a_run_with_its_own_settings(
    logged_run: tuple[Any, Path, Path], capsys: pytest.CaptureFixture[str], source: str
) -> None:
    """No option given: the run's stored plateau and starting LR replay to the cuts the run made, and say so."""
    callback, wandb_dir, metrics = logged_run
    live = callback.scheduler.cuts
    assert [cut.evaluation for cut in live] == [5, 9]
    code, out, err = explain(capsys, wandb_dir if source == "wandb" else metrics, "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["config"]["patience"] == 2
    assert report["config"]["factor"] == 0.3
    assert report["initial_lrs"] == [RUN_LR]
    assert [(cut["evaluation"], cut["lrs_after"]) for cut in report["cuts"]] == [
        (cut.evaluation, list(cut.lrs_after)) for cut in live
    ]
    settings = report["settings"]
    assert "patience 2" in settings
    where = "the W&B run's config" if source == "wandb" else "hparams.yaml"
    assert f"(from {where}" in settings or "hparams.yaml)" in settings
    assert "lr 0.01 (from " in settings
    assert "defaults assumed" not in settings


def test_explain_options_override_the_run_settings(
    logged_run: tuple[Any, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An option given wins over the stored setting, and the header says which came from where."""
    _, _, metrics = logged_run
    code, out, _ = explain(capsys, metrics, "--patience", "5", "--only-cuts")
    assert code == 0
    settings = out.splitlines()[1]
    assert settings.startswith("settings: patience 5 (given); ")
    assert "factor 0.3" in settings
    assert "lr 0.01 (from " in settings


def test_explain_says_defaults_are_assumed_when_nothing_is_stored(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare list of values stores no policy: the header says the defaults and the LR are assumed, every time."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("1.0 0.9 0.8"))
    code, out, _ = explain(capsys, "-")
    assert code == 0
    settings = out.splitlines()[1]
    assert "(PlateauConfig's defaults assumed, none stored in <stdin>)" in settings
    assert settings.endswith("lr 1e-3 (assumed: give --lr)")


def test_explain_reads_a_csv_logger_version_or_logs_directory(
    logged_run: tuple[Any, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSVLogger version directory, or its logs directory (the latest version, named), reads as its metrics.csv."""
    callback, _, metrics = logged_run
    newer = metrics.parent.parent / "version_10"
    newer.mkdir()
    (newer / "metrics.csv").write_text(metrics.read_text())
    (newer / "hparams.yaml").write_text((metrics.parent / "hparams.yaml").read_text())
    for source, read in ((metrics.parent, metrics), (metrics.parent.parent, newer / "metrics.csv")):
        code, out, _ = explain(capsys, source, "--json")
        assert code == 0
        report = json.loads(out)
        assert report["source"] == str(read)
        assert [cut["evaluation"] for cut in report["cuts"]] == [cut.evaluation for cut in callback.scheduler.cuts]


def test_explain_reads_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Lightning checkpoint holds the plateau history, policy and LRs: explain replays the cuts the run made."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = trainer(tmp_path, max_epochs=len(VALUES), callbacks=[checkpoint], enable_checkpointing=True)
    fit.fit(_HparamsModel())
    live = plateau_of(fit).scheduler.cuts
    code, out, err = explain(capsys, tmp_path / "ckpt" / "last.ckpt", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert [(cut["evaluation"], cut["epoch"], cut["lrs_after"]) for cut in report["cuts"]] == [
        (cut.evaluation, cut.epoch, list(cut.lrs_after)) for cut in live
    ]
    assert report["initial_lrs"] == [RUN_LR]
    assert "(from the checkpoint (" in report["settings"]
    code, _, err = explain(capsys, tmp_path / "ckpt" / "last.ckpt", "--monitor", "val_mse")
    assert code == 2
    assert "holds the plateau history of 'val_loss' only, not of 'val_mse'" in err


def test_explain_reads_lightning_cli_config_beside_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LightningCLI run with `--lr_scheduler lightning_plateau.PlateauScheduler`: config.yaml holds the plateau."""
    from lightning.pytorch.cli import LightningCLI
    from test_lightning_cli import FlatModel

    monkeypatch.setattr(sys, "argv", ["train.py"])
    args = [
        "fit",
        *("--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "5", "--trainer.logger", "CSVLogger"),
        *("--trainer.logger.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"),
        *("--trainer.num_sanity_val_steps", "0", "--trainer.enable_checkpointing", "false"),
        *("--optimizer", "Adam", "--optimizer.lr", "0.01", "--lr_scheduler", "lightning_plateau.PlateauScheduler"),
        *("--lr_scheduler.monitor", "val_loss", "--lr_scheduler.patience", "1", "--lr_scheduler.factor", "0.5"),
    ]
    result = LightningCLI(FlatModel, args=args, save_config_kwargs={"overwrite": True})
    live = plateau_of(result.trainer).scheduler.cuts
    metrics = Path(result.trainer.logger.log_dir) / "metrics.csv"  # type: ignore[union-attr]
    code, out, _ = explain(capsys, metrics, "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["config"]["patience"], report["config"]["factor"]) == (1, 0.5)
    assert f"(from {metrics.with_name('config.yaml')})" in report["settings"]
    assert [cut["evaluation"] for cut in report["cuts"]] == [cut.evaluation for cut in live]


def test_explain_reads_a_tensorboard_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TensorBoardLogger's event files (read with tensorboard's own reader) and hparams.yaml replay the run's cuts."""
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, name="tb")
    fit = trainer(tmp_path, max_epochs=len(VALUES), logger=logger)
    fit.fit(_HparamsModel())
    live = plateau_of(fit).scheduler.cuts
    events = next(Path(logger.log_dir).glob("events.out.tfevents.*"))
    for source in (Path(logger.log_dir), events):
        code, out, err = explain(capsys, source, "--json")
        assert (code, err) == (0, "")
        report = json.loads(out)
        assert report["initial_lrs"] == [RUN_LR]
        assert [(cut["evaluation"], cut["epoch"]) for cut in report["cuts"]] == [(c.evaluation, c.epoch) for c in live]
        assert [cut["lrs_after"] for cut in report["cuts"]] == [pytest.approx(list(c.lrs_after)) for c in live]
        assert "hparams.yaml)" in report["settings"]


class _HandChanged(_HparamsModel):
    """Sets the LR by hand at the start of epoch 3: the run's LRs are no longer the plateau's alone."""

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.current_epoch == 3:
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = 0.7


def test_explain_warns_where_the_run_lr_departs_from_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose LR was set by hand: the replay cannot follow it, and explain says from which evaluation."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    logger = CSVLogger(tmp_path, name="csv")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = trainer(tmp_path, max_epochs=6, logger=logger, callbacks=[checkpoint], enable_checkpointing=True)
    with pytest.warns(UserWarning, match="not by the plateau"):
        fit.fit(_HandChanged())
    for source in (Path(logger.log_dir), tmp_path / "ckpt" / "last.ckpt"):
        code, out, err = explain(capsys, source, "--json")
        assert code == 0
        assert "warning: from evaluation 4 on, the run's LR (0.7) is not this replay's" in err
        assert json.loads(out)["warning"].startswith("from evaluation 4 on")
    code, _, err = explain(capsys, tmp_path / "ckpt" / "last.ckpt", "--only-cuts", "--patience", "2")
    assert "warning" in err  # other settings than the run's: the same honest note


def test_explain_refuses_a_log_that_starts_mid_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resumed run logged into a new version: its traces start at evaluation 5, so a replay would be wrong."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = trainer(tmp_path, max_epochs=4, callbacks=[checkpoint], enable_checkpointing=True)
    first.fit(_HparamsModel())
    logger = CSVLogger(tmp_path, name="resumed")
    resumed = trainer(tmp_path, max_epochs=8, logger=logger)
    resumed.fit(_HparamsModel(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    code, out, err = explain(capsys, Path(logger.log_dir))
    assert (code, out) == (2, "")
    assert "its plateau traces start at evaluation 5, so this log continues a resumed run" in err


def test_compare_takes_a_single_value_and_explain_each_value_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compare(values, patience=2)` is `patience=[2]`; `--patience 1 1` is one policy: a replay, not a comparison."""
    from lightning_plateau import compare

    (outcome,) = compare([1.0, 0.9, 0.9, 0.9], patience=2)
    assert outcome.varied == {"patience": 2}
    monkeypatch.setattr(sys, "stdin", io.StringIO("1 0.9 0.8 0.8 0.8"))
    code, out, _ = explain(capsys, "-", "--patience", "1", "1", "--factor", "0.5", "0.5")
    assert code == 0
    assert (
        out.splitlines()[0]
        == "<stdin>: 5 evaluations of val_loss (min), patience 1, factor 0.5, threshold 0.0001 rel, lr 1e-3"
    )
