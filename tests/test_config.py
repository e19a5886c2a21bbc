"""PlateauConfig: every field checked at construction; a plain dict accepted wherever a config is taken."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauScheduler
from tests.helpers import ScriptedPlateauModel, trainer


def test_config_defaults_are_torchs() -> None:
    """The defaults are torch's ReduceLROnPlateau defaults, watching `val_loss`, strict."""
    config = PlateauConfig()
    assert (config.monitor, config.mode, config.factor, config.patience) == ("val_loss", "min", 0.1, 10)
    assert (config.threshold, config.threshold_mode, config.cooldown) == (1e-4, "rel", 0)
    assert (config.min_lr, config.eps, config.strict) == (0.0, 1e-8, True)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("monitor", "", "a non-empty metric name"),
        ("monitor", None, "a non-empty metric name"),
        ("mode", "minimum", "'min' or 'max'"),
        ("mode", "MAX", "'min' or 'max'"),
        ("threshold_mode", "relative", "'rel' or 'abs'"),
        ("factor", 0.0, "a float in (0, 1)"),
        ("factor", 1.0, "a float in (0, 1)"),
        ("factor", 1, "a float in (0, 1)"),
        ("factor", -0.5, "a float in (0, 1)"),
        ("factor", 2.0, "a float in (0, 1)"),
        ("factor", math.nan, "a float in (0, 1)"),
        ("factor", "0.5", "a float in (0, 1)"),
        ("factor", True, "a float in (0, 1)"),
        ("patience", -1, "an int >= 0"),
        ("patience", 2.0, "an int >= 0"),
        ("patience", True, "an int >= 0"),
        ("patience", "3", "an int >= 0"),
        ("cooldown", -2, "an int >= 0"),
        ("cooldown", 1.5, "an int >= 0"),
        ("threshold", -1e-4, "a finite float >= 0"),
        ("threshold", math.inf, "a finite float >= 0"),
        ("threshold", math.nan, "a finite float >= 0"),
        ("eps", -1e-8, "a finite float >= 0"),
        ("eps", math.inf, "a finite float >= 0"),
        ("min_lr", -1e-6, "a finite float >= 0 or a list of them"),
        ("min_lr", math.nan, "a finite float >= 0 or a list of them"),
        ("min_lr", "0", "a finite float >= 0 or a list of them"),
        ("min_lr", [0.0, -1.0], "a finite float >= 0 or a list of them"),
        ("min_lr", [], "a float or a non-empty list of floats"),
        ("strict", 1, "True or False"),
        ("strict", "yes", "True or False"),
    ],
)
def test_config_rejects_bad_field(field: str, value: Any, allowed: str) -> None:
    """A bad value raises at construction, naming the field, what is allowed and the value given."""
    with pytest.raises(ValueError, match=re.escape(allowed)) as error:
        PlateauConfig(**{field: value})
    message = str(error.value)
    assert f"`{field}`" in message
    shown = value[-1] if isinstance(value, list) and value else value
    assert repr(shown) in message


def _torch_takes(field: str, value: Any) -> bool:
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    try:
        scheduler = ReduceLROnPlateau(optimizer, **{field: value})
        for metric in (1.0, 2.0, 0.5):
            scheduler.step(metric)
    except (ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize(
    ("field", "value", "torch_does"),
    [
        ("factor", 0.0, "0 or less sets the LR straight to min_lr"),
        ("factor", 0, "0 or less sets the LR straight to min_lr"),
        ("factor", -0.5, "0 or less sets the LR straight to min_lr"),
        ("factor", math.nan, "NaN never cuts"),
        ("patience", -1, "a negative patience cuts at every evaluation"),
        ("patience", 2.0, "a float is compared as is"),
        ("cooldown", -2, "a negative cooldown acts as 0"),
        ("cooldown", 1.5, "a float counts down"),
        ("threshold", -1e-4, "a negative threshold counts values worse than the best as improvements"),
        ("threshold", math.inf, "inf or NaN lets no value improve"),
        ("threshold", math.nan, "inf or NaN lets no value improve"),
        ("eps", -1e-8, "a negative eps applies cuts that change nothing"),
        ("eps", math.inf, "inf or NaN never cuts"),
        ("min_lr", -1e-6, "a negative min_lr acts as 0"),
        ("min_lr", math.nan, "NaN as no bound"),
        ("min_lr", [math.inf], "inf never cuts"),
    ],
)
def test_config_says_where_it_is_stricter_than_torch(field: str, value: Any, torch_does: str) -> None:
    """A number torch's class takes but the config refuses: the error says what torch does with it and why not here."""
    assert _torch_takes(field, value)
    with pytest.raises(ValueError, match=re.escape("(torch's ReduceLROnPlateau accepts")) as error:
        PlateauConfig(**{field: value})
    assert torch_does in str(error.value)
    assert "refused here because" in str(error.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("factor", 1.0), ("factor", 2.0), ("factor", True), ("min_lr", []), ("mode", "MAX"), ("threshold_mode", "x")],
)
def test_config_refusal_torch_shares_has_no_torch_note(field: str, value: Any) -> None:
    """Where torch refuses the value as well, the error does not claim otherwise."""
    assert not _torch_takes(field, value)
    with pytest.raises(ValueError, match=f"`{field}`") as error:
        PlateauConfig(**{field: value})
    assert "torch" not in str(error.value)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"factor": 0.5}, {"factor": 0.5}),
        ({"factor": 1e-6, "patience": 0, "cooldown": 0}, {"factor": 1e-6, "patience": 0}),
        ({"mode": "max", "threshold_mode": "abs", "threshold": 0}, {"mode": "max", "threshold": 0.0}),
        ({"min_lr": 0}, {"min_lr": 0.0}),
        ({"min_lr": (1e-5, 0)}, {"min_lr": [1e-5, 0.0]}),
        ({"eps": 0, "strict": False}, {"eps": 0.0, "strict": False}),
    ],
)
def test_config_accepts_and_normalizes_good_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    """Allowed values are kept, numbers become floats and a tuple `min_lr` becomes a list."""
    config = PlateauConfig(**fields)
    for name, value in expected.items():
        assert getattr(config, name) == value
        assert type(getattr(config, name)) is type(value)


def test_config_is_frozen() -> None:
    """A config cannot be changed after it was validated."""
    config = PlateauConfig()
    with pytest.raises(AttributeError):
        config.patience = -1  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [{}, {"min_lr": 1e-3}, {"min_lr": [1e-3]}, {"min_lr": (1e-5, 0), "mode": "max"}],
    ids=["defaults", "scalar-min-lr", "list-min-lr", "tuple-min-lr"],
)
def test_config_is_hashable(fields: dict[str, Any]) -> None:
    """Equal configs hash equal and work as dict keys and in sets, with a scalar or a list `min_lr` (kept a list)."""
    config, twin = PlateauConfig(**fields), PlateauConfig.coerce(dict(fields))
    assert config == twin
    assert config is not twin
    assert hash(config) == hash(twin)
    assert {config: "policy"}[twin] == "policy"
    assert len({config, twin, PlateauConfig(**fields, patience=3)}) == 2
    assert type(config.min_lr) is (list if isinstance(fields.get("min_lr"), (list, tuple)) else float)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, PlateauConfig()),
        (PlateauConfig(patience=3), PlateauConfig(patience=3)),
        ({"patience": 3, "mode": "max"}, PlateauConfig(patience=3, mode="max")),
        ({}, PlateauConfig()),
    ],
)
def test_config_coerce_takes_config_dict_or_none(given: Any, expected: PlateauConfig) -> None:
    """`coerce` returns a config as is, builds one from a dict, and gives the defaults for None."""
    assert PlateauConfig.coerce(given) == expected


def test_config_coerce_rejects_unknown_keys_naming_them() -> None:
    """Unknown keys are named in the error, with the list of fields."""
    with pytest.raises(TypeError, match=r"Unknown PlateauConfig field\(s\) \['mdoe', 'patiance'\]") as error:
        PlateauConfig.coerce({"patiance": 3, "mdoe": "max", "factor": 0.5})
    assert "'patience'" in str(error.value)


def test_config_coerce_rejects_other_types() -> None:
    """Anything else than a config, a mapping or None is refused, naming its type."""
    with pytest.raises(TypeError, match=r"got list: \[3\]"):
        PlateauConfig.coerce([3])  # type: ignore[arg-type]


def test_config_coerce_validates_dict_values() -> None:
    """A dict goes through the same checks as keyword arguments."""
    with pytest.raises(ValueError, match=r"`patience` must be an int >= 0, got -3"):
        PlateauConfig.coerce({"patience": -3})


def test_config_min_lr_list_must_match_param_groups() -> None:
    """A list `min_lr` needs one value per param group; the message says both counts."""
    config = PlateauConfig(min_lr=[0.0, 1e-5])
    assert config.min_lr_for(2) == [0.0, 1e-5]
    assert PlateauConfig(min_lr=1e-5).min_lr_for(7) == 1e-5
    with pytest.raises(ValueError, match=r"`min_lr` has 2 values \[0.0, 1e-05\] but the optimizer has 3 param"):
        config.min_lr_for(3)


def test_config_describe() -> None:
    """The one-line summary names the monitor, mode, patience, factor and any cooldown."""
    assert PlateauConfig().describe() == "val_loss (min), patience 10, factor 0.1"
    assert PlateauConfig("val_acc", "max", 0.5, 3, cooldown=2).describe() == (
        "val_acc (max), patience 3, factor 0.5, cooldown 2"
    )


def _scheduler(config: Any) -> PlateauConfig:
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    return PlateauScheduler(optimizer, config).config


def _callback(config: Any) -> PlateauConfig:
    config = PlateauCallback(config).config
    assert config is not None
    return config


def _mixin(config: Any) -> PlateauConfig:
    return ScriptedPlateauModel([1.0], plateau=config).plateau_config


class _HparamsModel(ScriptedPlateauModel):
    def __init__(self, plateau: Any = None) -> None:
        super().__init__([1.0])
        self.save_hyperparameters()


def _hparams(config: Any) -> PlateauConfig:
    return _HparamsModel(plateau=config).plateau_config


@pytest.mark.parametrize("take", [_scheduler, _callback, _mixin, _hparams], ids=lambda f: f.__name__.strip("_"))
def test_config_dict_accepted_wherever_a_config_is_taken(take: Any) -> None:
    """The scheduler, the callback, the mixin and hparams take a dict and reject unknown keys in it."""
    assert take({"patience": 2, "mode": "max"}) == PlateauConfig(patience=2, mode="max")
    assert take(PlateauConfig(factor=0.5)) == PlateauConfig(factor=0.5)
    with pytest.raises(TypeError, match=r"Unknown PlateauConfig field\(s\) \['patiance'\]"):
        take({"patiance": 2})


def test_config_dict_from_hparams_drives_a_fit(tmp_path: Any) -> None:
    """A dict saved in hparams (as LightningCLI stores it) configures the run and survives the checkpoint."""
    model = _HparamsModel(plateau={"patience": 0, "factor": 0.5})
    model.values = [1.0, 1.0, 1.0]
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit = trainer(tmp_path, max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True)
    fit.fit(model)
    assert model.lr_at_train_start == [0.1, 0.1, 0.05]
    restored = _HparamsModel.load_from_checkpoint(tmp_path / "last.ckpt")
    assert restored.plateau_config == PlateauConfig(patience=0, factor=0.5)
