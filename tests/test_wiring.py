"""How the plateau is wired into a Trainer: which scheduler, which callback drives it, and what is refused."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau, StepLR

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin, PlateauScheduler
from tests.helpers import ScriptedModel, ScriptedPlateauModel, trainer

FLAT = [1.0] * 40
PATIENCE_1 = PlateauConfig(patience=1, factor=0.5)


class _DictModel(ScriptedModel):
    """Returns a PlateauScheduler in Lightning's scheduler dict, with extra dict keys and schedulers as given."""

    def __init__(self, values: Any, config: PlateauConfig = PATIENCE_1, others: Any = None, **keys: Any) -> None:
        super().__init__(values)
        self.config = config
        self.keys = {"monitor": config.monitor, **keys}
        self.others = others or []

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        plateau = {"scheduler": PlateauScheduler(optimizer, self.config), **self.keys}
        return [optimizer], [plateau, *(make(optimizer) for make in self.others)]


def _plateau_callbacks(fit: Any) -> list[PlateauCallback]:
    return [cb for cb in fit.callbacks if isinstance(cb, PlateauCallback)]


def _scheduler(fit: Any) -> PlateauScheduler:
    (config,) = [c for c in fit.lr_scheduler_configs if isinstance(c.scheduler, PlateauScheduler)]
    assert isinstance(config.scheduler, PlateauScheduler)
    return config.scheduler


def test_wiring_dict_monitor_contradicting_the_config_is_refused(tmp_path: Any) -> None:
    """A dict "monitor" other than the PlateauConfig's names both and the fix, at fit start."""
    model = _DictModel(FLAT, monitor="val_metric")
    fit = trainer(tmp_path, callbacks=[PlateauCallback()])
    with pytest.raises(MisconfigurationException, match=r"watching 'val_loss'.*\"monitor\": 'val_metric'"):
        fit.fit(model)
    assert model.evaluations == 0


@pytest.mark.parametrize(
    ("keys", "named"),
    [({"interval": "step"}, "\"interval\": 'step'"), ({"frequency": 3}, '"frequency": 3')],
)
def test_wiring_dict_keys_the_callback_overrides_warn_once(tmp_path: Any, keys: dict[str, Any], named: str) -> None:
    """`interval` and `frequency` are overridden by the callback: one warning says so, and it steps per value."""
    model = _DictModel(FLAT, **keys)
    fit = trainer(tmp_path, callbacks=[PlateauCallback(log_traces=False)], max_epochs=6)
    with pytest.warns(UserWarning, match="are ignored") as record:
        fit.fit(model)
    assert [str(w.message) for w in record if "are ignored" in str(w.message)] == [
        next(str(w.message) for w in record if "are ignored" in str(w.message))
    ]
    assert named in str(next(w.message for w in record if "are ignored" in str(w.message)))
    scheduler = _scheduler(fit)
    assert scheduler.num_evaluations == 6
    assert [cut.evaluation for cut in scheduler.cuts] == [3, 5]


def test_wiring_two_plateau_callbacks_are_refused(tmp_path: Any) -> None:
    """Two PlateauCallbacks would judge every value twice: refused at fit start, before any batch."""
    model = ScriptedPlateauModel(FLAT, plateau=PATIENCE_1)
    fit = trainer(tmp_path, callbacks=[PlateauCallback(PATIENCE_1), PlateauCallback()])
    with pytest.raises(MisconfigurationException, match="2 PlateauCallbacks"):
        fit.fit(model)
    assert model.evaluations == 0


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda opt: StepLR(opt, step_size=1, gamma=0.1), "StepLR"),
        (lambda opt: LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10)), "LambdaLR"),
        (lambda opt: {"scheduler": OneCycleLR(opt, max_lr=0.5, total_steps=100), "interval": "step"}, "OneCycleLR"),
    ],
)
def test_wiring_another_scheduler_on_the_plateau_optimizer_is_refused(tmp_path: Any, make: Any, name: str) -> None:
    """A second scheduler on the same optimizer would move the LR too: refused, naming it and what is supported."""
    model = _DictModel(FLAT, others=[make])
    fit = trainer(tmp_path, callbacks=[PlateauCallback()])
    with pytest.raises(MisconfigurationException, match=rf"returns a {name} on the same optimizer.*only scheduler"):
        fit.fit(model)


def test_wiring_another_scheduler_beside_an_attached_plateau_is_refused(tmp_path: Any) -> None:
    """PlateauCallback(config) attaching its scheduler to an optimizer that has a StepLR is refused the same way."""

    class Model(ScriptedModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
            return {"optimizer": optimizer, "lr_scheduler": StepLR(optimizer, step_size=1)}

    fit = trainer(tmp_path, callbacks=[PlateauCallback(PATIENCE_1)])
    with pytest.raises(MisconfigurationException, match="returns a StepLR on the same optimizer"):
        fit.fit(Model(FLAT))


def test_wiring_lr_written_by_hand_warns_once_and_the_summary_says_so(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Code writing `param_group["lr"]` is noticed at the next evaluation: one warning, named in the summary."""

    class Model(ScriptedPlateauModel):
        def on_train_epoch_start(self) -> None:
            if self.current_epoch in (2, 4):
                for group in self.trainer.optimizers[0].param_groups:
                    group["lr"] = group["lr"] / 10

    model = Model([3.0, 2.0, 1.0, 0.5, 0.25, 0.1], plateau=PATIENCE_1)
    fit = trainer(tmp_path, max_epochs=6)
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="not by the plateau") as record:
        fit.fit(model)
    assert sum("not by the plateau" in str(w.message) for w in record) == 1
    assert _scheduler(fit).outside_changes == [
        (3, (0.1,), (pytest.approx(0.01),)),
        (5, (pytest.approx(0.01),), (0.001,)),
    ]
    assert _scheduler(fit).num_reductions == 0
    summary = next(r.getMessage() for r in caplog.records if "cuts in 6 evaluations" in r.getMessage())
    assert "0 cuts in 6 evaluations, lr 0.1 -> 1e-3 (changed outside the plateau:" in summary
    assert "before evaluation 3" in summary
    assert "before evaluation 5" in summary


def test_wiring_unsaved_plateau_argument_warns(tmp_path: Any) -> None:
    """`__init__(plateau=...)` without save_hyperparameters() would train with the defaults: a warning names the fix."""

    class Forgetful(PlateauMixin, ScriptedModel):
        def __init__(self, plateau: PlateauConfig = PATIENCE_1) -> None:
            super().__init__(FLAT)

        def configure_optimizer(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.warns(UserWarning, match=r"Forgetful.__init__ takes `plateau`.*save_hyperparameters\(\)"):
        trainer(tmp_path, max_epochs=1).fit(Forgetful())


def test_wiring_saved_plateau_argument_is_silent(tmp_path: Any) -> None:
    """With save_hyperparameters() the plateau given is used, and nothing is said about defaults."""

    class Careful(PlateauMixin, ScriptedModel):
        def __init__(self, plateau: PlateauConfig = PATIENCE_1) -> None:
            super().__init__(FLAT)
            self.save_hyperparameters()

        def configure_optimizer(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    fit = trainer(tmp_path, max_epochs=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*save_hyperparameters.*")
        fit.fit(Careful())
    assert _scheduler(fit).config == PATIENCE_1


def test_wiring_mixin_after_lightning_module_is_refused_at_class_creation() -> None:
    """`class M(LightningModule, PlateauMixin)` would hide the mixin's hooks: a TypeError names the order."""
    with pytest.raises(TypeError, match=r"Put the mixin first: class Wrong\(PlateauMixin, LightningModule\)"):

        class Wrong(LightningModule, PlateauMixin):
            pass


def test_wiring_reused_trainer_takes_the_second_module_plateau(tmp_path: Any) -> None:
    """A Trainer reused for another mixin module: the callback the mixin added follows the new module's plateau."""
    first = ScriptedPlateauModel(FLAT, plateau=PATIENCE_1)
    fit = trainer(tmp_path, max_epochs=3)
    fit.fit(first)
    second_config = PlateauConfig(patience=4, factor=0.3)
    second = ScriptedPlateauModel(FLAT, plateau=second_config)
    fit.validate(second, verbose=False)
    fit.fit_loop.max_epochs = 8
    fit.fit(second)
    (callback,) = _plateau_callbacks(fit)
    assert callback.config == second_config
    assert _scheduler(fit).config == second_config
    assert _scheduler(fit).num_evaluations == 5  # epochs 4 to 8; the validate run logged a value too, not judged
    assert second.evaluations == 6


def test_wiring_reused_trainer_then_a_module_without_plateau(tmp_path: Any) -> None:
    """After a mixin module, a module without any plateau fits in the same Trainer: the added callback stands down."""
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(ScriptedPlateauModel(FLAT, plateau=PATIENCE_1))
    fit.fit_loop.max_epochs = 4
    plain = ScriptedModel(FLAT)
    fit.fit(plain)
    assert plain.evaluations == 2
    assert all(cb.scheduler is None for cb in _plateau_callbacks(fit))


def test_wiring_user_callback_is_never_replaced(tmp_path: Any) -> None:
    """A PlateauCallback the user gave drives a mixin module's plateau; the mixin adds none beside it."""
    mine = PlateauCallback(PATIENCE_1, verbose=False)
    fit = trainer(tmp_path, callbacks=[mine], max_epochs=4)
    fit.fit(ScriptedPlateauModel(FLAT, plateau=PATIENCE_1))
    driving = [cb for cb in _plateau_callbacks(fit) if cb.scheduler is not None]
    assert driving == [mine]
    assert len(mine.history) == 4


# Issue 16: a PlateauScheduler is never stepped on stale values, even without a PlateauCallback in the Trainer.


class _EveryOtherEpoch(_DictModel):
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.validations = getattr(self, "validations", 0) + 1


def test_wiring_plateau_scheduler_without_callback_is_driven_once_per_fresh_value(tmp_path: Any) -> None:
    """Validation every 2nd epoch, 8 epochs, flat metric, patience 1: 4 values judged and 1 cut, not 7 and 3."""
    model = _EveryOtherEpoch(FLAT)
    fit = trainer(tmp_path, max_epochs=8, check_val_every_n_epoch=2)
    fit.fit(model)
    scheduler = _scheduler(fit)
    assert model.validations == 4
    assert scheduler.num_evaluations == 4
    assert [cut.evaluation for cut in scheduler.cuts] == [3]
    assert [cb for cb in _plateau_callbacks(fit) if cb.scheduler is scheduler]


def test_wiring_trainer_without_plateau_is_untouched(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """No plateau in the Trainer: no file, no message, nothing in the checkpoint from this package."""
    model = ScriptedModel(FLAT)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = trainer(tmp_path / "run", max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
    with caplog.at_level(logging.DEBUG):
        fit.fit(model)
    # Lightning itself names the callbacks its entry points add; nothing else may mention the plateau.
    ours = [
        r for r in caplog.records if "plateau" in r.getMessage().lower() and "from entry point" not in r.getMessage()
    ]
    assert ours == []
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("plateau*"))
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert not [key for key in state["callbacks"] if "Plateau" in key]
    assert all(cb.scheduler is None and not cb.history for cb in _plateau_callbacks(fit))


def test_wiring_torch_reduce_lr_on_plateau_is_left_to_lightning(tmp_path: Any) -> None:
    """torch's own class without a PlateauCallback is Lightning's business: the implicit callback leaves it alone."""

    class Model(ScriptedModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
            scheduler = ReduceLROnPlateau(optimizer, patience=1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    fit = trainer(tmp_path, max_epochs=4)
    fit.fit(Model(FLAT))
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
    assert all(cb.scheduler is None for cb in _plateau_callbacks(fit))


def test_wiring_manual_optimization_with_an_unnamed_monitor_is_refused(tmp_path: Any) -> None:
    """Manual optimization drops the dict's "monitor": a scheduler built with torch's keywords names none, so the
    plateau would judge the default metric silently. Refused at fit start, saying to name it."""

    class Manual(ScriptedModel):
        def __init__(self) -> None:
            super().__init__(FLAT)
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            optimizer = self.optimizers()
            optimizer.zero_grad()  # type: ignore[union-attr]
            self.manual_backward(super().training_step(batch, batch_idx))
            optimizer.step()  # type: ignore[union-attr]

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
            scheduler = PlateauScheduler(optimizer, mode="max", patience=1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_acc"}}

    with pytest.raises(MisconfigurationException, match=r"names no monitor.*monitor='val_acc'"):
        trainer(tmp_path, max_epochs=2).fit(Manual())
