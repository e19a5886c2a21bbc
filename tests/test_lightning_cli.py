"""LightningCLI reads `plateau: PlateauConfig` from YAML and the command line, rejects bad values, reloads it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import pytest
import torch
import yaml
from helpers import loader, plateau_of
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader

from lightning_plateau import PlateauConfig, PlateauMixin, PlateauScheduler


class CliModel(PlateauMixin, pl.LightningModule):
    """The pattern the README teaches: the plateau is an ``__init__`` argument kept by ``save_hyperparameters``."""

    def __init__(self, plateau: PlateauConfig = PlateauConfig(), lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def train_dataloader(self) -> DataLoader:
        return loader(8)

    def val_dataloader(self) -> DataLoader:
        return loader(4)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when `args` is given while sys.argv holds pytest's own arguments.
    monkeypatch.setattr(sys, "argv", ["lightning-cli-test"])


def cli(tmp_path: Path, args: list[str], run: bool = True) -> LightningCLI:
    """A LightningCLI over CliModel with a one-epoch, two-batch CPU trainer."""
    trainer_args = [
        "--seed_everything",
        "0",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.logger",
        "false",
    ]
    return LightningCLI(
        CliModel,
        args=(["fit"] if run else []) + trainer_args + args,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def write_yaml(tmp_path: Path, plateau: Optional[dict[str, Any]]) -> list[str]:
    """``--config`` arguments for a YAML file that sets ``model.plateau``, or none."""
    if plateau is None:
        return []
    path = tmp_path / "plateau.yaml"
    path.write_text(yaml.safe_dump({"model": {"plateau": plateau}}))
    return ["--config", str(path)]


@pytest.mark.parametrize(
    ("yaml_plateau", "args", "expected"),
    [
        pytest.param(None, ["--model.plateau.patience", "3"], PlateauConfig(patience=3), id="command-line"),
        pytest.param(
            {"monitor": "val_loss", "patience": 3, "factor": 0.5, "cooldown": 1},
            [],
            PlateauConfig(patience=3, factor=0.5, cooldown=1),
            id="yaml",
        ),
        pytest.param(
            {"patience": 5, "factor": 0.5},
            ["--model.plateau.patience", "3"],
            PlateauConfig(patience=3, factor=0.5),
            id="command-line-overrides-yaml",
        ),
        pytest.param(
            {"warmup_steps": 3, "warmup_start_factor": 0.5, "on_nonfinite": "skip"},
            ["--model.plateau.warmup_steps", "2"],
            PlateauConfig(warmup_steps=2, warmup_start_factor=0.5, on_nonfinite="skip"),
            id="warmup-and-non-finite",
        ),
        pytest.param(
            {"mode": "min", "threshold_mode": "abs", "threshold": 0.01, "min_lr": [1e-4], "strict": False},
            [],
            PlateauConfig(threshold_mode="abs", threshold=0.01, min_lr=[1e-4], strict=False),
            id="yaml-literals-and-min-lr-list",
        ),
        pytest.param(
            None,
            ["--model.plateau.restore_best_on_cut", "true"],
            PlateauConfig(restore_best_on_cut=True),
            id="command-line-restore-best-on-cut",
        ),
        pytest.param(
            {"patience": 3, "restore_best_on_cut": True},
            [],
            PlateauConfig(patience=3, restore_best_on_cut=True),
            id="yaml-restore-best-on-cut",
        ),
        pytest.param(
            {"patience": 5, "detector": "slope", "slope_window": 6, "slope_confidence": 0.6},
            ["--model.plateau.slope_robust", "true"],
            PlateauConfig(patience=5, detector="slope", slope_window=6, slope_confidence=0.6, slope_robust=True),
            id="slope-detector",
        ),
        pytest.param(
            {"patience": 5},
            ["--model.plateau.smoothing", "0.6"],
            PlateauConfig(patience=5, smoothing=0.6),
            id="smoothing",
        ),
    ],
)
def test_lightning_cli_plateau_reaches_scheduler(
    tmp_path: Path, yaml_plateau: Optional[dict[str, Any]], args: list[str], expected: PlateauConfig
) -> None:
    """The plateau given in YAML or on the command line is the one the fitted scheduler and callback use."""
    result = cli(tmp_path, write_yaml(tmp_path, yaml_plateau) + args)
    (scheduler_config,) = result.trainer.lr_scheduler_configs
    scheduler = scheduler_config.scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == expected
    assert (scheduler.patience, scheduler.factor, scheduler.cooldown) == (
        expected.patience,
        expected.factor,
        expected.cooldown,
    )
    assert scheduler.num_evaluations == 1
    callback = plateau_of(result.trainer)
    assert callback.config == expected
    # restore_best_on_cut keeps the state of the first evaluation, the best so far
    assert (callback.best_state is not None and callback.best_state.evaluation == 1) is expected.restore_best_on_cut


@pytest.mark.parametrize(
    ("args", "expected_texts"),
    [
        pytest.param(["--model.plateau.mode", "mni"], ["model.plateau.mode", "'min'", "'max'", "mni"], id="mode"),
        pytest.param(
            ["--model.plateau.threshold_mode", "relative"],
            ["model.plateau.threshold_mode", "'rel'", "'abs'", "relative"],
            id="threshold-mode",
        ),
        pytest.param(["--model.plateau.patience", "three"], ["model.plateau.patience", "int", "three"], id="patience"),
        pytest.param(
            ["--model.plateau.on_nonfinite", "ignore"],
            ["model.plateau.on_nonfinite", "'bad'", "'skip'", "'raise'", "ignore"],
            id="on-nonfinite",
        ),
        pytest.param(
            ["--model.plateau.detector", "mean"],
            ["model.plateau.detector", "'best'", "'slope'", "mean"],
            id="detector",
        ),
    ],
)
def test_lightning_cli_bad_value_fails_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected_texts: list[str]
) -> None:
    """A value of the wrong kind stops the parser with a message that names the key, the value and what is allowed."""
    with pytest.raises(SystemExit) as excinfo:
        cli(tmp_path, args, run=False)
    assert excinfo.value.code != 0
    error = capsys.readouterr().err
    for text in expected_texts:
        assert text in error


@pytest.mark.parametrize(
    ("args", "expected_texts"),
    [
        (["--model.plateau.factor", "1.5"], ['Parser key "model.plateau.factor"', "less than 1", "1.5"]),
        (["--model.plateau.factor", "0"], ['Parser key "model.plateau.factor"', "greater than 0"]),
        (["--model.plateau.patience", "-1"], ['Parser key "model.plateau.patience"', "greater than or equal to 0"]),
        (["--model.plateau.min_lr", "-0.1"], ['Parser key "model.plateau.min_lr"', "-0.1"]),
        (["--model.plateau.threshold", "inf"], ['Parser key "model.plateau.threshold"']),
        (["--model.plateau.min_lr", "[]"], ['Parser key "model.plateau.min_lr"']),
        (["--model.plateau.warmup_steps", "-1"], ['Parser key "model.plateau.warmup_steps"', "greater than or equal"]),
        (["--model.plateau.warmup_start_factor", "0"], ['"model.plateau.warmup_start_factor"', "greater than 0"]),
        (["--model.plateau.warmup_start_factor", "1.5"], ['"model.plateau.warmup_start_factor"', "less than or equal"]),
        (["--model.plateau.smoothing", "1"], ['Parser key "model.plateau.smoothing"', "less than 1"]),
        (["--model.plateau.slope_confidence", "0.5"], ['"model.plateau.slope_confidence"', "greater than 0.5"]),
        (["--model.plateau.slope_window", "-1"], ['"model.plateau.slope_window"', "greater than or equal to 0"]),
    ],
)
def test_lightning_cli_out_of_range_value_is_a_parser_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected_texts: list[str]
) -> None:
    """A well-typed value outside PlateauConfig's range stops the parser (no traceback), naming the key and range."""
    with pytest.raises(SystemExit) as excinfo:
        cli(tmp_path, args, run=False)
    assert excinfo.value.code != 0
    error = capsys.readouterr().err
    assert "Traceback" not in error
    for text in expected_texts:
        assert text in error


def test_lightning_cli_checkpoint_reloads_plateau_config(tmp_path: Path) -> None:
    """A CLI run keeps the plateau in hparams as a dict, as load_from_checkpoint does; plateau_config is the config."""
    expected = PlateauConfig(patience=3, factor=0.5)
    result = cli(tmp_path, ["--model.plateau.patience", "3", "--model.plateau.factor", "0.5"])
    model = result.model
    assert isinstance(model, CliModel)
    assert model.hparams["plateau"] == dataclasses.asdict(expected)
    assert model.plateau_config == expected

    checkpoint_path = result.trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    loaded = CliModel.load_from_checkpoint(checkpoint_path)
    assert loaded.hparams["plateau"] == dataclasses.asdict(expected)
    assert loaded.plateau_config == expected
    scheduler = loaded.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == expected


class FlatModel(pl.LightningModule):
    """No mixin and no configure_optimizers: LightningCLI's --optimizer and --lr_scheduler configure it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.validations = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", 1.0)

    def on_validation_epoch_end(self) -> None:
        self.validations += 1

    def train_dataloader(self) -> DataLoader:
        return loader(8)

    def val_dataloader(self) -> DataLoader:
        return loader(4)


_SCHEDULER_ARGS = [
    "--optimizer",
    "Adam",
    "--optimizer.lr",
    "0.01",
    "--lr_scheduler",
    "lightning_plateau.PlateauScheduler",
    "--lr_scheduler.monitor",
    "val_loss",
    "--lr_scheduler.patience",
    "1",
    "--lr_scheduler.factor",
    "0.5",
]
_SCHEDULER_YAML = {
    "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    "lr_scheduler": {
        "class_path": "lightning_plateau.PlateauScheduler",
        "init_args": {"monitor": "val_loss", "patience": 1, "factor": 0.5},
    },
}


@pytest.mark.parametrize("form", ["command-line", "yaml"])
def test_lightning_cli_lr_scheduler_plateau_fits_and_steps_once_per_fresh_value(tmp_path: Path, form: str) -> None:
    """`--lr_scheduler lightning_plateau.PlateauScheduler` without code changes: the monitor is wired in and the
    scheduler judges each validation once (every 2nd epoch over 8 epochs: 4 values, 1 cut on a flat metric)."""
    if form == "yaml":
        path = tmp_path / "scheduler.yaml"
        path.write_text(yaml.safe_dump(_SCHEDULER_YAML))
        args = ["--config", str(path)]
    else:
        args = list(_SCHEDULER_ARGS)
    result = LightningCLI(
        FlatModel,
        args=[
            "fit",
            *("--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"),
            *("--trainer.max_epochs", "8", "--trainer.check_val_every_n_epoch", "2", "--trainer.logger", "false"),
            *("--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"),
            *("--trainer.enable_checkpointing", "false"),
            *args,
        ],
        save_config_kwargs={"overwrite": True},
    )
    (scheduler_config,) = result.trainer.lr_scheduler_configs
    scheduler = scheduler_config.scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler_config.monitor == "val_loss"
    assert scheduler.config == PlateauConfig(monitor="val_loss", patience=1, factor=0.5)
    assert result.model.validations == 4
    assert scheduler.num_evaluations == 4
    assert [cut.evaluation for cut in scheduler.cuts] == [3]
    assert result.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)
    assert plateau_of(result.trainer).scheduler is scheduler


@pytest.mark.parametrize("form", ["command-line", "yaml"])
def test_lightning_cli_lr_scheduler_restore_best_on_cut(tmp_path: Path, form: str) -> None:
    """`--lr_scheduler.restore_best_on_cut true`: the cut of evaluation 3 goes back to evaluation 1's weights."""
    if form == "yaml":
        scheduler_yaml = dict(_SCHEDULER_YAML)
        scheduler_yaml["lr_scheduler"] = {
            "class_path": "lightning_plateau.PlateauScheduler",
            "init_args": {"monitor": "val_loss", "patience": 1, "factor": 0.5, "restore_best_on_cut": True},
        }
        path = tmp_path / "scheduler.yaml"
        path.write_text(yaml.safe_dump(scheduler_yaml))
        args = ["--config", str(path)]
    else:
        args = [*_SCHEDULER_ARGS, "--lr_scheduler.restore_best_on_cut", "true"]
    result = LightningCLI(
        FlatModel,
        args=[
            "fit",
            *("--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"),
            *("--trainer.max_epochs", "4", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"),
            *("--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"),
            *args,
        ],
        save_config_kwargs={"overwrite": True},
    )
    (scheduler_config,) = result.trainer.lr_scheduler_configs
    scheduler = scheduler_config.scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config.restore_best_on_cut is True
    assert [(cut.evaluation, cut.restored_from) for cut in scheduler.cuts] == [(3, 1)]
    assert plateau_of(result.trainer).best_state is not None


def test_lightning_cli_lr_scheduler_out_of_range_is_a_parser_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--lr_scheduler.factor 1.5` stops the parser (no traceback from `configure_optimizers`), naming the range."""
    args = [*_SCHEDULER_ARGS[:-2], "--lr_scheduler.factor", "1.5"]
    with pytest.raises(SystemExit) as excinfo:
        LightningCLI(FlatModel, args=["--trainer.default_root_dir", str(tmp_path), *args], run=False)
    assert excinfo.value.code != 0
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert 'Parser key "factor"' in error
    assert "less than 1" in error


def test_lightning_cli_lr_scheduler_takes_warmup_and_nonfinite(tmp_path: Path) -> None:
    """`--lr_scheduler.warmup_steps` and `--lr_scheduler.on_nonfinite` reach the PlateauScheduler, which warms up."""
    result = LightningCLI(
        FlatModel,
        args=[
            "fit",
            *("--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"),
            *("--trainer.max_epochs", "2", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"),
            *("--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"),
            *_SCHEDULER_ARGS,
            *("--lr_scheduler.warmup_steps", "6", "--lr_scheduler.warmup_start_factor", "0.5"),
            *("--lr_scheduler.on_nonfinite", "skip"),
        ],
        save_config_kwargs={"overwrite": True},
    )
    (scheduler_config,) = result.trainer.lr_scheduler_configs
    scheduler = scheduler_config.scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == PlateauConfig(
        patience=1, factor=0.5, warmup_steps=6, warmup_start_factor=0.5, on_nonfinite="skip"
    )
    # 4 steps per epoch: the first evaluation (step 4) is in the warmup, the second (step 8) is judged
    assert [row.warmup for row in plateau_of(result.trainer).history] == [True, False]
    assert scheduler.warmup_done
    assert result.trainer.optimizers[0].param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize(
    ("args", "expected", "counts"),
    [
        # val_loss is 1.0 at every evaluation: 3 values show no decrease (patience 1, a window of 3) -> cut at 3
        (
            ["--lr_scheduler.detector", "slope", "--lr_scheduler.slope_robust", "true"],
            PlateauConfig(patience=1, factor=0.5, detector="slope", slope_robust=True),
            [0, 0, 0, 0],
        ),
        # torch's rule on the average (1.0 throughout): the best at 1, then 2 evaluations without improvement
        (["--lr_scheduler.smoothing", "0.5"], PlateauConfig(patience=1, factor=0.5, smoothing=0.5), [0, 1, 0, 1]),
    ],
    ids=["slope", "smoothing"],
)
def test_lightning_cli_lr_scheduler_takes_the_detection_settings(
    tmp_path: Path, args: list[str], expected: PlateauConfig, counts: list[int]
) -> None:
    """`--lr_scheduler.detector slope` (and its settings) or `.smoothing` reach the PlateauScheduler, which cuts."""
    result = LightningCLI(
        FlatModel,
        args=[
            "fit",
            *("--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"),
            *("--trainer.max_epochs", "4", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"),
            *("--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"),
            *_SCHEDULER_ARGS,
            *args,
        ],
        save_config_kwargs={"overwrite": True},
    )
    (scheduler_config,) = result.trainer.lr_scheduler_configs
    scheduler = scheduler_config.scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == expected
    assert [cut.evaluation for cut in scheduler.cuts] == [3]
    assert [row.num_bad for row in plateau_of(result.trainer).history] == counts


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--model.plateau.detector", "slope", "--model.plateau.smoothing", "0.6"],
            "smoothing=0.6 with detector='slope': the two do not combine",
        ),
        (["--model.plateau.slope_window", "3"], "slope_window=3: a setting of the slope detector, but detector='best'"),
        (
            ["--model.plateau.detector", "slope", "--model.plateau.slope_window", "5"],
            r"`slope_window` must be more than patience \(10\)",
        ),
    ],
)
def test_lightning_cli_settings_that_do_not_go_together_are_refused(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """Each value is valid alone, so the parser takes them; the config refuses the pair, naming both, when built.

    jsonargparse checks a dataclass argument field by field while parsing and builds it (running the config's
    checks) only when LightningCLI instantiates the classes, outside its error handling: the refusal is the
    config's ValueError, not a parser line.
    """
    with pytest.raises(ValueError, match=expected):
        cli(tmp_path, args, run=False)
