"""Checkpoints hold the state after each evaluation, and a resume from any of them repeats nothing and skips nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauScheduler
from tests.helpers import ScriptedModel, ScriptedPlateauModel, needs_lightning_2_6, plateau_of, trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`",  # the resumed Trainer needs no ModelCheckpoint
    "ignore:You're resuming from a checkpoint that ended before the epoch ended",  # the point of the mid-epoch tests
)

# patience 1, cooldown 1: cuts at evaluations 3, 6, 9, 12, ...; the cooldown counter is live across some checkpoints.
_VALUES = [1.0, 2.0, 2.0, 0.5, 0.6, 0.7]
_CONFIG = PlateauConfig(patience=1, cooldown=1)


class _Recording:
    """Records the LR of every optimizer step and keeps the script position in the checkpoint."""

    lrs: list[float]
    evaluations: int
    trainer: Any

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def _next_value(self) -> float:
        # Lightning before 2.6 runs the validation a checkpoint was written at again on resume: a real metric
        # gives the same value again (same weights), so the script does too, at the same training position.
        position = self.trainer.fit_loop.epoch_loop.batch_progress.total.ready
        if position == getattr(self, "script_at", None):
            return self.script_value
        self.script_at = position
        self.script_value: float = super()._next_value()  # type: ignore[misc]
        return self.script_value

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["script_position"] = self.evaluations
        checkpoint["script_at"] = getattr(self, "script_at", None)
        checkpoint["script_value"] = getattr(self, "script_value", None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = checkpoint["script_position"]
        self.script_at = checkpoint["script_at"]
        self.script_value = checkpoint["script_value"]


class _MixinModel(_Recording, ScriptedPlateauModel):
    def __init__(self, where: str = "validation") -> None:
        super().__init__(_VALUES, plateau=_CONFIG, where=where)
        self.lrs = []


class _PlainModel(_Recording, ScriptedModel):
    """No mixin: a plain optimizer, the callback attaches the scheduler."""

    def __init__(self, where: str = "validation") -> None:
        super().__init__(_VALUES, where=where)
        self.lrs = []


class _OwnSchedulerModel(_PlainModel):
    """No mixin: returns its own PlateauScheduler, which a config-less PlateauCallback adopts."""

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = PlateauScheduler(optimizer, _CONFIG)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": _CONFIG.monitor}}


def _plateau(fit: Any) -> PlateauCallback:
    return plateau_of(fit)


def _scheduler(fit: Any) -> PlateauScheduler:
    scheduler = _plateau(fit).scheduler
    assert scheduler is not None
    return scheduler


def _run(
    root: Path,
    path: str,
    where: str,
    callbacks: Sequence[Callback] = (),
    ckpt_path: Optional[Path] = None,
    **trainer_kwargs: Any,
) -> tuple[Any, Any]:
    model = {"mixin": _MixinModel, "callback": _PlainModel, "own-scheduler": _OwnSchedulerModel}[path](where)
    extra: list[Callback] = [] if path == "mixin" else [PlateauCallback(_CONFIG if path == "callback" else None)]
    options: dict[str, Any] = {"max_epochs": 6, "enable_checkpointing": bool(callbacks)}
    options.update(trainer_kwargs)
    fit = trainer(root, callbacks=[*callbacks, *extra], **options)
    fit.fit(model, ckpt_path=ckpt_path)
    return model, fit


def _assert_resumes_exactly(
    tmp_path: Path, path: str, where: str, checkpoint: ModelCheckpoint, **trainer_kwargs: Any
) -> list[Path]:
    """Run once with ``checkpoint``, then resume from every file it wrote; return those files."""
    full_model, full = _run(tmp_path / "full", path, where, [checkpoint], **trainer_kwargs)
    full_scheduler = _scheduler(full)
    assert full_scheduler.cuts, "the script must cut the LR, or the comparison proves nothing"
    steps = {
        file: torch.load(file, weights_only=True)["global_step"] for file in Path(checkpoint.dirpath).glob("*.ckpt")
    }
    files = sorted(steps, key=steps.__getitem__)
    assert files
    for file in files:
        step = steps[file]
        model, resumed = _run(tmp_path / file.stem, path, where, ckpt_path=file, **trainer_kwargs)
        assert model.lrs == full_model.lrs[step:], f"LRs differ after resuming from {file.name}"
        assert _scheduler(resumed).cuts == full_scheduler.cuts, f"cuts differ after resuming from {file.name}"
        assert _scheduler(resumed).num_evaluations == full_scheduler.num_evaluations
        assert _plateau(resumed).history == _plateau(full).history, f"history differs after {file.name}"
    return files


# ModelCheckpoint saves at train epoch end by default when validation runs once per epoch; say where, explicitly.
_AT_VALIDATION_END = {"save_on_train_epoch_end": False}
_AT_TRAIN_EPOCH_END = {"save_on_train_epoch_end": True}


@pytest.mark.parametrize(
    ("path", "where", "checkpoint_kwargs", "trainer_kwargs"),
    [
        pytest.param("mixin", "validation", _AT_VALIDATION_END, {}, id="validation-end"),
        pytest.param("callback", "validation", _AT_VALIDATION_END, {}, id="validation-end-callback-only"),
        pytest.param("own-scheduler", "validation", _AT_VALIDATION_END, {}, id="validation-end-own-scheduler"),
        pytest.param("mixin", "validation", _AT_VALIDATION_END, {"val_check_interval": 2}, id="validation-mid-epoch"),
        pytest.param(
            "mixin", "validation", {}, {"check_val_every_n_epoch": 2, "max_epochs": 8}, id="sparse-validation"
        ),
        pytest.param("mixin", "validation", _AT_TRAIN_EPOCH_END, {}, id="train-epoch-end"),
        pytest.param("mixin", "training", _AT_TRAIN_EPOCH_END, {}, id="train-epoch-end-training-metric"),
    ],
)
def test_resume_from_any_epoch_checkpoint_is_exact(
    tmp_path: Path, path: str, where: str, checkpoint_kwargs: dict[str, Any], trainer_kwargs: dict[str, Any]
) -> None:
    """Resuming from each checkpoint gives the same LR at every later step and the same cuts as one run."""
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, every_n_epochs=1, **checkpoint_kwargs)
    files = _assert_resumes_exactly(tmp_path, path, where, checkpoint, **trainer_kwargs)
    assert len(files) >= 4


@needs_lightning_2_6
@pytest.mark.parametrize("where", ["validation", "training"])
def test_resume_from_mid_epoch_step_checkpoint_is_exact(tmp_path: Path, where: str) -> None:
    """every_n_train_steps=3 with 4 batches per epoch: checkpoints mid-epoch, before the epoch's evaluation."""
    checkpoint = _MidEpochCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, every_n_train_steps=3)
    files = _assert_resumes_exactly(tmp_path, "mixin", where, checkpoint)
    assert [torch.load(f, weights_only=True)["global_step"] for f in files] == [3, 6, 9, 15, 18, 21]


class _MidEpochCheckpoint(ModelCheckpoint):
    """Skips the steps that end an epoch: Lightning drops that epoch's evaluation on resume (see the test below)."""

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, *args, **kwargs)


class _ValidationCounter(Callback):
    def __init__(self) -> None:
        self.runs = 0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.runs += 1


@needs_lightning_2_6
def test_resume_from_last_batch_step_checkpoint_follows_lightnings_validations(tmp_path: Path) -> None:
    """A step checkpoint at an epoch's last batch precedes that epoch's validation, which Lightning then never runs.

    The value is never produced, so no scheduler can judge it; ours judges exactly the validations that do run,
    without a stale or repeated step.
    """
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, every_n_train_steps=4)
    full_model, _ = _run(tmp_path / "full", "mixin", "validation", [checkpoint])
    counter = _ValidationCounter()
    model, resumed = _run(tmp_path / "res", "mixin", "validation", [counter], ckpt_path=tmp_path / "ckpt/step=8.ckpt")
    assert full_model.evaluations == 6
    assert counter.runs == 4  # epochs 2, 3, 4, 5: Lightning skipped the validation of epoch 1
    assert _scheduler(resumed).num_evaluations == 1 + counter.runs == model.evaluations == 5
    assert len(model.lrs) == len(full_model.lrs) - 8


def test_resume_training_metric_from_validation_end_checkpoint(tmp_path: Path) -> None:
    """A training-epoch monitor, checkpointed at validation end: that epoch's value is not in the checkpoint.

    Lightning keeps no logged values in checkpoints and ends the restored epoch again without them, so evaluation 1
    never happens in the resumed run. The resume must neither raise a false "never logged" (strict) nor judge a
    stale value: it judges epochs 1..5, and the cut follows from those values alone.
    """
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, **_AT_VALIDATION_END)
    _, full = _run(tmp_path / "full", "mixin", "training", [checkpoint])
    assert torch.load(tmp_path / "ckpt/step=4.ckpt", weights_only=True)["lr_schedulers"][0]["num_evaluations"] == 0
    _, resumed = _run(tmp_path / "res", "mixin", "training", ckpt_path=tmp_path / "ckpt/step=4.ckpt")
    assert [cut.epoch for cut in _scheduler(full).cuts] == [2, 5]
    # epochs 1..5 log 2.0, 2.0, 0.5, 0.6, 0.7: best 2.0, bad, best 0.5, bad, bad -> cut at epoch 5
    assert [row.epoch for row in _plateau(resumed).history] == [1, 2, 3, 4, 5]
    assert [(cut.evaluation, cut.epoch) for cut in _scheduler(resumed).cuts] == [(5, 5)]


def test_resume_after_fit_end_checkpoint_is_exact(tmp_path: Path) -> None:
    """trainer.save_checkpoint after fit, then a longer fit from it, equals one long run."""
    _, short = _run(tmp_path / "short", "mixin", "validation", max_epochs=4)
    short.save_checkpoint(tmp_path / "end.ckpt")
    full_model, full = _run(tmp_path / "full", "mixin", "validation", max_epochs=8)
    model, resumed = _run(tmp_path / "res", "mixin", "validation", ckpt_path=tmp_path / "end.ckpt", max_epochs=8)
    assert model.lrs == full_model.lrs[16:]
    assert _scheduler(resumed).cuts == _scheduler(full).cuts
    assert [cut.evaluation for cut in _scheduler(full).cuts] == [3, 6]
    assert _plateau(resumed).history == _plateau(full).history


@pytest.mark.parametrize(
    ("where", "checkpoint_kwargs", "trainer_kwargs"),
    [
        pytest.param("validation", _AT_VALIDATION_END, {}, id="validation-end"),
        pytest.param("validation", _AT_VALIDATION_END, {"val_check_interval": 2}, id="validation-mid-epoch"),
        pytest.param("validation", _AT_TRAIN_EPOCH_END, {}, id="train-epoch-end"),
        pytest.param("training", _AT_TRAIN_EPOCH_END, {}, id="train-epoch-end-training-metric"),
    ],
)
def test_checkpoint_holds_state_after_its_evaluation(
    tmp_path: Path, where: str, checkpoint_kwargs: dict[str, Any], trainer_kwargs: dict[str, Any]
) -> None:
    """Each checkpoint holds the scheduler and callback state after the evaluation just made, cut included.

    Lightning moves ModelCheckpoint to the end of the callbacks, so the callback steps before the file is written.
    """
    checkpoint = ModelCheckpoint(tmp_path, "{step}", save_top_k=-1, **checkpoint_kwargs)
    _, fit = _run(tmp_path, "mixin", where, [checkpoint], **trainer_kwargs)
    callback = _plateau(fit)
    assert sum(row.cut for row in callback.history) >= 2
    for row in callback.history:
        saved = torch.load(tmp_path / f"step={row.global_step}.ckpt", weights_only=True)
        scheduler_state = saved["lr_schedulers"][0]
        callback_state = saved["callbacks"][callback.state_key]
        assert scheduler_state["num_evaluations"] == row.evaluation
        assert len(scheduler_state["cuts"]) == sum(earlier.cut for earlier in callback.history[: row.evaluation])
        assert len(callback_state["history"]) == row.evaluation
        assert callback_state["history"][-1]["epoch"] == row.epoch
        # the LR the checkpoint restores already carries a cut made at this evaluation
        lr = saved["optimizer_states"][0]["param_groups"][0]["lr"]
        assert (lr,) == tuple(scheduler_state["_last_lr"]) == row.lrs


class _TorchPlateauModel(_PlainModel):
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1, cooldown=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def test_resume_replays_lightnings_lost_step(tmp_path: Path) -> None:
    """Pitfall replay (issue 14699): with torch's class a resume loses a step and the cut never comes; ours is exact.

    The checkpoint of epoch 1 (0-based) is written at validation end. Lightning steps torch's scheduler after it
    and skips that step on resume, so evaluation 3 counts as the first bad one instead of the second.
    """

    def lrs_per_epoch(model: ScriptedModel, name: str, resume_from: Optional[str] = None) -> list[float]:
        callbacks = [] if resume_from else [ModelCheckpoint(tmp_path / name, "{epoch}", save_top_k=-1)]
        ckpt_path = tmp_path / resume_from if resume_from else None
        trainer(tmp_path / name, max_epochs=6, callbacks=callbacks, enable_checkpointing=not resume_from).fit(
            model, ckpt_path=ckpt_path
        )
        return model.lr_at_train_start

    # epochs 2..5 train at: one run cuts at the end of epoch 2 (evaluation 3)
    assert lrs_per_epoch(_TorchPlateauModel(), "torch")[2:] == pytest.approx([0.1, 0.01, 0.01, 0.01])
    assert lrs_per_epoch(_TorchPlateauModel(), "torch-resumed", "torch/epoch=1.ckpt") == [0.1, 0.1, 0.1, 0.1]
    assert lrs_per_epoch(_MixinModel(), "ours")[2:] == pytest.approx([0.1, 0.01, 0.01, 0.01])
    assert lrs_per_epoch(_MixinModel(), "ours-resumed", "ours/epoch=1.ckpt") == pytest.approx([0.1, 0.01, 0.01, 0.01])


@pytest.mark.parametrize("first_given", [True, False], ids=["given-then-added", "added-then-given"])
def test_resume_with_the_other_kind_of_plateau_callback_keeps_the_history(tmp_path: Path, first_given: bool) -> None:
    """A run checkpointed with a PlateauCallback of one kind (given, or added for the user) and resumed with the other
    keeps its whole history: the two save under different keys, and the driving one takes the checkpoint's state."""
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, **_AT_VALIDATION_END)
    given: list[Callback] = [PlateauCallback()]
    _, full = _run(tmp_path / "full", "mixin", "validation", [checkpoint, *(given if first_given else [])])
    resumed_callbacks: list[Callback] = [] if first_given else [PlateauCallback()]
    _, resumed = _run(
        tmp_path / "res", "mixin", "validation", resumed_callbacks, ckpt_path=tmp_path / "ckpt/step=12.ckpt"
    )
    assert isinstance(_plateau(resumed), PlateauCallback)
    assert _plateau(resumed)._implicit is first_given
    assert _plateau(resumed).history == _plateau(full).history
    assert _scheduler(resumed).cuts == _scheduler(full).cuts


class _TwoMetrics(_MixinModel):
    """Logs `val_other` (falling) beside the scripted `val_loss`, so a resume may watch the other metric."""

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self.log("val_other", 10.0 - self.current_epoch)


def test_resume_watching_another_metric_starts_the_plateau_afresh(tmp_path: Path) -> None:
    """A checkpoint of a plateau on `val_loss` resumed by one on `val_other`: a warning, and none of val_loss's best,
    counters or history is judged against val_other (it improves at every evaluation: no cut)."""
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1, **_AT_VALIDATION_END)
    fit = trainer(tmp_path / "first", max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True)
    fit.fit(_TwoMetrics())
    resumed_model = _TwoMetrics()
    resumed_model.plateau = dataclasses.replace(_CONFIG, monitor="val_other")
    resumed = trainer(tmp_path / "second", max_epochs=6)
    with pytest.warns(UserWarning, match="The checkpoint's plateau watched 'val_loss', this one watches 'val_other'"):
        resumed.fit(resumed_model, ckpt_path=tmp_path / "ckpt/step=12.ckpt")
    history = _plateau(resumed).history
    # Lightning before 2.6 runs the checkpoint's validation (epoch 2) again: a first value of val_other, judged.
    assert [row.epoch for row in history][-3:] == [3, 4, 5]
    assert [row.value for row in history] == [10.0 - row.epoch for row in history]
    assert _scheduler(resumed).cuts == []
