"""Drop-in: the lines users already have (torch's keywords, EarlyStopping-style callbacks) keep working."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.saving import load_hparams_from_yaml
from lightning.pytorch.loggers import CSVLogger
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin, PlateauScheduler, replay
from tests.helpers import ScriptedModel, trainer

ACC = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]
FLAT = [1.0] * 20
PATIENCE_2 = PlateauConfig(patience=2)


@pytest.mark.parametrize(
    ("keywords", "config"),
    [
        (
            {"monitor": "val_acc", "mode": "max", "patience": 1},
            PlateauConfig(monitor="val_acc", mode="max", patience=1),
        ),
        ({"patience": 3, "factor": 0.5, "cooldown": 1}, PlateauConfig(patience=3, factor=0.5, cooldown=1)),
        (
            {"min_lr": [1e-3], "threshold": 0.1, "threshold_mode": "abs"},
            PlateauConfig(min_lr=[1e-3], threshold=0.1, threshold_mode="abs"),
        ),
        ({"eps": 0.0, "strict": False}, PlateauConfig(eps=0.0, strict=False)),
    ],
)
def test_dropin_callback_shorthand_equals_the_config_form(keywords: dict[str, Any], config: PlateauConfig) -> None:
    """`PlateauCallback(monitor=..., mode=..., patience=...)` builds the same config as `PlateauCallback(config)`."""
    assert PlateauCallback(**keywords).config == PlateauCallback(config).config == config
    assert PlateauCallback(**keywords).state_key == PlateauCallback(config).state_key


def test_dropin_callback_shorthand_fits_as_the_config_form(tmp_path: Any) -> None:
    """The shorthand and the config form give the same cuts on the same run."""
    histories = []
    for callback in (
        PlateauCallback(monitor="val_acc", mode="max", patience=1, factor=0.5, verbose=False, log_traces=False),
        PlateauCallback(PlateauConfig(monitor="val_acc", mode="max", patience=1, factor=0.5), verbose=False),
    ):
        trainer(tmp_path, callbacks=[callback], max_epochs=8).fit(ScriptedModel(ACC, monitor="val_acc"))
        assert callback.scheduler is not None
        histories.append(callback.history)
    assert histories[0] == histories[1]
    assert [row.evaluation for row in histories[0] if row.cut] == [4, 7]


def test_dropin_callback_config_and_keywords_together_are_refused() -> None:
    """A config and keyword fields together: a TypeError that names the keywords and both ways to write it."""
    with pytest.raises(TypeError, match=r"got a config and the keyword\(s\) patience=3: give one or the other"):
        PlateauCallback(PlateauConfig(), patience=3)


def test_dropin_callback_keyword_out_of_range_names_the_field() -> None:
    """A bad keyword value is refused as the config refuses it: the field, the value and what is allowed."""
    with pytest.raises(ValueError, match=r"`factor` must be a float in \(0, 1\).*got 1\.5"):
        PlateauCallback(factor=1.5)


class _HparamsModel(PlateauMixin, ScriptedModel):
    """A module whose plateau is an init argument saved with save_hyperparameters(), as LightningCLI users write it."""

    def __init__(self, plateau: PlateauConfig = PATIENCE_2, lr: float = 0.1) -> None:
        super().__init__(FLAT, lr=lr)
        self.save_hyperparameters()

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def test_dropin_hparams_yaml_reloads_through_lightnings_loaders(tmp_path: Path) -> None:
    """hparams.yaml holds the plateau as plain fields: Lightning's own loaders read it, the module gets it back."""
    model = _HparamsModel(PlateauConfig(patience=2, factor=0.5, min_lr=[1e-3]))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    logger = CSVLogger(tmp_path, name="run")
    fit = trainer(tmp_path, logger=logger, callbacks=[checkpoint], enable_checkpointing=True, max_epochs=2)
    fit.fit(model)
    hparams_file = Path(logger.log_dir) / "hparams.yaml"
    assert "!!python" not in hparams_file.read_text()
    loaded = load_hparams_from_yaml(str(hparams_file))
    assert loaded["plateau"] == {**dataclasses.asdict(PATIENCE_2), "patience": 2, "factor": 0.5, "min_lr": [1e-3]}
    reloaded = _HparamsModel.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt", hparams_file=str(hparams_file))
    assert reloaded.plateau_config == PlateauConfig(patience=2, factor=0.5, min_lr=[1e-3])
    assert model.plateau_config == reloaded.plateau_config
    assert model.hparams["plateau"] == loaded["plateau"]


def test_dropin_old_checkpoint_with_a_config_object_keeps_loading(tmp_path: Path) -> None:
    """A checkpoint whose hparams hold the PlateauConfig object (written before plain hparams) still loads."""
    model = _HparamsModel(PlateauConfig(patience=4))
    fit = trainer(tmp_path, max_epochs=1)
    fit.fit(model)
    path = tmp_path / "old.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["plateau"] = PlateauConfig(patience=4)
    torch.save(checkpoint, path)
    assert isinstance(torch.load(path, weights_only=True)["hyper_parameters"]["plateau"], PlateauConfig)
    reloaded = _HparamsModel.load_from_checkpoint(path)
    assert reloaded.plateau_config == PlateauConfig(patience=4)


def test_dropin_wandb_config_has_the_plateau_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offline W&B run's config holds `plateau` as fields (read back from the .wandb file), not a repr string."""
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    from lightning_plateau._wandb_file import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    try:
        logger = WandbLogger(offline=True, save_dir=tmp_path)
        trainer(tmp_path, logger=logger, max_epochs=1).fit(_HparamsModel(PlateauConfig(patience=3, factor=0.5)))
        wandb.finish()
        wandb.teardown()
        run = read_run(tmp_path / "wandb")
    finally:
        wandb.finish()
        wandb.teardown()
    assert run.config["plateau"]["patience"] == 3
    assert run.config["plateau"]["factor"] == 0.5
    assert run.config["plateau"]["monitor"] == "val_loss"


_TORCH_KEYWORDS = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["min", "max"]),
        "factor": st.floats(0.05, 0.95),
        "patience": st.integers(0, 4),
        "threshold": st.sampled_from([0.0, 1e-4, 0.01, 0.5]),
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 3),
        "min_lr": st.sampled_from([0.0, 1e-4, [1e-3, 0.0]]),
        "eps": st.sampled_from([0.0, 1e-8, 1e-3]),
    },
)


def _two_group_optimizer() -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD([{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.05}])


@settings(max_examples=300, deadline=None)
@given(keywords=_TORCH_KEYWORDS, values=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=40))
def test_dropin_scheduler_takes_torch_keywords_with_torch_trajectory(
    keywords: dict[str, Any], values: list[float]
) -> None:
    """`ReduceLROnPlateau(` -> `PlateauScheduler(` with torch's keywords gives torch's LRs, step for step."""
    ours_optimizer, torch_optimizer = _two_group_optimizer(), _two_group_optimizer()
    ours = PlateauScheduler(ours_optimizer, **keywords)
    theirs = ReduceLROnPlateau(torch_optimizer, **keywords)
    for value in values:
        ours.step(value)
        theirs.step(value)
        assert [g["lr"] for g in ours_optimizer.param_groups] == [g["lr"] for g in torch_optimizer.param_groups]
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == (
            theirs.best,
            theirs.num_bad_epochs,
            theirs.cooldown_counter,
        )
    assert ours.config == PlateauConfig(**keywords)


def test_dropin_scheduler_keywords_equal_the_config_form() -> None:
    """The keyword form and the config form build the same policy; `monitor` is a keyword too (LightningCLI's)."""
    optimizer = _two_group_optimizer()
    config = PlateauConfig(monitor="val_acc", mode="max", factor=0.5, patience=3, min_lr=[1e-3, 1e-4])
    keyword = PlateauScheduler(optimizer, monitor="val_acc", mode="max", factor=0.5, patience=3, min_lr=[1e-3, 1e-4])
    assert keyword.config == PlateauScheduler(optimizer, config).config == config
    assert keyword.monitor == "val_acc"
    assert PlateauScheduler(optimizer).config == PlateauConfig()


def test_dropin_scheduler_config_and_keywords_together_are_refused() -> None:
    """A config and keywords together: a TypeError naming the keywords."""
    with pytest.raises(TypeError, match=r"PlateauScheduler got a config and the keyword\(s\) patience=2"):
        PlateauScheduler(_two_group_optimizer(), PlateauConfig(), patience=2)


def test_dropin_scheduler_torch_positional_mode_says_use_keywords() -> None:
    """torch's positional `ReduceLROnPlateau(opt, "max")`: the error says to pass it by keyword."""
    with pytest.raises(TypeError, match=r"PlateauScheduler\(optimizer, mode='max'\)"):
        PlateauScheduler(_two_group_optimizer(), "max")  # type: ignore[arg-type]


def test_dropin_scheduler_is_lightnings_cli_plateau_scheduler() -> None:
    """It is Lightning's `cli.ReduceLROnPlateau` (so LightningCLI gives it its monitor) and torch's class."""
    from lightning.pytorch.cli import ReduceLROnPlateau as LightningReduceLROnPlateau

    scheduler = PlateauScheduler(_two_group_optimizer(), monitor="val_f1", mode="max")
    assert isinstance(scheduler, LightningReduceLROnPlateau)
    assert isinstance(scheduler, ReduceLROnPlateau)
    assert scheduler.monitor == "val_f1"


class _TorchStyleModel(ScriptedModel):
    """`ReduceLROnPlateau(` replaced by `PlateauScheduler(` in the usual dict: no monitor among the keywords."""

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = PlateauScheduler(optimizer, mode="max", patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_acc"}}


def test_dropin_scheduler_without_monitor_watches_the_dict_monitor(tmp_path: Path) -> None:
    """torch's keywords name no monitor: the dict's "monitor" is the one watched, as with torch's class."""
    fit = trainer(tmp_path, max_epochs=8)
    fit.fit(_TorchStyleModel(ACC, monitor="val_acc"))
    scheduler = fit.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == PlateauConfig(monitor="val_acc", mode="max", patience=1)
    assert [cut.evaluation for cut in scheduler.cuts] == [4, 7]


def test_dropin_numpy_numbers_are_accepted_as_torch_takes_them() -> None:
    """NumPy scalars and arrays (a sweep grid's values) are taken, stored as plain numbers."""
    config = PlateauConfig(factor=np.float32(0.5), patience=np.int64(3), cooldown=np.int32(1), min_lr=np.array([1e-3]))
    assert config == PlateauConfig(factor=0.5, patience=3, cooldown=1, min_lr=[1e-3])
    assert type(config.factor) is float
    assert type(config.patience) is int
    assert PlateauScheduler(_two_group_optimizer(), patience=np.int64(2)).config.patience == 2
    with pytest.raises(ValueError, match=r"`patience` must be an int >= 0, got 3.0"):
        PlateauConfig(patience=np.float64(3.0))


class _AnnotatedInit(PlateauMixin, ScriptedModel):
    """An `__init__` that uses its `plateau: PlateauConfig` argument as one."""

    def __init__(self, plateau: PlateauConfig = PATIENCE_2) -> None:
        super().__init__(FLAT)
        self.save_hyperparameters()
        self.watched = plateau.monitor

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_dropin_load_from_checkpoint_gives_init_a_plateau_config(tmp_path: Path) -> None:
    """hparams hold plain fields, yet load_from_checkpoint passes `__init__` the PlateauConfig its annotation names."""
    model = _AnnotatedInit(PlateauConfig(monitor="val_loss", patience=4))
    fit = trainer(tmp_path, max_epochs=1)
    fit.fit(model)
    fit.save_checkpoint(tmp_path / "model.ckpt")
    assert model.hparams["plateau"] == dataclasses.asdict(PlateauConfig(patience=4))
    reloaded = _AnnotatedInit.load_from_checkpoint(tmp_path / "model.ckpt")
    assert reloaded.watched == "val_loss"
    assert reloaded.plateau_config == PlateauConfig(patience=4)
    assert reloaded.hparams["plateau"] == dataclasses.asdict(PlateauConfig(patience=4))


def test_dropin_numpy_and_torch_scalars_become_plain_values() -> None:
    """np.str_, np.bool_ and 0-dim tensors are stored as the plain values they hold: YAML and replay read them."""
    config = PlateauConfig(
        monitor=np.str_("val_acc"), mode=np.str_("max"), strict=np.bool_(False), factor=torch.tensor(0.5)
    )
    assert config == PlateauConfig(monitor="val_acc", mode="max", strict=False, factor=0.5)
    assert [type(config.monitor), type(config.strict), type(config.factor)] == [str, bool, float]
    assert yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config))) == dataclasses.asdict(config)
    assert replay([1.0, 2.0, 3.0], config, lr=np.float32(0.1)).initial_lrs == (pytest.approx(0.1),)


class _NestedHparams(PlateauMixin, ScriptedModel):
    """A PlateauConfig nested in another hyperparameter."""

    def __init__(self, configs: Any = None) -> None:
        super().__init__(FLAT)
        self.save_hyperparameters()

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_dropin_nested_plateau_config_in_hparams_is_plain_data() -> None:
    """A config inside a dict or list hyperparameter is stored as plain fields too (YAML-safe)."""
    model = _NestedHparams({"stage1": PlateauConfig(patience=2), "all": [PlateauConfig(patience=5)]})
    assert model.hparams["configs"]["stage1"] == dataclasses.asdict(PlateauConfig(patience=2))
    assert model.hparams["configs"]["all"] == [dataclasses.asdict(PlateauConfig(patience=5))]
    yaml.safe_dump(dict(model.hparams))
