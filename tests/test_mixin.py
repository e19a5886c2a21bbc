"""PlateauMixin: Lightning's optimizer dict with monitor keys, and a PlateauCallback that never replaces the user's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin, PlateauScheduler
from tests.helpers import ScriptedModel, ScriptedPlateauModel, plateau_of, trainer

_VALUES = [1.0, 2.0, 2.0, 0.5]


def _plateau_callbacks(fit: Any) -> list[PlateauCallback]:
    return [c for c in fit.callbacks if isinstance(c, PlateauCallback)]


def test_mixin_configure_optimizers_returns_lightning_dict() -> None:
    """The dict holds the optimizer and a PlateauScheduler on it, with the monitor, interval, frequency and strict."""
    config = PlateauConfig(monitor="val_acc", mode="max", strict=False)
    model = ScriptedPlateauModel(_VALUES, plateau=config)
    returned = model.configure_optimizers()
    assert set(returned) == {"optimizer", "lr_scheduler"}
    scheduler = returned["lr_scheduler"].pop("scheduler")
    assert returned["lr_scheduler"] == {"monitor": "val_acc", "interval": "epoch", "frequency": 1, "strict": False}
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.optimizer is returned["optimizer"]
    assert scheduler.config == config


def test_mixin_manual_optimization_returns_no_monitor_keys() -> None:
    """Manual optimization takes no monitor keys (Lightning warns about them); the scheduler is still there."""
    model = ScriptedPlateauModel(_VALUES)
    model.automatic_optimization = False
    lr_scheduler = model.configure_optimizers()["lr_scheduler"]
    assert list(lr_scheduler) == ["scheduler"]
    assert isinstance(lr_scheduler["scheduler"], PlateauScheduler)


def test_mixin_adds_a_plateau_callback(tmp_path: Path) -> None:
    """Without a PlateauCallback in the Trainer the mixin adds one, which drives the module's scheduler."""
    model = ScriptedPlateauModel(_VALUES, plateau=PlateauConfig(patience=1))
    fit = trainer(tmp_path, max_epochs=4)
    fit.fit(model)
    callback = plateau_of(fit)
    assert callback.config == PlateauConfig(patience=1)
    assert callback.scheduler is fit.lr_scheduler_configs[0].scheduler
    assert [cut.epoch for cut in callback.scheduler.cuts] == [2]
    assert model.lr_at_train_start == pytest.approx([0.1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize(
    "users",
    [
        pytest.param(lambda: PlateauCallback(verbose=False), id="config-less"),
        pytest.param(lambda: PlateauCallback(PlateauConfig(patience=1), verbose=False), id="same-config"),
        pytest.param(lambda: PlateauCallback({"patience": 1}, log_traces=False), id="same-config-as-dict"),
    ],
)
def test_mixin_keeps_the_users_plateau_callback(tmp_path: Path, users: Any) -> None:
    """A PlateauCallback given to the Trainer is kept (the same object) and drives the mixin's scheduler.

    Lightning replaces Trainer callbacks of a type that `configure_callbacks` returns; the mixin returns none then.
    """
    mine = users()
    model = ScriptedPlateauModel(_VALUES, plateau=PlateauConfig(patience=1))
    fit = trainer(tmp_path, max_epochs=4, callbacks=[mine])
    fit.fit(model)
    callback = plateau_of(fit)
    assert callback is mine
    assert mine.config == PlateauConfig(patience=1)
    assert mine.scheduler is fit.lr_scheduler_configs[0].scheduler
    assert mine.scheduler.num_evaluations == 4
    assert [cut.epoch for cut in mine.scheduler.cuts] == [2]


def test_mixin_refuses_a_contradicting_callback_config(tmp_path: Path) -> None:
    """A user's PlateauCallback configured differently from the module is an error naming both configs."""
    model = ScriptedPlateauModel(_VALUES, plateau=PlateauConfig(patience=1))
    fit = trainer(tmp_path, max_epochs=1, callbacks=[PlateauCallback(PlateauConfig(patience=2))])
    with pytest.raises(MisconfigurationException, match=r"contradicts the plateau of ScriptedPlateauModel\.plateau"):
        fit.fit(model)


class _WithCallbacks(ScriptedModel):
    def __init__(self, values: Sequence[float], returned: Any) -> None:
        super().__init__(values)
        self.returned = returned

    def configure_callbacks(self) -> Any:
        return self.returned()


class _MixinWithCallbacks(PlateauMixin, _WithCallbacks):
    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@pytest.mark.parametrize(
    "returned",
    [
        pytest.param(lambda: EarlyStopping("val_loss", patience=100), id="one-callback"),
        pytest.param(lambda: [EarlyStopping("val_loss", patience=100)], id="list"),
    ],
)
def test_mixin_keeps_the_modules_other_callbacks(tmp_path: Path, returned: Any) -> None:
    """The module's own `configure_callbacks` result (one callback or a list) comes with the PlateauCallback."""
    model = _MixinWithCallbacks(_VALUES, returned)
    returned_now = model.configure_callbacks()
    assert [type(c) for c in returned_now] == [EarlyStopping, PlateauCallback]  # type: ignore[union-attr]
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(model)
    assert len(_plateau_callbacks(fit)) == 1
    assert len([c for c in fit.callbacks if isinstance(c, EarlyStopping)]) == 1


class _HparamsModel(ScriptedPlateauModel):
    def __init__(self, plateau: Any = None, values: Sequence[float] = tuple(_VALUES)) -> None:
        super().__init__(list(values))
        self.save_hyperparameters()


class _AttributeModel(ScriptedPlateauModel):
    def __init__(self, plateau: Any = None) -> None:
        super().__init__(_VALUES, plateau=plateau)


@pytest.mark.parametrize(
    ("model_class", "plateau", "expected"),
    [
        pytest.param(_AttributeModel, PlateauConfig(patience=1), PlateauConfig(patience=1), id="attribute-config"),
        pytest.param(_AttributeModel, {"patience": 1}, PlateauConfig(patience=1), id="attribute-dict"),
        pytest.param(_HparamsModel, PlateauConfig(patience=1), PlateauConfig(patience=1), id="hparams-config"),
        pytest.param(_HparamsModel, {"patience": 1}, PlateauConfig(patience=1), id="hparams-dict"),
        pytest.param(_HparamsModel, None, PlateauConfig(), id="hparams-none"),
        pytest.param(_AttributeModel, None, PlateauConfig(), id="defaults"),
    ],
)
def test_mixin_takes_config_from_attribute_dict_or_hparams(
    tmp_path: Path, model_class: Any, plateau: Any, expected: PlateauConfig
) -> None:
    """`self.plateau` or `hparams["plateau"]`, as a PlateauConfig or a dict; defaults without either."""
    model = model_class(plateau=plateau)
    assert model.plateau_config == expected
    fit = trainer(tmp_path, max_epochs=4)
    fit.fit(model)
    callback = plateau_of(fit)
    assert callback.config == expected
    assert callback.scheduler.config == expected
    expected_cuts = [2] if expected.patience == 1 else []
    assert [cut.epoch for cut in callback.scheduler.cuts] == expected_cuts


@pytest.mark.parametrize("plateau", [PlateauConfig(patience=1, factor=0.5), {"patience": 1, "factor": 0.5}])
def test_mixin_hparams_config_survives_load_from_checkpoint(tmp_path: Path, plateau: Any) -> None:
    """A module rebuilt with load_from_checkpoint has the same plateau."""
    checkpoint = ModelCheckpoint(tmp_path, "last")
    trainer(tmp_path, max_epochs=1, callbacks=[checkpoint], enable_checkpointing=True).fit(_HparamsModel(plateau))
    restored = _HparamsModel.load_from_checkpoint(tmp_path / "last.ckpt")
    assert restored.plateau_config == PlateauConfig(patience=1, factor=0.5)


class _NoOptimizerModel(PlateauMixin, ScriptedModel):
    configure_optimizers = PlateauMixin.configure_optimizers


class _WrongOptimizerModel(_NoOptimizerModel):
    def configure_optimizer(self) -> Any:
        return [torch.optim.SGD(self.parameters(), lr=0.1)]


@pytest.mark.parametrize(
    ("model_class", "error", "match"),
    [
        (
            _NoOptimizerModel,
            NotImplementedError,
            r"_NoOptimizerModel inherits PlateauMixin: define `configure_optimizer",
        ),
        (_WrongOptimizerModel, TypeError, r"must return one torch\.optim\.Optimizer, got list"),
    ],
)
def test_mixin_configure_optimizer_errors(model_class: Any, error: type[Exception], match: str) -> None:
    """A missing `configure_optimizer` or one returning something else than one optimizer is explained."""
    with pytest.raises(error, match=match):
        model_class(_VALUES).configure_optimizers()


def test_mixin_callback_saves_history_under_a_fixed_key(tmp_path: Path) -> None:
    """The mixin's callback and a config-less user callback each save their history under one fixed key."""
    keys: list[Optional[str]] = []
    for mine in (None, PlateauCallback(verbose=False)):
        checkpoint = ModelCheckpoint(tmp_path / str(len(keys)), "last")
        callbacks: list[Callback] = [checkpoint] + ([mine] if mine else [])
        fit = trainer(tmp_path, max_epochs=2, callbacks=callbacks, enable_checkpointing=True)
        fit.fit(ScriptedPlateauModel(_VALUES, plateau=PlateauConfig(patience=1)))
        callback = plateau_of(fit)
        saved = torch.load(tmp_path / str(len(keys)) / "last.ckpt", weights_only=True)
        assert len(saved["callbacks"][callback.state_key]["history"]) == 2
        keys.append(callback.state_key)
    assert keys == ["PlateauCallback{'implicit': True}", "PlateauCallback"]
