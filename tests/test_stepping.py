"""PlateauCallback steps exactly once per fresh value of the monitor, whatever the validation schedule."""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauScheduler
from tests.helpers import ScriptedModel, ScriptedPlateauModel, loader, needs_lightning_2_6, plateau_of, trainer

# One script for every schedule: with patience 1 the cuts fall on evaluations 3 and 6 (then every second one, as
# the last value repeats): 1.0 best, 2.0 bad 1, 2.0 bad 2 -> cut, 0.5 best, 0.6 bad 1, 0.7 bad 2 -> cut, ...
_VALUES = [1.0, 2.0, 2.0, 0.5, 0.6, 0.7]
_CUT_EVALUATIONS = [3, 6, 8, 10, 12, 14, 16]


class _Model(ScriptedModel):
    """ScriptedModel that counts its validation runs, may log the monitor in the sanity check or not every run."""

    def __init__(
        self,
        values: Sequence[float],
        *,
        log_every: int = 1,
        sanity_value: Optional[float] = None,
        on_step: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(values, **kwargs)
        self.log_every = log_every
        self.sanity_value = sanity_value
        self.on_step = on_step
        self.validation_runs = 0
        self.epochs_trained = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.where == "training" and self.on_step:
            # Per micro-batch values too, the last one always 5.0: judging it (Lightning's step-interval pitfall)
            # would see a flat metric and cut at evaluations 3 and 5; the epoch mean cuts at 3 and 6.
            last = batch_idx == self.train_batches - 1
            value = 5.0 if last else self.values[min(self.current_epoch, len(self.values) - 1)]
            self.log(self.monitor, torch.tensor(value), on_step=True, on_epoch=True)
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        self.epochs_trained += 1

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            if self.sanity_value is not None:
                self.log(self.monitor, self.sanity_value)
            return
        self.validation_runs += 1
        if self.where == "validation" and (self.validation_runs - 1) % self.log_every == 0:
            self.log(self.monitor, self._next_value())


def _fit(
    tmp_path: Any, model: ScriptedModel, config: PlateauConfig, **trainer_kwargs: Any
) -> tuple[PlateauCallback, Any]:
    callback = PlateauCallback(config)
    fit = trainer(tmp_path, callbacks=[callback, *trainer_kwargs.pop("callbacks", [])], **trainer_kwargs)
    fit.fit(model)
    return callback, fit


def _scheduler(callback: PlateauCallback) -> PlateauScheduler:
    assert callback.scheduler is not None
    return callback.scheduler


@pytest.mark.parametrize(
    ("model_kwargs", "trainer_kwargs", "evaluations", "cut_epochs"),
    [
        pytest.param({}, {"max_epochs": 6}, 6, [2, 5], id="every-epoch"),
        pytest.param({}, {"max_epochs": 3, "val_check_interval": 2}, 6, [1, 2], id="val_check_interval-int"),
        pytest.param({}, {"max_epochs": 3, "val_check_interval": 0.5}, 6, [1, 2], id="val_check_interval-float"),
        # pitfall (issue 10496): Lightning steps every epoch on the stale value and crashes at epoch 0 when strict
        pytest.param({}, {"max_epochs": 12, "check_val_every_n_epoch": 2}, 6, [5, 11], id="check_val_every_n_epoch-2"),
        pytest.param({}, {"max_epochs": 6, "limit_val_batches": 1}, 6, [2, 5], id="limit_val_batches"),
        # validations after batches 6, 12, ..., 36 of 4-batch epochs: epochs 1, 2, 4, 5, 7, 8 (none in 0, 3, 6)
        pytest.param(
            {},
            {"max_epochs": 9, "val_check_interval": 6, "check_val_every_n_epoch": None},
            6,
            [4, 8],
            id="not-every-epoch",
        ),
        pytest.param({"sanity_value": 0.0}, {"max_epochs": 6, "num_sanity_val_steps": 2}, 6, [2, 5], id="sanity"),
        # logged in validation runs 1, 3, 5, ... (epochs 0, 2, 4, ...): runs 2, 4, ... hold only a stale value
        pytest.param({"log_every": 2}, {"max_epochs": 12}, 6, [4, 10], id="stale-between-logs"),
        pytest.param({}, {"max_epochs": 6, "accumulate_grad_batches": 2}, 6, [2, 5], id="accumulate"),
        pytest.param({"where": "training"}, {"max_epochs": 6}, 6, [2, 5], id="training-metric"),
        pytest.param(
            {"where": "training", "on_step": True},
            {"max_epochs": 6, "accumulate_grad_batches": 2},
            6,
            [2, 5],
            id="training-metric-accumulate",
        ),
        pytest.param(
            {"where": "training"}, {"max_epochs": 6, "limit_val_batches": 0}, 6, [2, 5], id="training-no-validation"
        ),
        pytest.param(
            {"where": "training"}, {"max_epochs": 6, "check_val_every_n_epoch": 4}, 6, [2, 5], id="training-sparse-val"
        ),
    ],
)
def test_callback_steps_once_per_fresh_value(
    tmp_path: Any, model_kwargs: dict[str, Any], trainer_kwargs: dict[str, Any], evaluations: int, cut_epochs: list[int]
) -> None:
    """Evaluations == fresh values of the monitor, and the cuts fall in the hand-computed epochs."""
    model = _Model(_VALUES, **model_kwargs)
    callback, fit = _fit(tmp_path, model, PlateauConfig(patience=1), **trainer_kwargs)
    scheduler = _scheduler(callback)
    fresh = model.epochs_trained if model.where == "training" else model.evaluations
    assert fresh == evaluations
    assert scheduler.num_evaluations == evaluations
    assert [row.evaluation for row in callback.history] == list(range(1, evaluations + 1))
    assert [cut.evaluation for cut in scheduler.cuts] == _CUT_EVALUATIONS[: len(cut_epochs)]
    assert [cut.epoch for cut in scheduler.cuts] == cut_epochs
    # the LR each epoch trained at: 0.1, divided by 10 from the epoch after each cut
    expected_lrs = [0.1 * 0.1 ** sum(cut < epoch for cut in cut_epochs) for epoch in range(fit.max_epochs)]
    assert model.lr_at_train_start == pytest.approx(expected_lrs, rel=1e-12)


def test_callback_steps_at_each_validation_of_val_check_interval_int(tmp_path: Any) -> None:
    """With val_check_interval=2 the cuts are judged mid-epoch, at global steps 6 and 12 (after batches 2, 4, ...)."""
    model = _Model(_VALUES)
    callback, _ = _fit(tmp_path, model, PlateauConfig(patience=1), max_epochs=3, val_check_interval=2)
    assert [(cut.epoch, cut.global_step) for cut in _scheduler(callback).cuts] == [(1, 6), (2, 12)]
    assert [row.global_step for row in callback.history] == [2, 4, 6, 8, 10, 12]


def test_callback_ignores_validate_outside_fit(tmp_path: Any) -> None:
    """`trainer.validate()` after fit logs the monitor but is no evaluation of the plateau."""
    model = _Model(_VALUES)
    callback, fit = _fit(tmp_path, model, PlateauConfig(patience=1), max_epochs=2)
    fit.validate(model, verbose=False)
    assert model.evaluations == 3
    assert _scheduler(callback).num_evaluations == len(callback.history) == 2


@needs_lightning_2_6
@pytest.mark.parametrize("interval", ["00:00:00:00", {"seconds": 0}, {"microseconds": 200}])
def test_callback_steps_once_per_time_based_validation(tmp_path: Any, interval: Any) -> None:
    """Time-based val_check_interval: evaluations == validation runs counted by the module, cuts on the script."""
    model = _Model(_VALUES)
    callback, _ = _fit(tmp_path, model, PlateauConfig(patience=1), max_epochs=2, val_check_interval=interval)
    scheduler = _scheduler(callback)
    assert model.validation_runs >= 1
    assert scheduler.num_evaluations == model.validation_runs == model.evaluations
    assert [cut.evaluation for cut in scheduler.cuts] == [e for e in _CUT_EVALUATIONS if e <= model.evaluations]
    if interval != {"microseconds": 200}:
        # a zero interval validates after every one of the 8 batches, deterministically
        assert [cut.epoch for cut in scheduler.cuts] == [0, 1, 1]


class _ManualModel(ScriptedPlateauModel):
    """Manual optimization; optionally steps its plateau scheduler by hand, as torch's docs show."""

    def __init__(self, values: Sequence[float], plateau: PlateauConfig, step_by_hand: bool = False) -> None:
        super().__init__(values, plateau=plateau)
        self.automatic_optimization = False
        self.step_by_hand = step_by_hand

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        optimizer.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        optimizer.step()  # type: ignore[union-attr]
        return loss

    def on_train_epoch_end(self) -> None:
        if self.step_by_hand:
            self.lr_schedulers().step(self.trainer.callback_metrics["val_loss"])  # type: ignore[union-attr]


def test_callback_steps_with_manual_optimization(tmp_path: Any) -> None:
    """Under manual optimization the callback (added by the mixin) steps once per validation, as under automatic."""
    model = _ManualModel(_VALUES, PlateauConfig(patience=1))
    fit = trainer(tmp_path, max_epochs=6)
    fit.fit(model)
    callback = plateau_of(fit)
    scheduler = _scheduler(callback)
    assert scheduler.num_evaluations == model.evaluations == 6
    assert [cut.epoch for cut in scheduler.cuts] == [2, 5]
    assert model.lr_at_train_start == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_callback_refuses_a_scheduler_stepped_by_hand(tmp_path: Any) -> None:
    """Stepping the scheduler by hand while the callback owns it raises a clear error instead of counting twice."""
    model = _ManualModel(_VALUES, PlateauConfig(patience=1), step_by_hand=True)
    with pytest.raises(RuntimeError, match=r"stepped by PlateauCallback once per fresh value of 'val_loss'.*by hand"):
        trainer(tmp_path, max_epochs=2).fit(model)


@pytest.mark.parametrize(
    ("model_kwargs", "trainer_kwargs", "raised_at_epoch", "available"),
    [
        pytest.param({}, {}, 0, "'val_loss', 'val_mse'", id="every-epoch"),
        pytest.param({}, {"check_val_every_n_epoch": 2}, 1, "'val_loss', 'val_mse'", id="check_val_every_n_epoch-2"),
        pytest.param(
            {"where": "training", "monitor": "train_loss"},
            {"limit_val_batches": 0},
            0,
            "'train_loss'",
            id="no-validation",
        ),
    ],
)
def test_callback_strict_missing_monitor_raises_after_first_evaluation(
    tmp_path: Any, model_kwargs: dict[str, Any], trainer_kwargs: dict[str, Any], raised_at_epoch: int, available: str
) -> None:
    """strict: one clear error after the first evaluation that should have logged it, naming the metrics logged.

    Never Lightning's "Available metrics are: []" before any validation ran (check_val_every_n_epoch=2: not at epoch 0).
    """
    model = _Model(_VALUES, **model_kwargs)
    callback = PlateauCallback(PlateauConfig(monitor="val_typo"))
    fit = trainer(tmp_path, max_epochs=4, callbacks=[callback], **trainer_kwargs)
    with pytest.raises(RuntimeError) as error:
        fit.fit(model)
    message = str(error.value)
    assert "PlateauCallback monitors 'val_typo', but no evaluation logged it" in message
    assert f"Available metrics are: [{available}]" in message
    assert "self.log('val_typo', value)" in message
    assert fit.current_epoch == raised_at_epoch


class _EpochEndLoggingModel(_Model):
    def on_train_epoch_end(self) -> None:
        self.log("train_epoch_metric", 1.0)


def test_callback_explains_a_monitor_logged_in_on_train_epoch_end(tmp_path: Any) -> None:
    """A value logged in LightningModule.on_train_epoch_end comes after the callback's hook; the error says so."""
    callback = PlateauCallback(PlateauConfig(monitor="train_epoch_metric"))
    with pytest.raises(RuntimeError, match=r"logged in `LightningModule\.on_train_epoch_end` is not seen"):
        trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(_EpochEndLoggingModel(_VALUES))


def test_callback_non_strict_missing_monitor_warns_once(tmp_path: Any) -> None:
    """strict=False: exactly one warning over the whole fit, and the LR never changes."""
    model = _Model([1.0])
    callback = PlateauCallback(PlateauConfig(monitor="val_typo", patience=0, strict=False))
    fit = trainer(tmp_path, max_epochs=5, callbacks=[callback], check_val_every_n_epoch=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(model)
    ours = [str(w.message) for w in caught if "PlateauCallback monitors 'val_typo'" in str(w.message)]
    assert len(ours) == 1, ours
    assert "The learning rate stays unchanged (strict=False)" in ours[0]
    assert "'val_loss'" in ours[0]
    assert _scheduler(callback).num_evaluations == 0
    assert model.lr_at_train_start == [0.1] * 5


def test_callback_logs_a_message_at_each_cut(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The worked example: best in the 5th epoch, patience 10 -> cut at the end of the 16th: Lightning's epoch 15."""
    values = [1.0, 0.9, 0.8, 0.7, 0.412] + [0.5] * 12
    model = _Model(values, lr=1e-3, train_batches=1)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        callback, _ = _fit(tmp_path, model, PlateauConfig(patience=10), max_epochs=17)
    (cut,) = _scheduler(callback).cuts
    assert (cut.epoch, cut.evaluation, cut.best_epoch, cut.num_bad) == (15, 16, 4, 11)
    messages = [r.getMessage() for r in caplog.records if "has not improved" in r.getMessage()]
    assert messages == [
        "epoch 15, eval 16: val_loss has not improved on 0.4120 (epoch 4) for 11 evaluations (> patience 10):"
        " lr 1e-3 -> 1e-4"
    ]
    assert model.lr_at_train_start[15:] == pytest.approx([1e-3, 1e-4])


def test_callback_verbose_false_is_silent(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """verbose=False: the cut happens without a message."""
    callback = PlateauCallback(PlateauConfig(patience=0), verbose=False)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(_Model([1.0]))
    assert _scheduler(callback).num_reductions == 1
    assert not [r for r in caplog.records if "has not improved" in r.getMessage()]


def test_callback_attaches_scheduler_to_a_plain_optimizer(tmp_path: Any) -> None:
    """Callback-only path: a PlateauScheduler is attached, visible to Lightning and logged by LearningRateMonitor."""
    model = _Model(_VALUES)
    callback = PlateauCallback(PlateauConfig(patience=1))
    logger = CSVLogger(tmp_path, name="", version="")
    fit = trainer(
        tmp_path, max_epochs=6, callbacks=[callback, LearningRateMonitor("epoch")], logger=logger, log_every_n_steps=1
    )
    fit.fit(model)
    (config,) = fit.lr_scheduler_configs
    assert config.scheduler is callback.scheduler
    assert isinstance(config.scheduler, PlateauScheduler)
    assert config.scheduler.optimizer is fit.optimizers[0]
    assert (config.monitor, config.reduce_on_plateau) == ("val_loss", False)
    with open(logger.log_dir + "/metrics.csv") as file:
        logged = [float(row["lr-SGD"]) for row in csv.DictReader(file) if row.get("lr-SGD")]
    assert logged == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])


class _TorchPlateauModel(ScriptedModel):
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def test_callback_refuses_torchs_reduce_lr_on_plateau(tmp_path: Any) -> None:
    """A module returning torch's ReduceLROnPlateau gets a clear error instead of double stepping."""
    fit = trainer(tmp_path, max_epochs=1, callbacks=[PlateauCallback(PlateauConfig())])
    with pytest.raises(MisconfigurationException, match=r"returns a ReduceLROnPlateau and PlateauCallback is in"):
        fit.fit(_TorchPlateauModel([1.0]))


class _StepIntervalModel(ScriptedModel):
    """Returns a PlateauScheduler with interval="step", so Lightning's loop calls `step()` after every batch."""

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = PlateauScheduler(optimizer, PlateauConfig(patience=1))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "step"},
        }


def test_callback_replays_step_interval_pitfall(tmp_path: Any) -> None:
    """Pitfall replay: interval="step", val_check_interval=5, 20 batches: 8 steps for 8 validations, no cut.

    Lightning alone crashes at batch 0 when strict, or steps 36 times on stale values and cuts 7 times while the
    metric improves at every validation.
    """
    model = _StepIntervalModel([1.0 - 0.1 * i for i in range(8)], train_batches=20)
    callback = PlateauCallback()
    trainer(tmp_path, max_epochs=2, val_check_interval=5, callbacks=[callback]).fit(model)
    scheduler = _scheduler(callback)
    assert scheduler.num_evaluations == model.evaluations == 8
    assert scheduler.cuts == []
    assert model.lr_at_train_start == [0.1, 0.1]


def test_callback_reused_for_a_second_fit_starts_a_new_history(tmp_path: Any) -> None:
    """One PlateauCallback in two fresh fits: each history matches that fit's own scheduler."""
    callback = PlateauCallback(PlateauConfig(patience=1), log_traces=False, verbose=False)
    for max_epochs in (5, 3):
        fit = trainer(tmp_path, max_epochs=max_epochs, callbacks=[callback])
        fit.fit(ScriptedModel([1.0, 0.9] + [0.95] * 10))
        assert callback.scheduler is not None
        assert len(callback.history) == callback.scheduler.num_evaluations == max_epochs
        assert [row.evaluation for row in callback.history] == list(range(1, max_epochs + 1))


def test_callback_without_config_adopts_each_fits_module_plateau(tmp_path: Any) -> None:
    """A PlateauCallback() reused with two modules of different plateaus follows each; no false contradiction."""
    callback = PlateauCallback(log_traces=False, verbose=False)
    for patience in (1, 3):
        fit = trainer(tmp_path, max_epochs=2, callbacks=[callback])
        fit.fit(ScriptedPlateauModel([1.0, 2.0], plateau=PlateauConfig(patience=patience)))
        assert callback.config == PlateauConfig(patience=patience)
        assert _scheduler(callback).patience == patience


class _LoadersModel(ScriptedModel):
    """Several validation dataloaders; the monitor follows the script, logged from inside the loaders or at the end.

    ``style``: ``"suffix"`` logs ``val_loss`` in ``validation_step`` from every loader (Lightning names them
    ``val_loss/dataloader_idx_N``); ``"plain"`` logs it with ``add_dataloader_idx=False`` from loader 0 only;
    ``"epoch_end"`` logs it in ``on_validation_epoch_end``.
    """

    def __init__(self, values: Sequence[float], loaders: int, style: str, **kwargs: Any) -> None:
        super().__init__(values, **kwargs)
        self.loaders = loaders
        self.style = style
        self.validation_runs = 0

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        value = self.values[min(self.validation_runs, len(self.values) - 1)]
        if self.style == "suffix":
            # Each loader logs its own series; loader 0's is the script, the others a constant that would never cut.
            self.log("val_loss", value if dataloader_idx == 0 else 0.0)
        elif self.style == "plain" and dataloader_idx == 0:
            self.log("val_loss", value, add_dataloader_idx=False)
        self.log("val_other", 1.0)

    def on_validation_epoch_end(self) -> None:
        if self.style == "epoch_end":
            self.log("val_loss", self.values[min(self.validation_runs, len(self.values) - 1)])
        self.validation_runs += 1

    def val_dataloader(self) -> Any:
        return [loader(4) for _ in range(self.loaders)]


@pytest.mark.parametrize("loaders", [2, 3])
@pytest.mark.parametrize(
    ("style", "monitor"),
    [("suffix", "val_loss/dataloader_idx_0"), ("plain", "val_loss"), ("epoch_end", "val_loss")],
)
def test_stepping_several_val_dataloaders_one_evaluation_per_validation_run(
    tmp_path: Any, loaders: int, style: str, monitor: str
) -> None:
    """With 2 or 3 val dataloaders the monitor is judged once per validation run, as with one loader."""
    model = _LoadersModel(_VALUES + [0.7] * 10, loaders, style, monitor=monitor)
    config = PlateauConfig(monitor=monitor, patience=1, factor=0.5)
    callback, _ = _fit(tmp_path, model, config, max_epochs=8)
    scheduler = _scheduler(callback)
    assert scheduler.num_evaluations == model.validation_runs == 8
    assert [cut.evaluation for cut in scheduler.cuts] == [3, 6, 8]
    assert [row.value for row in callback.history][:6] == pytest.approx(_VALUES)


def test_stepping_several_val_dataloaders_other_loader_judged_by_its_own_name(tmp_path: Any) -> None:
    """Each loader's value is its own: watching loader 1's flat series cuts on its plateau, not loader 0's."""
    model = _LoadersModel(_VALUES + [0.7] * 10, 2, "suffix", monitor="val_loss/dataloader_idx_1")
    config = PlateauConfig(monitor="val_loss/dataloader_idx_1", patience=1, factor=0.5)
    callback, _ = _fit(tmp_path, model, config, max_epochs=6)
    assert [row.value for row in callback.history] == [0.0] * 6
    assert [cut.evaluation for cut in _scheduler(callback).cuts] == [3, 5]


class _PerStepOnly(_Model):
    """Logs the monitor in `training_step` per step only (Lightning's default there): never one value per epoch."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss


def test_callback_monitor_logged_per_step_only_says_so(tmp_path: Any) -> None:
    """A monitor logged per step only is in callback_metrics, yet never fresh: the error says why and how to fix."""
    callback = PlateauCallback(PlateauConfig(monitor="train_loss"))
    fit = trainer(tmp_path, max_epochs=2, callbacks=[callback], limit_val_batches=0)
    with pytest.raises(RuntimeError) as error:
        fit.fit(_PerStepOnly(_VALUES))
    message = str(error.value)
    assert "monitors 'train_loss', which is logged, but only per step" in message
    assert "on_epoch=True" in message
    assert "Available metrics are" not in message
