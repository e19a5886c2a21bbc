"""PlateauEarlyStopping: stops on the scheduler's evaluations, after its decision, by the documented rules."""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Any, Optional

import pytest
import torch
from helpers import ScriptedModel, ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauEarlyStopping, PlateauScheduler
from lightning_plateau._lightning import EarlyStoppingReason

# The class docstring's worked example: best at epoch 3 (1-based), cuts at epochs 6 and 10, LR exhausted at 10.
WORKED = PlateauConfig(patience=2, cooldown=1, factor=0.1, min_lr=1e-3)
WORKED_VALUES = [1.0, 0.8, 0.5] + [0.5] * 40
HALVING = PlateauConfig(patience=1, factor=0.5, min_lr=0.0)
FLAT = [1.0] + [1.0] * 40
ACC_FLAT = [0.5, 0.6, 0.7] + [0.7] * 40
VAL_ACC = PlateauConfig(monitor="val_acc", mode="max", patience=1, factor=0.5, min_lr=0.025)


class ResumableScriptedModel(ScriptedPlateauModel):
    """Keeps its position in the script across a resume, as a real metric would continue."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["scripted_evaluations"] = self.evaluations

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = checkpoint["scripted_evaluations"]


class PlateauSchedulerModel(ScriptedModel):
    """No mixin: returns a PlateauScheduler itself, so the plateau config is known only at fit start."""

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": PlateauScheduler(optimizer, WORKED), "monitor": "val_loss"},
        }


def _fit(
    tmp_path: Any,
    values: list[float],
    plateau: PlateauConfig,
    early_stopping: PlateauEarlyStopping,
    *,
    monitor: str = "val_loss",
    model_class: type[ScriptedPlateauModel] = ScriptedPlateauModel,
    quiet: bool = True,
    **trainer_kwargs: Any,
) -> tuple[ScriptedPlateauModel, Trainer]:
    model = model_class(values, plateau=plateau, monitor=monitor, train_batches=1)
    callbacks = [early_stopping, _quiet(plateau)] if quiet else [early_stopping]
    options: dict[str, Any] = {"max_epochs": 30, "limit_val_batches": 1, "callbacks": callbacks}
    options.update(trainer_kwargs)
    fitted = trainer(tmp_path, **options)
    fitted.fit(model)
    return model, fitted


def _quiet(plateau: PlateauConfig) -> PlateauCallback:
    # The mixin's callback would draw a chart at the end of each fit: a second per test, for nothing tested here.
    return PlateauCallback(plateau, verbose=False, log_traces=False)


def _plateau(fitted: Trainer) -> PlateauCallback:
    return plateau_of(fitted)


def _cut_epochs(fitted: Trainer) -> list[Optional[int]]:
    scheduler = _plateau(fitted).scheduler
    assert scheduler is not None
    return [cut.epoch for cut in scheduler.cuts]


def _stop_epoch(early_stopping: PlateauEarlyStopping, fitted: Trainer) -> Optional[int]:
    return early_stopping.stopped_epoch if fitted.should_stop else None


# Epochs are 0-based, as Lightning's `stopped_epoch`; one validation per epoch unless the trainer says otherwise.
@pytest.mark.parametrize(
    ("values", "plateau", "kwargs", "monitor", "expected_cuts", "expected_stop"),
    [
        pytest.param(WORKED_VALUES, WORKED, {}, "val_loss", [5, 9], 13, id="worked-example"),
        pytest.param(
            [1.0, 0.8, 0.5] + [0.5] * 8 + [0.4] * 30, WORKED, {}, "val_loss", [5, 9], 15, id="improves-after-exhaustion"
        ),
        # the exhausting cut restarts the count; the first evaluation counted after it stops, at patience 0 as at 1
        pytest.param(WORKED_VALUES, WORKED, {"patience": 0}, "val_loss", [5, 9], 10, id="patience-0"),
        pytest.param(WORKED_VALUES, WORKED, {"patience": 6}, "val_loss", [5, 9], 15, id="explicit-patience"),
        pytest.param(FLAT, PlateauConfig(patience=2, cooldown=1, min_lr=0.1), {}, "val_loss", [], 4, id="at-floor"),
        pytest.param(ACC_FLAT, VAL_ACC, {}, "val_acc", [4, 6], 8, id="val_acc-max"),
        pytest.param(
            [0.5, 0.6, 0.7, 0.7, 0.7] + [0.8] * 30, VAL_ACC, {}, "val_acc", [4, 7], 9, id="val_acc-improves-after-cut"
        ),
        pytest.param(FLAT, HALVING, {}, "val_loss", [2, 4, 6, 8, 10, 12, 14], None, id="never-exhausted"),
    ],
)
def test_early_stopping_lr_exhausted_rule(
    tmp_path: Any,
    values: list[float],
    plateau: PlateauConfig,
    kwargs: dict[str, Any],
    monitor: str,
    expected_cuts: list[int],
    expected_stop: Optional[int],
) -> None:
    """Default rule: stop `patience` evaluations without improvement after the LR is exhausted, never before."""
    early_stopping = PlateauEarlyStopping(**kwargs)
    _, fitted = _fit(tmp_path, values, plateau, early_stopping, monitor=monitor, max_epochs=16)
    assert _cut_epochs(fitted) == expected_cuts
    assert _stop_epoch(early_stopping, fitted) == expected_stop
    assert fitted.early_stopping_callback is early_stopping
    if expected_stop is not None:
        assert early_stopping.stop_rule == "lr_exhausted"
        assert early_stopping.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
        assert expected_stop >= max(expected_cuts, default=0)


@pytest.mark.parametrize(
    ("values", "plateau", "max_reductions", "monitor", "expected_cuts", "expected_stop", "expected_rule"),
    [
        pytest.param(FLAT, HALVING, 2, "val_loss", [2, 4], 6, "max_reductions", id="third-cut"),
        pytest.param(FLAT, HALVING, 0, "val_loss", [], 2, "max_reductions", id="first-cut"),
        pytest.param(
            FLAT,
            PlateauConfig(patience=1, factor=0.1, min_lr=1e-3),
            5,
            "val_loss",
            [2, 4],
            6,
            "lr_exhausted",
            id="exhausted-first",
        ),
        pytest.param(
            [0.5, 0.6] + [0.6] * 30,
            PlateauConfig(monitor="val_acc", mode="max", patience=1, factor=0.5),
            1,
            "val_acc",
            [3],
            5,
            "max_reductions",
            id="val_acc-max",
        ),
    ],
)
def test_early_stopping_max_reductions_rule(
    tmp_path: Any,
    values: list[float],
    plateau: PlateauConfig,
    max_reductions: int,
    monitor: str,
    expected_cuts: list[int],
    expected_stop: int,
    expected_rule: str,
) -> None:
    """`max_reductions=K` stops at the evaluation that calls for cut K+1, unapplied; an exhausted LR stops earlier."""
    early_stopping = PlateauEarlyStopping(max_reductions=max_reductions)
    _, fitted = _fit(tmp_path, values, plateau, early_stopping, monitor=monitor)
    assert _cut_epochs(fitted) == expected_cuts
    assert _stop_epoch(early_stopping, fitted) == expected_stop
    assert early_stopping.stop_rule == expected_rule


@pytest.mark.parametrize(
    ("values", "plateau", "patience", "reset_on_cut", "monitor", "expected_cuts", "expected_stop"),
    [
        # Lightning's counting: from the best value, cuts or not.
        pytest.param(FLAT, HALVING, 3, False, "val_loss", [2], 3, id="classic"),
        pytest.param(FLAT, HALVING, 1, True, "val_loss", [], 1, id="reset-stops-before-first-cut"),
        # Restarted at each cut: waits while the scheduler keeps cutting, stops once cuts change nothing.
        pytest.param(
            FLAT, PlateauConfig(patience=1, factor=0.5, min_lr=0.025), 2, True, "val_loss", [2, 4], 6, id="reset"
        ),
        pytest.param(
            FLAT, PlateauConfig(patience=1, factor=0.5, min_lr=0.025), 2, False, "val_loss", [2], 2, id="no-reset"
        ),
        pytest.param(ACC_FLAT, VAL_ACC, 3, False, "val_acc", [4], 5, id="val_acc-max"),
    ],
)
def test_early_stopping_classic_patience_rule(
    tmp_path: Any,
    values: list[float],
    plateau: PlateauConfig,
    patience: int,
    reset_on_cut: bool,
    monitor: str,
    expected_cuts: list[int],
    expected_stop: int,
) -> None:
    """`wait_for_min_lr=False`: `patience` evaluations without improvement, optionally restarted at each cut."""
    early_stopping = PlateauEarlyStopping(patience, wait_for_min_lr=False, reset_on_cut=reset_on_cut)
    _, fitted = _fit(tmp_path, values, plateau, early_stopping, monitor=monitor)
    assert _cut_epochs(fitted) == expected_cuts
    assert _stop_epoch(early_stopping, fitted) == expected_stop
    assert early_stopping.stop_rule == "patience"


@pytest.mark.parametrize(
    ("trainer_kwargs", "patience", "expected_cuts", "expected_stop", "expected_evaluations"),
    [
        # evaluation n runs at the end of epoch 2n - 1 (0-based)
        pytest.param({"check_val_every_n_epoch": 2, "max_epochs": 30}, None, [11, 19], 27, 14, id="every-2nd-epoch"),
        pytest.param({"check_val_every_n_epoch": 2, "max_epochs": 30}, 0, [11, 19], 21, 11, id="every-2nd-patience-0"),
        # two validations per epoch: evaluation n in epoch (n - 1) // 2
        pytest.param({"val_check_interval": 0.5, "max_epochs": 10}, None, [2, 4], 6, 14, id="twice-per-epoch"),
        # a training metric (on_epoch=True) is fresh at every epoch end, whatever the validation schedule
        pytest.param(
            {"where": "training", "check_val_every_n_epoch": 3, "max_epochs": 20}, None, [5, 9], 13, 14, id="training"
        ),
    ],
)
def test_early_stopping_counts_evaluations_not_epochs(
    tmp_path: Any,
    trainer_kwargs: dict[str, Any],
    patience: Optional[int],
    expected_cuts: list[int],
    expected_stop: int,
    expected_evaluations: int,
) -> None:
    """The worked example's evaluations 6, 10 and 14 land on other epochs when validation is sparser or denser."""
    options = dict(trainer_kwargs)
    where = options.pop("where", "validation")
    plateau = WORKED if where == "validation" else dataclasses.replace(WORKED, monitor="train_loss")
    early_stopping = PlateauEarlyStopping(patience)
    model = ScriptedPlateauModel(WORKED_VALUES, plateau=plateau, monitor=plateau.monitor, where=where, train_batches=2)
    fitted = trainer(tmp_path, limit_val_batches=1, callbacks=[early_stopping, _quiet(plateau)], **options)
    fitted.fit(model)
    assert _cut_epochs(fitted) == expected_cuts
    assert early_stopping.stopped_epoch == expected_stop
    assert _plateau(fitted).history[-1].evaluation == expected_evaluations


def test_early_stopping_reason_message(tmp_path: Any) -> None:
    """The reason names the rule, the floor, the epoch it was reached, the best value and the count."""
    early_stopping = PlateauEarlyStopping()
    _fit(tmp_path, WORKED_VALUES, WORKED, early_stopping, quiet=False)  # with the PlateauCallback the mixin adds
    assert early_stopping.stopping_reason_message == (
        "lr exhausted: lr reached min_lr 1e-3 at epoch 9 and val_loss did not improve on 0.5000 for 4 evaluations"
    )
    assert early_stopping.state_dict()["stopping_reason"] == EarlyStoppingReason.PATIENCE_EXHAUSTED.value


@pytest.mark.parametrize(
    ("check_finite", "expected_stop", "expected_rule"),
    [(True, 1, "non_finite"), (False, None, None)],
)
def test_early_stopping_non_finite_value(
    tmp_path: Any, check_finite: bool, expected_stop: Optional[int], expected_rule: Optional[str]
) -> None:
    """A NaN stops at once with `check_finite`, as Lightning's EarlyStopping does; without it, the rules go on."""
    early_stopping = PlateauEarlyStopping(check_finite=check_finite)
    _, fitted = _fit(tmp_path, [1.0, math.nan, 0.9, 0.8, 0.7], WORKED, early_stopping, max_epochs=5)
    assert _stop_epoch(early_stopping, fitted) == expected_stop
    assert early_stopping.stop_rule == expected_rule
    if expected_rule:
        assert early_stopping.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.parametrize("resume_epoch", [3, 7, 11])
def test_early_stopping_resume_gives_same_stop(tmp_path: Any, resume_epoch: int) -> None:
    """Resumed before, between and after the cuts: same stop epoch, cuts, LR trajectory and reason."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    whole = PlateauEarlyStopping()
    model, fitted = _fit(
        tmp_path / "whole",
        WORKED_VALUES,
        WORKED,
        whole,
        model_class=ResumableScriptedModel,
        callbacks=[whole, checkpoints, _quiet(WORKED)],
        enable_checkpointing=True,
    )

    resumed = PlateauEarlyStopping()
    resumed_model = ResumableScriptedModel(WORKED_VALUES, plateau=WORKED, train_batches=1)
    refit = trainer(tmp_path / "resumed", max_epochs=30, limit_val_batches=1, callbacks=[resumed, _quiet(WORKED)])
    refit.fit(resumed_model, ckpt_path=str(tmp_path / "ckpt" / f"epoch={resume_epoch}.ckpt"))

    assert resumed.stopped_epoch == whole.stopped_epoch == 13
    assert _cut_epochs(refit) == _cut_epochs(fitted) == [5, 9]
    assert _plateau(refit).history == _plateau(fitted).history
    assert resumed_model.lr_at_train_start == model.lr_at_train_start[resume_epoch + 1 :]
    assert resumed.stopping_reason_message == whole.stopping_reason_message


def test_early_stopping_state_dict_round_trip() -> None:
    """`state_dict` is plain data; one written by Lightning's EarlyStopping (no plateau keys) still loads."""
    early_stopping = PlateauEarlyStopping()
    early_stopping.stop_rule = "lr_exhausted"
    early_stopping._exhausted_at, early_stopping._exhausted_epoch = 10, 9
    other = PlateauEarlyStopping()
    other.load_state_dict(early_stopping.state_dict())
    assert (other.stop_rule, other._exhausted_at, other._exhausted_epoch) == ("lr_exhausted", 10, 9)

    legacy = EarlyStopping(monitor="val_loss").state_dict()
    other.load_state_dict(legacy)
    assert (other.stop_rule, other._exhausted_at, other._exhausted_epoch) == (None, None, None)


@pytest.mark.parametrize(
    ("make_model", "extra_callbacks"),
    [
        pytest.param(
            lambda: PlateauSchedulerModel(WORKED_VALUES, train_batches=1),
            [PlateauCallback(verbose=False, log_traces=False)],
            id="module",
        ),
        pytest.param(lambda: ScriptedModel(WORKED_VALUES, train_batches=1), [_quiet(WORKED)], id="callback"),
    ],
)
def test_early_stopping_follows_plateau_without_mixin(tmp_path: Any, make_model: Any, extra_callbacks: list) -> None:
    """The plateau may come from the PlateauCallback's config or from the module's PlateauScheduler."""
    early_stopping = PlateauEarlyStopping()
    fitted = trainer(tmp_path, max_epochs=30, limit_val_batches=1, callbacks=[early_stopping, *extra_callbacks])
    fitted.fit(make_model())
    assert early_stopping.stopped_epoch == 13
    assert (early_stopping.monitor, early_stopping.mode, early_stopping.patience) == ("val_loss", "min", 4)


def test_early_stopping_without_plateau_raises(tmp_path: Any) -> None:
    """A Trainer without a PlateauCallback fails at setup with the fix."""
    fitted = trainer(tmp_path, callbacks=[PlateauEarlyStopping()])
    with pytest.raises(
        MisconfigurationException, match=r"no PlateauCallback drives a plateau in this Trainer\. Inherit PlateauMixin"
    ):
        fitted.fit(ScriptedModel([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"monitor": "val_acc"}, r"PlateauEarlyStopping\(monitor='val_acc'\) contradicts the plateau it follows"),
        ({"mode": "max"}, r"PlateauEarlyStopping\(mode='max'\) contradicts .*drop `mode=`"),
    ],
)
def test_early_stopping_contradicting_plateau_raises(tmp_path: Any, kwargs: dict[str, Any], match: str) -> None:
    """A monitor or mode of its own that differs from the plateau's is an error naming both."""
    with pytest.raises(MisconfigurationException, match=match):
        _fit(tmp_path, FLAT, WORKED, PlateauEarlyStopping(**kwargs), max_epochs=1)


@pytest.mark.filterwarnings("error::UserWarning")
def test_early_stopping_agreeing_monitor_is_silent(tmp_path: Any) -> None:
    """Stating the plateau's own monitor and mode is allowed and keys the checkpoint state by them."""
    early_stopping = PlateauEarlyStopping(monitor="val_loss", mode="min")
    _fit(tmp_path, WORKED_VALUES, WORKED, early_stopping)
    assert early_stopping.stopped_epoch == 13
    assert early_stopping.state_key == "PlateauEarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
    assert PlateauEarlyStopping().state_key == "PlateauEarlyStopping"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patience": -1}, ValueError, r"`patience` must be an int >= 0 or None, got -1"),
        ({"patience": 2.5}, ValueError, r"`patience` must be an int >= 0 or None, got 2.5"),
        ({"max_reductions": -2}, ValueError, r"`max_reductions` must be an int >= 0 or None, got -2"),
        ({"monitor": ""}, ValueError, r"`monitor` must be a metric name or None \(the plateau's\), got ''"),
        ({"reset_on_cut": "yes"}, ValueError, r"`reset_on_cut` must be True or False, got 'yes'"),
        ({"mode": "up"}, MisconfigurationException, r"`mode` can be min, max, got up"),
        (
            {"patience": "val_loss"},
            ValueError,
            r"got 'val_loss'\. PlateauEarlyStopping's first argument is `patience`.*pass `monitor='val_loss'`",
        ),
        ({"min_delta": -0.1}, ValueError, r"`min_delta` must be a finite number >= 0 or None .*got -0\.1"),
        ({"strict": "yes"}, ValueError, r"`strict` must be True, False or None \(the plateau's\), got 'yes'"),
        ({"stopping_threshold": "low"}, ValueError, r"`stopping_threshold` must be a number or None, got 'low'"),
        ({"divergence_threshold": math.nan}, ValueError, r"`divergence_threshold` must be a number or None, got nan"),
        ({"log_rank_zero_only": 1}, ValueError, r"`log_rank_zero_only` must be True or False, got 1"),
        (
            {"check_on_train_epoch_end": False},
            ValueError,
            r"check_on_train_epoch_end=False\): where it decides is not a setting.*Drop `check_on_train_epoch_end=`",
        ),
    ],
)
def test_early_stopping_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Bad constructor arguments fail at once, naming the value given and what is allowed."""
    with pytest.raises(error, match=match):
        PlateauEarlyStopping(**kwargs)


@pytest.mark.parametrize(
    ("lrs", "min_lrs", "factor", "eps", "expected"),
    [
        ([1e-3], [1e-3], 0.1, 1e-8, True),
        ([1e-3 * (1 + 1e-15)], [1e-3], 0.1, 1e-8, True),  # what 0.1 * 0.1 * 0.1 leaves behind
        ([2e-3], [1e-3], 0.1, 1e-8, False),
        ([1e-3, 1e-2], [1e-3, 1e-4], 0.1, 1e-8, False),  # every group must be exhausted
        ([1e-3, 1e-4], [1e-3, 1e-4], 0.1, 1e-8, True),
        ([1e-9], [0.0], 0.1, 1e-8, True),  # a cut smaller than eps is not applied
        ([1e-7], [0.0], 0.1, 1e-8, False),
    ],
)
def test_early_stopping_lr_exhausted_is_the_scheduler_rule(
    lrs: list[float], min_lrs: list[float], factor: float, eps: float, expected: bool
) -> None:
    """Exhausted means `lr - max(lr * factor, min_lr) <= eps` for every group: exactly when a cut changes nothing."""
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    scheduler = PlateauScheduler(
        torch.optim.SGD(params), PlateauConfig(patience=0, factor=factor, eps=eps, min_lr=min_lrs)
    )
    assert scheduler.exhausted is expected
    scheduler.step(1.0)
    scheduler.step(1.0)  # one evaluation without improvement > patience 0: the scheduler tries to cut
    assert (scheduler.num_reductions == 0) is expected


# Plateau patience 0 cuts at every evaluation without improvement: 0.1 -> 0.05 -> 0.025 -> 0.0125, then exhausted.
EVERY_BAD = PlateauConfig(patience=0, factor=0.5, min_lr=0.0125)
IMPROVES_TWICE = [1.0, 0.5] + [0.5] * 10
BAD_IMPROVES_BAD = [1.0, 0.9, 0.9, 0.8, 0.8, 0.8] + [0.8] * 6
CLASSIC = {"wait_for_min_lr": False, "reset_on_cut": False}
RESET = {"wait_for_min_lr": False, "reset_on_cut": True}


def _lightning_stop_evaluation(tmp_path: Any, values: list[float], monitor: str, mode: str, patience: int) -> Any:
    """Where Lightning's own EarlyStopping stops on `values` (1-based evaluation), without any plateau."""
    early_stopping = EarlyStopping(monitor=monitor, mode=mode, patience=patience)
    model = ScriptedModel(values, monitor=monitor, train_batches=1)
    fitted = trainer(tmp_path / "lightning", max_epochs=8, limit_val_batches=1, callbacks=[early_stopping])
    fitted.fit(model)
    return early_stopping.stopped_epoch + 1 if fitted.should_stop else None


# `same_as_lightning`: rows whose rule is Lightning's classic counting, so its EarlyStopping must stop there too.
@pytest.mark.parametrize(
    ("values", "plateau", "kwargs", "patience", "expected_stop", "same_as_lightning"),
    [
        pytest.param(IMPROVES_TWICE, HALVING, CLASSIC, 0, 3, True, id="classic-0-improving"),
        pytest.param(IMPROVES_TWICE, HALVING, CLASSIC, 1, 3, True, id="classic-1-improving"),
        pytest.param(FLAT, HALVING, CLASSIC, 0, 2, True, id="classic-0-flat"),
        pytest.param(FLAT, HALVING, CLASSIC, 1, 2, True, id="classic-1-flat"),
        pytest.param(BAD_IMPROVES_BAD, HALVING, CLASSIC, 2, 6, True, id="classic-2-restarts-at-improvement"),
        pytest.param(ACC_FLAT, VAL_ACC, CLASSIC, 0, 4, True, id="classic-0-val_acc-max"),
        pytest.param(FLAT, EVERY_BAD, CLASSIC, 0, 2, True, id="classic-0-cut-counts"),
        # restarted at each cut: the cut evaluations are not counted, the first one after the LR is exhausted is
        pytest.param(IMPROVES_TWICE, HALVING, RESET, 0, 3, True, id="reset-0-before-any-cut"),
        pytest.param(FLAT, EVERY_BAD, RESET, 0, 5, False, id="reset-0-after-cuts"),
        pytest.param(FLAT, EVERY_BAD, RESET, 1, 5, False, id="reset-1-after-cuts"),
        # default rule: counted after the evaluation whose cut exhausted the LR (or from the start at the floor)
        pytest.param(IMPROVES_TWICE, PlateauConfig(min_lr=0.1), {}, 0, 3, False, id="default-0-at-floor"),
        pytest.param(IMPROVES_TWICE, PlateauConfig(min_lr=0.1), {}, 1, 3, False, id="default-1-at-floor"),
        pytest.param(FLAT, EVERY_BAD, {}, 0, 5, False, id="default-0-after-exhausting-cut"),
        pytest.param(FLAT, EVERY_BAD, {}, 1, 5, False, id="default-1-after-exhausting-cut"),
        # max_reductions does not count with patience: the evaluation that calls for the cut over the limit
        pytest.param(FLAT, EVERY_BAD, {"max_reductions": 1}, 0, 3, False, id="max_reductions-0"),
        pytest.param(FLAT, EVERY_BAD, {"max_reductions": 1}, 1, 3, False, id="max_reductions-1"),
        pytest.param(
            [1.0, 0.5, 0.25] + [0.25] * 9, EVERY_BAD, {"max_reductions": 0}, 0, 4, False, id="max_reductions-improving"
        ),
    ],
)
def test_early_stopping_patience_0_and_1_count_like_lightning(
    tmp_path: Any,
    values: list[float],
    plateau: PlateauConfig,
    kwargs: dict[str, Any],
    patience: int,
    expected_stop: Optional[int],
    same_as_lightning: bool,
) -> None:
    """An improving evaluation never stops on patience; patience 0 stops at the first counted bad one, as 1 does."""
    early_stopping = PlateauEarlyStopping(patience, **kwargs)
    _, fitted = _fit(tmp_path, values, plateau, early_stopping, monitor=plateau.monitor, max_epochs=8)
    history = _plateau(fitted).history
    assert (history[-1].evaluation if fitted.should_stop else None) == expected_stop
    if early_stopping.stop_rule in ("patience", "lr_exhausted"):
        assert early_stopping.wait_count >= max(patience, 1)
        assert "for 0 evaluations" not in (early_stopping.stopping_reason_message or "")
    if same_as_lightning:
        assert _lightning_stop_evaluation(tmp_path, values, plateau.monitor, plateau.mode, patience) == expected_stop


def test_early_stopping_reused_in_a_new_trainer_counts_from_scratch(tmp_path: Any) -> None:
    """One PlateauEarlyStopping in two Trainers: the second fit follows its own plateau and counts from scratch."""
    early_stopping = PlateauEarlyStopping()
    _fit(tmp_path / "first", WORKED_VALUES, WORKED, early_stopping)
    assert (early_stopping.stopped_epoch, early_stopping.stop_rule) == (13, "lr_exhausted")
    message = early_stopping.stopping_reason_message

    model = ScriptedPlateauModel([2.0, 1.0] + [1.0] * 40, plateau=WORKED, train_batches=1)
    callbacks = [early_stopping, _quiet(WORKED)]
    second = trainer(tmp_path / "second", max_epochs=30, limit_val_batches=1, callbacks=callbacks)
    second.fit(model)
    # best at epoch 2: cuts at 5 and 9 (0-based epochs 4 and 8), four bad evaluations after: stop at epoch 13 (12)
    assert _cut_epochs(second) == [4, 8]
    assert (early_stopping.stopped_epoch, early_stopping.stop_rule) == (12, "lr_exhausted")
    assert early_stopping.stopping_reason_message == message.replace("epoch 9", "epoch 8").replace("0.5000", "1.0000")
    assert second.early_stopping_callback is early_stopping


def test_early_stopping_reused_without_a_stop_forgets_the_previous_stop(tmp_path: Any) -> None:
    """A second fit that does not stop leaves no trace of the first fit's stop."""
    early_stopping = PlateauEarlyStopping()
    _fit(tmp_path / "first", WORKED_VALUES, WORKED, early_stopping)
    _, second = _fit(tmp_path / "second", WORKED_VALUES, WORKED, early_stopping, max_epochs=3)
    assert not second.should_stop
    assert (early_stopping.stop_rule, early_stopping.stopped_epoch) == (None, 0)
    assert early_stopping.stopping_reason == EarlyStoppingReason.NOT_STOPPED
    assert early_stopping.stopping_reason_message is None


def test_early_stopping_max_reductions_never_applies_the_cut_over_the_limit(tmp_path: Any) -> None:
    """Optimizer, scheduler, history, traces, checkpoint and messages all show K cuts after the stop, not K+1."""
    early_stopping = PlateauEarlyStopping(max_reductions=2)
    plateau = PlateauCallback(HALVING, verbose=False)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    logger = CSVLogger(tmp_path, name="traces", version=0)
    model, fitted = _fit(
        tmp_path,
        FLAT,
        HALVING,
        early_stopping,
        callbacks=[early_stopping, plateau, checkpoints],
        enable_checkpointing=True,
        logger=logger,
        log_every_n_steps=1,
    )
    # cuts at evaluations 3 and 5; evaluation 7 calls for the third
    scheduler = plateau.scheduler
    assert scheduler is not None
    assert [cut.evaluation for cut in scheduler.cuts] == [3, 5]
    assert early_stopping.stopped_epoch == 6
    assert fitted.optimizers[0].param_groups[0]["lr"] == 0.025
    assert model.lr_at_train_start == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    withheld = scheduler.withheld
    assert withheld is not None
    assert (withheld.evaluation, withheld.lrs_before, withheld.lrs_after) == (7, (0.025,), (0.0125,))
    # the counters are those of an evaluation that called for a cut none consumed: 2 bad (> patience 1), no cooldown
    assert (scheduler.num_bad_epochs, scheduler.cooldown_counter) == (2, 0)
    last = plateau.history[-1]
    assert (last.evaluation, last.cut, last.withheld, last.num_bad, last.cooldown, last.lrs) == (
        7,
        False,
        True,
        2,
        0,
        (0.025,),
    )
    assert [row.withheld for row in plateau.history].count(True) == 1
    assert early_stopping.stopping_reason_message == (
        "max reductions: val_loss did not improve on 1.0000 for 2 evaluations at epoch 6, which calls for cut 3;"
        " max_reductions=2, so that cut was not applied: lr stays 0.025"
    )

    rows = list(csv.DictReader((tmp_path / "traces" / "version_0" / "metrics.csv").open()))
    traced = [row for row in rows if row.get("plateau/evaluation")]
    assert (float(traced[-1]["plateau/reductions"]), float(traced[-1]["plateau/lr"])) == (2.0, 0.025)

    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 0.025
    saved = checkpoint["lr_schedulers"][0]
    assert (len(saved["cuts"]), saved["withheld"]["evaluation"]) == (2, 7)
    assert "_cut_limit" not in saved  # a limit of this fit's PlateauEarlyStopping, not the scheduler's state
    # the limit belonged to that fit
    assert scheduler._cut_limit is None


class BatchCountingModel(ResumableScriptedModel):
    """Counts the training batches it runs in this process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_run = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.batches_run += 1
        return super().training_step(batch, batch_idx)


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.parametrize("save_on_train_epoch_end", [True, False], ids=["train-epoch-end", "validation-end"])
@pytest.mark.parametrize(
    ("kwargs", "plateau", "values", "expected_stop", "expected_rule"),
    [
        pytest.param({}, WORKED, WORKED_VALUES, 13, "lr_exhausted", id="lr-exhausted"),
        pytest.param({"max_reductions": 1}, HALVING, FLAT, 4, "max_reductions", id="max-reductions"),
    ],
)
def test_early_stopping_resume_from_the_stopping_checkpoint_stops_at_once(
    tmp_path: Any,
    save_on_train_epoch_end: bool,
    kwargs: dict[str, Any],
    plateau: PlateauConfig,
    values: list[float],
    expected_stop: int,
    expected_rule: str,
) -> None:
    """The checkpoint written where the run stopped holds the stop: a resume runs no batch and says why."""
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=save_on_train_epoch_end
    )
    first = PlateauEarlyStopping(**kwargs)
    _, fitted = _fit(
        tmp_path / "first",
        values,
        plateau,
        first,
        model_class=BatchCountingModel,
        callbacks=[first, checkpoints, _quiet(plateau)],
        enable_checkpointing=True,
    )
    assert (first.stopped_epoch, first.stop_rule) == (expected_stop, expected_rule)
    lr = fitted.optimizers[0].param_groups[0]["lr"]

    resumed = PlateauEarlyStopping(**kwargs)
    resumed_plateau = _quiet(plateau)
    resumed_model = BatchCountingModel(values, plateau=plateau, train_batches=1)
    refit = trainer(tmp_path / "resumed", max_epochs=30, limit_val_batches=1, callbacks=[resumed, resumed_plateau])
    message = (
        r"PlateauEarlyStopping: the checkpoint was written after this run had stopped at epoch"
        rf" {expected_stop} \({expected_rule.replace('_', ' ')}: .*\); not training further\. To train on,"
    )
    with pytest.warns(UserWarning, match=message):
        refit.fit(resumed_model, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed_model.batches_run == 0
    assert refit.should_stop
    assert refit.state.finished
    assert (resumed.stopped_epoch, resumed.stop_rule) == (expected_stop, expected_rule)
    assert resumed.stopping_reason_message == first.stopping_reason_message
    assert resumed.stopping_reason == first.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert refit.optimizers[0].param_groups[0]["lr"] == lr
    assert resumed_plateau.history == _plateau(fitted).history


@pytest.mark.parametrize(
    ("values", "plateau", "kwargs", "expected_stop", "expected_reason", "expected_rule", "phrase"),
    [
        pytest.param(
            [1.0, 0.8, 0.4, 0.3],
            HALVING,
            {"stopping_threshold": 0.5},
            3,
            EarlyStoppingReason.STOPPING_THRESHOLD,
            "stopping_threshold",
            "Stopping threshold reached: val_loss = 0.4000 < 0.5 at epoch 2",
            id="stopping-min",
        ),
        pytest.param(
            [0.5, 0.7, 0.95, 0.96],
            VAL_ACC,
            {"stopping_threshold": 0.9},
            3,
            EarlyStoppingReason.STOPPING_THRESHOLD,
            "stopping_threshold",
            "Stopping threshold reached: val_acc = 0.9500 > 0.9 at epoch 2",
            id="stopping-max",
        ),
        pytest.param(
            [1.0, 2.0, 4.0, 8.0],
            HALVING,
            {"divergence_threshold": 3.0},
            3,
            EarlyStoppingReason.DIVERGENCE_THRESHOLD,
            "divergence_threshold",
            "Divergence threshold reached: val_loss = 4.0000 > 3 at epoch 2",
            id="divergence-min",
        ),
        pytest.param(
            [0.5, 0.3, 0.1, 0.0],
            VAL_ACC,
            {"divergence_threshold": 0.2},
            3,
            EarlyStoppingReason.DIVERGENCE_THRESHOLD,
            "divergence_threshold",
            "Divergence threshold reached: val_acc = 0.1000 < 0.2 at epoch 2",
            id="divergence-max",
        ),
        pytest.param(
            [1.0, math.inf, 0.5],
            HALVING,
            {"divergence_threshold": 3.0},
            2,
            EarlyStoppingReason.NON_FINITE_METRIC,
            "non_finite",
            "non-finite metric: val_loss = inf is not finite, at epoch 1",
            id="non-finite-first",
        ),
    ],
)
def test_early_stopping_thresholds_stop_as_lightnings(
    tmp_path: Any,
    values: list[float],
    plateau: PlateauConfig,
    kwargs: dict[str, Any],
    expected_stop: int,
    expected_reason: EarlyStoppingReason,
    expected_rule: str,
    phrase: str,
) -> None:
    """`stopping_threshold` and `divergence_threshold` stop where and why Lightning's EarlyStopping does."""
    early_stopping = PlateauEarlyStopping(**kwargs)
    _, fitted = _fit(tmp_path, values, plateau, early_stopping, monitor=plateau.monitor, max_epochs=4)
    assert early_stopping.stopped_epoch + 1 == expected_stop
    assert (early_stopping.stopping_reason, early_stopping.stop_rule) == (expected_reason, expected_rule)
    assert early_stopping.stopping_reason_message is not None
    assert early_stopping.stopping_reason_message.startswith(phrase)
    assert fitted.should_stop

    lightning = EarlyStopping(monitor=plateau.monitor, mode=plateau.mode, patience=100, **kwargs)
    reference = trainer(tmp_path / "lightning", max_epochs=4, limit_val_batches=1, callbacks=[lightning])
    reference.fit(ScriptedModel(values, monitor=plateau.monitor, train_batches=1))
    assert lightning.stopped_epoch + 1 == expected_stop
    if hasattr(lightning, "stopping_reason"):  # Lightning >= 2.6 names its reasons
        assert lightning.stopping_reason == expected_reason
        lightning_phrase = phrase.split(":")[0] if expected_rule != "non_finite" else "is not finite"
        assert lightning_phrase in (lightning.stopping_reason_message or "")


def test_early_stopping_accepts_lightnings_arguments_that_agree_with_the_plateau(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`min_delta`, `strict` and `log_rank_zero_only` are accepted with Lightning's meaning where they agree."""
    plateau = PlateauConfig(patience=1, factor=0.5, threshold=0.1, threshold_mode="abs", strict=False)
    early_stopping = PlateauEarlyStopping(
        2, wait_for_min_lr=False, reset_on_cut=False, min_delta=0.1, strict=False, log_rank_zero_only=False
    )
    with caplog.at_level("INFO", logger="lightning.pytorch.callbacks.early_stopping"):
        _fit(tmp_path, [1.0, 0.95, 0.92, 0.5], plateau, early_stopping, max_epochs=4)
    # 0.95 and 0.92 improve on 1.0 by less than min_delta 0.1: two evaluations without improvement
    assert (early_stopping.stopped_epoch, early_stopping.stop_rule) == (2, "patience")
    assert early_stopping.strict is False
    assert any("patience exhausted" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("plateau", "kwargs", "match"),
    [
        (
            WORKED,
            {"min_delta": 0.01},
            r"PlateauEarlyStopping\(min_delta=0\.01\) contradicts the plateau it follows \(threshold 0\.0001,"
            r" threshold_mode 'rel'\).*PlateauConfig\(threshold=0\.01, threshold_mode=\"abs\"\)",
        ),
        (
            dataclasses.replace(WORKED, threshold=0.02, threshold_mode="abs"),
            {"min_delta": 0.01},
            r"PlateauConfig\(threshold=0\.01, threshold_mode=\"abs\"\)",
        ),
        (
            WORKED,
            {"strict": False},
            r"PlateauEarlyStopping\(strict=False\) contradicts .*PlateauConfig\(strict=True\).*"
            r"set it on the plateau: PlateauConfig\(strict=False\)",
        ),
    ],
)
def test_early_stopping_refuses_settings_that_are_the_plateaus(
    tmp_path: Any, plateau: PlateauConfig, kwargs: dict[str, Any], match: str
) -> None:
    """A `min_delta` or `strict` that differs from the plateau's rule fails at fit start, naming where to set it."""
    with pytest.raises(MisconfigurationException, match=match):
        _fit(tmp_path, FLAT, plateau, PlateauEarlyStopping(**kwargs), max_epochs=1)


def test_early_stopping_beside_torchs_plateau_names_the_swap(tmp_path: Any) -> None:
    """With torch's own ReduceLROnPlateau in the module, the error says to write PlateauScheduler in its place."""

    class TorchPlateau(ScriptedModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    fitted = trainer(tmp_path, callbacks=[PlateauEarlyStopping()])
    with pytest.raises(
        MisconfigurationException, match=r"returns torch's ReduceLROnPlateau: write `PlateauScheduler\(`"
    ):
        fitted.fit(TorchPlateau([1.0]))


# A new best (0.41) at evaluation 6, where the slope's line through the 4 latest values shows no decrease.
_BEST_AT_THE_SLOPES_CUT = [0.71, 0.97, 0.45, 0.67, 0.88, 0.41] + [0.5] * 10


@pytest.mark.parametrize(
    ("values", "plateau", "expected_stop", "expected_message"),
    [
        pytest.param(
            _BEST_AT_THE_SLOPES_CUT,
            PlateauConfig(patience=3, factor=0.5),
            9,
            "max reductions: val_loss did not improve on 0.4100 for 4 evaluations at epoch 9, which calls for cut 1;"
            " max_reductions=0, so that cut was not applied: lr stays 0.1",
            id="best",
        ),
        # the slope's count is no count since the best: the message gives the slope's own reason
        pytest.param(
            _BEST_AT_THE_SLOPES_CUT,
            PlateauConfig(patience=3, factor=0.5, detector="slope"),
            5,
            "max reductions: val_loss has not decreased over its last 4 evaluations (least-squares slope:"
            " P(decrease) < 0.51; 4 > patience 3) at epoch 5, which calls for cut 1; max_reductions=0, so that cut"
            " was not applied: lr stays 0.1",
            id="slope",
        ),
        pytest.param(
            [0.73, 0.59, 0.59, 0.51, 0.45, 0.49, 0.81, 1.0, 0.5, 0.43],
            PlateauConfig(patience=3, detector="slope", slope_window=8),
            6,
            "max reductions: val_loss has not decreased over its last 6 evaluations (least-squares slope:"
            " P(decrease) < 0.51; 6 > patience 3) at epoch 6, which calls for cut 1; max_reductions=0, so that cut"
            " was not applied: lr stays 0.1",
            id="slope-count-above-patience-plus-one",
        ),
        # with smoothing the best is the best average: the message says so
        pytest.param(
            FLAT,
            PlateauConfig(patience=1, smoothing=0.5),
            2,
            "max reductions: val_loss (moving average 0.5) did not improve on 1.0000 for 2 evaluations at epoch 2,"
            " which calls for cut 1; max_reductions=0, so that cut was not applied: lr stays 0.1",
            id="smoothing",
        ),
    ],
)
def test_early_stopping_max_reductions_message_is_the_detectors_reason(
    tmp_path: Any, values: list[float], plateau: PlateauConfig, expected_stop: int, expected_message: str
) -> None:
    """The withheld cut is explained in the words of the detector that called for it, never with another's count."""
    early_stopping = PlateauEarlyStopping(max_reductions=0)
    _, fitted = _fit(tmp_path, values, plateau, early_stopping, max_epochs=len(values))
    assert _stop_epoch(early_stopping, fitted) == expected_stop
    assert early_stopping.stop_rule == "max_reductions"
    assert early_stopping.stopping_reason_message == expected_message


@pytest.mark.parametrize(
    ("detector", "patience", "cooldown", "expected_patience"),
    [
        ("best", 0, 0, 1),
        ("best", 1, 1, 3),
        # a line needs 3 values: with patience 0 or 1 the slope calls for a cut every 3 evaluations (+ cooldown)
        ("slope", 0, 0, 3),
        ("slope", 1, 0, 3),
        ("slope", 1, 1, 4),
        ("slope", 4, 0, 5),
    ],
)
def test_early_stopping_default_patience_stops_where_the_next_cut_would_come(
    tmp_path: Any, detector: str, patience: int, cooldown: int, expected_patience: int
) -> None:
    """On a flat metric the run stops at the evaluation where the scheduler would call for its next cut."""
    plateau = PlateauConfig(patience=patience, cooldown=cooldown, factor=0.5, min_lr=0.025, detector=detector)  # type: ignore[arg-type]
    assert plateau.cut_period == expected_patience
    early_stopping = PlateauEarlyStopping()
    _, fitted = _fit(tmp_path, FLAT, plateau, early_stopping, max_epochs=40)
    assert early_stopping.patience == expected_patience
    assert early_stopping.stop_rule == "lr_exhausted"
    # the same values without a floor: the third cut is the one the exhausted scheduler would have called for
    scheduler = PlateauScheduler(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=0.1), dataclasses.replace(plateau, min_lr=0.0)
    )
    for value in FLAT:
        scheduler.step(value)
    assert _cut_epochs(fitted) == [cut.evaluation - 1 for cut in scheduler.cuts[:2]]
    assert early_stopping.stopped_epoch == scheduler.cuts[2].evaluation - 1
