"""The offline W&B run reader, against a real offline run written by WandbLogger in a tiny fit."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedPlateauModel, trainer

from lightning_plateau import PlateauConfig
from lightning_plateau._wandb_file import WandbFileError, read_run

VALUES = [1.0, 0.5, 0.6, 0.7, 0.8]
BLOB = "x" * 70_000  # one record over two 32 KiB blocks: FIRST, MIDDLE and LAST chunks


def fit_offline_wandb(save_dir: Path, values: list[float], **trainer_kwargs: Any) -> Path:
    """Fit ScriptedPlateauModel with an offline WandbLogger into ``save_dir``; return the run's .wandb file."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(save_dir / name.lower()))
        logger = WandbLogger(offline=True, save_dir=save_dir)
        logger.log_hyperparams({"patience": 1, "optimizer": {"name": "sgd", "lr": 0.1}})
        model = ScriptedPlateauModel(values, plateau=PlateauConfig(patience=1))
        options: dict[str, Any] = dict(
            logger=logger, max_epochs=len(values), limit_train_batches=2, log_every_n_steps=1
        )
        options.update(trainer_kwargs)
        trainer(save_dir, **options).fit(model)
        logger.experiment.log({"blob": BLOB, "nested": {"a": 1, "b": {"c": 2.5}}})
        wandb.finish()
        wandb.teardown()
    (file,) = save_dir.glob("wandb/offline-run-*/run-*.wandb")
    return file


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real offline run directory (``save_dir``) from one tiny fit, shared by this module's tests."""
    save_dir = tmp_path_factory.mktemp("wandb_run")
    fit_offline_wandb(save_dir, VALUES)
    return save_dir


@pytest.mark.parametrize(
    "where",
    ["save_dir", "wandb_dir", "latest_run", "run_dir", "file"],
)
def test_read_run_finds_the_run_from_any_path(wandb_run: Path, where: str) -> None:
    """A .wandb file, its run directory, wandb/, wandb/latest-run and the save_dir all name the same run."""
    (file,) = wandb_run.glob("wandb/offline-run-*/run-*.wandb")
    path = {
        "save_dir": wandb_run,
        "wandb_dir": wandb_run / "wandb",
        "latest_run": wandb_run / "wandb" / "latest-run",
        "run_dir": file.parent,
        "file": file,
    }[where]
    assert read_run(path).path.resolve() == file.resolve()


def test_read_run_history_is_what_was_logged(wandb_run: Path) -> None:
    """History has one row per log call, with val_loss, epoch and trainer/global_step as Lightning logged them."""
    run = read_run(wandb_run)
    rows = [row for row in run.history if "val_loss" in row]
    assert [row["val_loss"] for row in rows] == pytest.approx(VALUES)
    assert [row["epoch"] for row in rows] == list(range(len(VALUES)))
    assert [row["trainer/global_step"] for row in rows] == [2 * (i + 1) - 1 for i in range(len(VALUES))]
    assert [row["_step"] for row in run.history] == list(range(len(run.history)))
    assert {"val_loss", "val_mse", "epoch", "trainer/global_step", "_step"} <= set(run.columns())
    last = run.history[-1]
    assert last["blob"] == BLOB
    assert (last["nested.a"], last["nested.b.c"]) == (1, 2.5)


def test_read_run_summary_and_config(wandb_run: Path) -> None:
    """The summary holds the last values, nested as logged; the config holds the hyperparameters."""
    run = read_run(wandb_run)
    assert run.summary["val_loss"] == pytest.approx(VALUES[-1])
    assert run.summary["nested"] == {"a": 1, "b": {"c": 2.5}}
    assert run.config["patience"] == 1
    assert run.config["optimizer"] == {"name": "sgd", "lr": 0.1}
    assert "_wandb" not in run.config


def _damage(data: bytes, how: str) -> bytes:
    if how == "empty":
        return b""
    if how == "not_wandb":
        return b"val_loss\n0.5\n0.4\n"
    if how == "version":
        return data[:6] + b"\x07" + data[7:]
    if how == "truncated":
        return data[:-10]
    if how == "header_cut":
        # end the file 3 bytes into the first chunk header
        return data[:10]
    if how == "flipped":
        # a byte inside the first record's payload (after the 7-byte file and chunk headers)
        index = 7 + 7 + 3
        return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
    if how == "bad_type":
        return data[:13] + b"\x09" + data[14:]
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("empty", "shorter than the 7-byte header"),
        ("not_wandb", r"is not a W&B run file: it starts with b'val_los'"),
        ("version", "format version 7"),
        ("truncated", "is truncated"),
        ("header_cut", "is truncated: it ends inside a chunk header"),
        ("flipped", "checksum mismatch in the chunk at byte 7"),
        ("bad_type", "bad chunk header at byte 7 \\(type 9"),
    ],
)
def test_read_run_rejects_a_damaged_file(wandb_run: Path, tmp_path: Path, how: str, message: str) -> None:
    """A truncated, corrupt or foreign file gives a WandbFileError that says what is wrong, never garbage."""
    (file,) = wandb_run.glob("wandb/offline-run-*/run-*.wandb")
    damaged = tmp_path / "run-damaged.wandb"
    damaged.write_bytes(_damage(file.read_bytes(), how))
    with pytest.raises(WandbFileError, match=message):
        read_run(damaged)


def test_read_run_rejects_a_record_cut_between_blocks(wandb_run: Path, tmp_path: Path) -> None:
    """A file that ends right after a FIRST or MIDDLE chunk is reported as truncated."""
    data = (next(wandb_run.glob("wandb/offline-run-*/run-*.wandb"))).read_bytes()
    assert len(data) > 64 * 1024
    damaged = tmp_path / "run-cut.wandb"
    damaged.write_bytes(data[: 64 * 1024])
    with pytest.raises(WandbFileError, match="truncated"):
        read_run(damaged)


def test_read_run_reads_the_header_it_checks(tmp_path: Path) -> None:
    """A header-only file is a valid, empty run."""
    file = tmp_path / "run-empty.wandb"
    file.write_bytes(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    run = read_run(file)
    assert (run.history, run.summary, run.config) == ([], {}, {})


@pytest.mark.parametrize(
    ("layout", "error", "message"),
    [
        ("missing", FileNotFoundError, "No such file or directory"),
        ("empty_dir", FileNotFoundError, "No W&B run in"),
        ("two_runs", WandbFileError, "holds 2 W&B runs and no latest-run link"),
    ],
)
def test_read_run_reports_where_no_run_is(
    wandb_run: Path, tmp_path: Path, layout: str, error: type[Exception], message: str
) -> None:
    """A path without a run, or with several and no latest-run, says so."""
    path = tmp_path / "here"
    if layout == "empty_dir":
        path.mkdir()
    elif layout == "two_runs":
        run_dir = next(wandb_run.glob("wandb/offline-run-*"))
        for name in ("offline-run-a", "offline-run-b"):
            shutil.copytree(run_dir, path / "wandb" / name)
    with pytest.raises(error, match=message):
        read_run(path)


def test_read_run_names_the_extra_without_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the wandb package the error says which extra to install."""
    monkeypatch.setitem(sys.modules, "wandb.proto.wandb_internal_pb2", None)
    with pytest.raises(ImportError, match=r"lightning-plateau\[wandb\]"):
        read_run(tmp_path)
