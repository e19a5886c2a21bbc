"""Drop-in: the lines users already have (torch's keywords, EarlyStopping-style callbacks) keep working."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.saving import load_hparams_from_yaml
from lightning.pytorch.loggers import CSVLogger

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin
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
    import wandb
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
