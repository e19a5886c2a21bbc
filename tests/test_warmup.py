"""Warmup: the LR rises linearly over optimizer steps, nothing judged during it counts, a resume repeats it exactly."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import pytest
import torch
from helpers import ScriptedModel, ScriptedPlateauModel, needs_lightning_2_6, plateau_of, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauEarlyStopping, PlateauScheduler, replay
from lightning_plateau.cli import main as explain_main

LR = 0.1


def hand_lr(step: int, warmup_steps: int, start: float, lr: float = LR) -> float:
    """The warmup's LR at optimizer step ``step`` (steps taken), as the issue writes it down."""
    if step >= warmup_steps:
        return lr
    return lr * (start + (1 - start) * step / warmup_steps)


class StepLRs(pl.Callback):
    """Records the LR each optimizer step uses, with the step's index (``global_step`` before it)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.steps.append(trainer.global_step)
        self.lrs.append(optimizer.param_groups[0]["lr"])


class ManualModel(ScriptedPlateauModel):
    """The scripted model with manual optimization: one optimizer step per batch, taken in ``training_step``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        optimizer.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        optimizer.step()  # type: ignore[union-attr]
        return loss


class PlainModel(ScriptedModel):
    """No mixin: a PlateauCallback with a config attaches the scheduler to this optimizer."""


@pytest.mark.parametrize("wiring", ["mixin", "callback", "scheduler-keywords"])
def test_warmup_lr_of_every_step_is_the_hand_computation(tmp_path: Path, wiring: str) -> None:
    """Each optimizer step of a 6-step warmup from 0.25 x lr uses lr * (0.25 + 0.75 * k / 6), then lr itself."""
    config = PlateauConfig(warmup_steps=6, warmup_start_factor=0.25)
    recorder = StepLRs()
    callbacks: list[pl.Callback] = [recorder]
    model: pl.LightningModule
    if wiring == "mixin":
        model = ScriptedPlateauModel([1.0], plateau=config)
    elif wiring == "callback":
        model = PlainModel([1.0])
        callbacks.append(PlateauCallback(config))
    else:

        class KeywordModel(PlainModel):
            def configure_optimizers(self) -> Any:
                optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
                scheduler = PlateauScheduler(optimizer, warmup_steps=6, warmup_start_factor=0.25)
                return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

        model = KeywordModel([1.0])
    fit = trainer(tmp_path, max_epochs=3, callbacks=callbacks)
    fit.fit(model)

    assert recorder.steps == list(range(12))
    assert recorder.lrs == [hand_lr(k, 6, 0.25) for k in range(12)]
    # torch's LinearLR, stepped once per optimizer step, gives the same LRs (it chains products: equal to rounding)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, total_iters=6)
    torch_lrs = []
    for _ in range(12):
        torch_lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        linear.step()
    assert recorder.lrs == pytest.approx(torch_lrs, rel=1e-12)
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert scheduler.warmup_done
    assert scheduler.warmup_base_lrs == (LR,)


@pytest.mark.parametrize(
    ("values", "warmup_steps", "expected_cut_evaluations", "expected_warmup_rows"),
    [
        # 4 steps per epoch: evaluations at steps 4, 8, 12, ... With warmup 12 the first two are not judged.
        # Worsening during the warmup, patience 0: no cut until the 2nd judged evaluation (4th), which is bad.
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 12, [4, 5], [1, 2], id="worsening-during-warmup"),
        # A low value during the warmup would make every later one "bad" if it set best: it does not.
        pytest.param([0.1, 0.1, 0.5, 0.4, 0.3], 12, [], [1, 2], id="warmup-value-does-not-set-best"),
        # An evaluation exactly at step warmup_steps is judged (global_step < warmup_steps is the warmup).
        pytest.param([1.0, 0.5, 0.6, 0.7], 8, [3, 4], [1], id="boundary-step-is-judged"),
        # Without warmup the same values cut at once: the table discriminates.
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0], 0, [2, 3, 4, 5], [], id="no-warmup"),
    ],
)
def test_warmup_evaluations_are_recorded_but_cannot_cut(
    tmp_path: Path,
    values: list[float],
    warmup_steps: int,
    expected_cut_evaluations: list[int],
    expected_warmup_rows: list[int],
) -> None:
    """Evaluations at global_step < warmup_steps neither count toward patience nor set best; the rule starts after."""
    config = PlateauConfig(patience=0, warmup_steps=warmup_steps, warmup_start_factor=0.5)
    model = ScriptedPlateauModel(values, plateau=config)
    fit = trainer(tmp_path, max_epochs=len(values))
    fit.fit(model)
    callback = plateau_of(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    assert [cut.evaluation for cut in scheduler.cuts] == expected_cut_evaluations
    history = callback.history
    assert [row.evaluation for row in history if row.warmup] == expected_warmup_rows
    for row in history:
        assert row.global_step == 4 * row.evaluation
        if row.warmup:
            assert (row.best, row.num_bad, row.cooldown, row.cut) == (math.inf, 0, 0, False)
            assert row.lrs == (hand_lr(row.global_step, warmup_steps, 0.5),)
    if expected_warmup_rows:
        first_judged = history[len(expected_warmup_rows)]
        assert first_judged.best == first_judged.value  # the first judged value is the first best
    # replay with the trainer's steps gives the live rows exactly
    rows = replay(
        [row.value for row in history],  # the logged values, as float32 made them
        config,
        lr=LR,
        epochs=[row.epoch for row in history],
        global_steps=[row.global_step for row in history],
    )
    assert rows.evaluations() == history


def test_warmup_counts_optimizer_steps_under_gradient_accumulation(tmp_path: Path) -> None:
    """accumulate_grad_batches=2: the warmup advances once per optimizer step, not per batch; each step gets its LR."""
    config = PlateauConfig(warmup_steps=6, warmup_start_factor=0.2)
    recorder = StepLRs()
    model = ScriptedPlateauModel([1.0, 0.9, 0.8], plateau=config, train_batches=8)
    fit = trainer(tmp_path, max_epochs=3, accumulate_grad_batches=2, callbacks=[recorder])
    fit.fit(model)
    assert fit.global_step == 12
    assert recorder.steps == list(range(12))
    assert recorder.lrs == [hand_lr(k, 6, 0.2) for k in range(12)]
    history = plateau_of(fit).history
    # 4 optimizer steps per epoch: the first evaluation (step 4) is in the warmup, the second (step 8) is judged
    assert [(row.global_step, row.warmup) for row in history] == [(4, True), (8, False), (12, False)]
    assert history[0].lrs == (hand_lr(4, 6, 0.2),)


def test_warmup_under_manual_optimization(tmp_path: Path) -> None:
    """With manual optimization the callback still sets each step's warmup LR (one optimizer step per batch)."""
    recorder = StepLRs()
    model = ManualModel([1.0, 0.9], plateau=PlateauConfig(warmup_steps=5, warmup_start_factor=0.1, monitor="val_loss"))
    fit = trainer(tmp_path, max_epochs=2, callbacks=[recorder])
    fit.fit(model)
    assert recorder.steps == list(range(8))
    assert recorder.lrs == [hand_lr(k, 5, 0.1) for k in range(8)]


class ResumeRecorder(StepLRs):
    """StepLRs plus the LR at each batch start, which shows what a resumed run starts from."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_lrs: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.batch_lrs.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))


_RESUME_VALUES = [3.0, 2.0, 2.5, 2.6, 1.0, 1.1, 1.2, 1.3]
_RESUME_CONFIG = PlateauConfig(patience=1, factor=0.5, warmup_steps=10, warmup_start_factor=0.1)


@pytest.mark.parametrize(
    ("kind", "checkpoint_name", "resumed_from_step"),
    [
        # written at the end of epoch 1's validation (step 8, inside the 10-step warmup)
        pytest.param("validation", "epoch=1-step=8.ckpt", 8, id="validation-end"),
        # written after the 7th batch, mid-epoch and mid-warmup
        pytest.param("step", "epoch=1-step=7.ckpt", 7, id="mid-epoch-step", marks=needs_lightning_2_6),
    ],
)
def test_warmup_resume_mid_warmup_matches_uninterrupted_run(
    tmp_path: Path, kind: str, checkpoint_name: str, resumed_from_step: int
) -> None:
    """A run resumed from a checkpoint written mid-warmup uses the same LR at every later step, and ends the same."""
    reference = ResumeRecorder()
    model = ScriptedPlateauModel(_RESUME_VALUES, plateau=_RESUME_CONFIG)
    pl.seed_everything(0)
    uninterrupted = trainer(tmp_path / "full", max_epochs=8, callbacks=[reference])
    uninterrupted.fit(model)
    full = plateau_of(uninterrupted)

    if kind == "validation":
        saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    else:
        saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=7)
    pl.seed_everything(0)
    first = ScriptedPlateauModel(_RESUME_VALUES, plateau=_RESUME_CONFIG)
    interrupted = trainer(tmp_path / "first", max_epochs=2, callbacks=[saver], enable_checkpointing=True)
    interrupted.fit(first)
    checkpoint = tmp_path / "ckpt" / checkpoint_name
    assert checkpoint.is_file(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    state = torch.load(checkpoint, weights_only=True)
    (scheduler_state,) = state["lr_schedulers"]
    assert scheduler_state["warmup_done"] is False
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == hand_lr(resumed_from_step, 10, 0.1)

    resumed_recorder = ResumeRecorder()
    pl.seed_everything(0)
    resumed_model = ScriptedPlateauModel(_RESUME_VALUES, plateau=_RESUME_CONFIG)
    # the scripted values are indexed by evaluations; the resumed model goes on from the checkpoint's count
    resumed_model.evaluations = len(plateau_state(state)["history"])
    resumed = trainer(tmp_path / "resumed", max_epochs=8, callbacks=[resumed_recorder])
    resumed.fit(resumed_model, ckpt_path=checkpoint)

    full_lrs = dict(zip(reference.steps, reference.lrs, strict=True))
    assert resumed_recorder.steps == list(range(resumed_from_step, 32))
    assert resumed_recorder.lrs == [full_lrs[step] for step in resumed_recorder.steps]
    assert resumed_recorder.batch_lrs == [pair for pair in reference.batch_lrs if pair[0] >= resumed_from_step]
    assert plateau_of(resumed).history == full.history
    resumed_scheduler = plateau_of(resumed).scheduler
    assert resumed_scheduler is not None
    assert full.scheduler is not None
    assert resumed_scheduler.cuts == full.scheduler.cuts
    # evaluations 1-2 (steps 4, 8) in the warmup; best 2.5 at 3, bad at 4, best 1.0 at 5, bad at 6 and 7: cut at 7
    assert [cut.evaluation for cut in resumed_scheduler.cuts] == [7]


def plateau_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The PlateauCallback state a checkpoint holds."""
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("PlateauCallback") and v]
    return state


def test_warmup_traces_chart_and_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The traces flag the warmup's evaluations and carry the trainer's step; the summary says where it ended."""
    import csv
    import logging

    config = PlateauConfig(patience=0, warmup_steps=10, warmup_start_factor=0.1)
    model = ScriptedPlateauModel([1.0, 2.0, 0.5, 0.6, 0.7], plateau=config)
    logger = CSVLogger(tmp_path, name="run")
    with caplog.at_level(logging.INFO):
        fit = trainer(tmp_path, max_epochs=5, logger=logger)
        fit.fit(model)
    with (Path(logger.log_dir) / "metrics.csv").open() as handle:
        traced = [row for row in csv.DictReader(handle) if row.get("plateau/value")]
    assert [int(float(row["plateau/warmup"])) for row in traced] == [1, 1, 0, 0, 0]
    assert [int(float(row["plateau/global_step"])) for row in traced] == [4, 8, 12, 16, 20]
    # Lightning's own step label of the same row lags the trainer's step by one
    assert [int(row["step"]) for row in traced] == [3, 7, 11, 15, 19]
    assert "plateau/skipped" not in traced[0]  # no column for a feature that is off
    assert float(traced[0]["plateau/lr"]) == pytest.approx(hand_lr(4, 10, 0.1))
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")]
    assert len(summary) == 1
    assert "warmup 10 steps): 2 cuts in 5 evaluations (2 during warmup)" in summary[0]
    assert "warmup lr 0.01 -> 0.1 over 10 steps, ended at step 10" in summary[0]
    chart = plateau_of(fit).chart_path  # waits for the chart, drawn after fit returns
    assert chart == Path(logger.log_dir) / "plateau.png"
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_warmup_explain_replays_the_run_from_its_log_and_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """explain reads the run's warmup settings and trainer steps, and its rows are the live history."""
    import json

    config = PlateauConfig(patience=0, warmup_steps=10, warmup_start_factor=0.1)
    model = ScriptedPlateauModel([1.0, 2.0, 0.5, 0.6, 0.7], plateau=config)
    model.save_hyperparameters({"plateau": config})
    logger = CSVLogger(tmp_path, name="run")
    fit = trainer(tmp_path, max_epochs=5, logger=logger, enable_checkpointing=True)
    fit.fit(model)
    history = plateau_of(fit).history
    checkpoint = next((tmp_path / "run" / "version_0" / "checkpoints").glob("*.ckpt"))
    for source in (logger.log_dir, str(checkpoint)):
        assert explain_main(["explain", source, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["config"]["warmup_steps"] == 10
        rows = report["evaluations"]
        assert [row["warmup"] for row in rows] == [row.warmup for row in history]
        assert [row["global_step"] for row in rows] == [row.global_step for row in history]
        assert [tuple(row["lrs"]) for row in rows] == [row.lrs for row in history]
        assert [row["cut"] for row in rows] == [row.cut for row in history]
        assert report["warning"] is None  # the run's LRs and the replay's agree
        stored = report["settings"].split("; ")[0]
        assert "warmup_steps 10, warmup_start_factor 0.1" in stored
        assert "(from " in stored
    # a plain list has no steps: a warmup would be a guess, so it is refused
    values = tmp_path / "values.txt"
    values.write_text("1.0 2.0 0.5\n")
    assert explain_main(["explain", str(values), "--warmup-steps", "10"]) == 2
    assert "needs the trainer's global step of every evaluation" in capsys.readouterr().err


def test_warmup_table_marks_rows_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """explain's table notes each warmup row, and the summary counts them."""
    checkpoint = _fit_checkpoint(tmp_path, PlateauConfig(patience=0, warmup_steps=10, warmup_start_factor=0.1))
    assert explain_main(["explain", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum("(warmup: not judged)" in line for line in lines) == 2
    assert "2 evaluations in the warmup (global step < 10) not judged." in out
    # what if the run had no warmup? --warmup-steps 0 replays it without
    assert explain_main(["explain", str(checkpoint), "--warmup-steps", "0"]) == 0
    assert "warmup" not in capsys.readouterr().out.split("\n\n")[1]


def _fit_checkpoint(tmp_path: Path, config: PlateauConfig) -> Path:
    model = ScriptedPlateauModel([1.0, 2.0, 0.5, 0.6, 0.7], plateau=config)
    fit = trainer(tmp_path, max_epochs=5, enable_checkpointing=True, logger=CSVLogger(tmp_path))
    fit.fit(model)
    return next(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))


@pytest.mark.parametrize(
    ("global_steps", "expected"),
    [
        (None, "and none were given"),
        ([4, None, 12], "value 2 has none"),
        ([4, 12, 8], "value 3 is at step 8 after step 12"),
    ],
)
def test_warmup_replay_refuses_values_without_trainer_steps(
    global_steps: Optional[list[Optional[int]]], expected: str
) -> None:
    """replay() with a warmup needs each value's global step, present and not decreasing: no guessing."""
    with pytest.raises(ValueError, match=re.escape(expected)) as excinfo:
        replay([1.0, 0.9, 0.8], PlateauConfig(warmup_steps=10), global_steps=global_steps)
    assert "PlateauConfig(warmup_steps=10) needs the trainer's global step" in str(excinfo.value)


def test_warmup_replay_rows_show_the_ramp() -> None:
    """A replay's warmup rows carry the warmup LR at their step; the final LR is the base once it is over."""
    rows = replay(
        [1.0, 0.9, 0.8, 0.7], PlateauConfig(warmup_steps=8, warmup_start_factor=0.5), lr=0.2, global_steps=[2, 4, 8, 10]
    )
    assert [row.warmup for row in rows] == [True, True, False, False]
    assert [row.lrs for row in rows] == [(hand_lr(2, 8, 0.5, 0.2),), (hand_lr(4, 8, 0.5, 0.2),), (0.2,), (0.2,)]
    assert rows.initial_lrs == (0.2,)
    assert rows.final_lrs == (0.2,)
    assert rows.warmup_evaluations == 2
    still = replay([1.0, 0.9], PlateauConfig(warmup_steps=8), lr=0.2, global_steps=[2, 4])
    assert still.final_lrs == (hand_lr(4, 8, 0.1, 0.2),)


def test_warmup_early_stopping_does_not_count_warmup_evaluations(tmp_path: Path) -> None:
    """PlateauEarlyStopping's patience counts judged evaluations only: a flat warmup does not stop the run."""
    config = PlateauConfig(patience=0, warmup_steps=16, warmup_start_factor=0.5)
    # 4 flat evaluations in the warmup (steps 4..16 exclusive of 16: evaluations 1-3), then flat: patience 2 stops
    # at the 2nd judged evaluation without improvement after the first judged one
    model = ScriptedPlateauModel([1.0] * 10, plateau=config)
    stopper = PlateauEarlyStopping(wait_for_min_lr=False, patience=2, reset_on_cut=False)
    fit = trainer(tmp_path, max_epochs=10, callbacks=[stopper])
    fit.fit(model)
    history = plateau_of(fit).history
    assert [row.warmup for row in history][:3] == [True, True, True]
    # evaluation 4 is the first judged (best), 5 and 6 are without improvement: stop at 6 (epoch 5)
    assert stopper.stopped_epoch == 5
    assert stopper.wait_count == 2


def test_warmup_refusal_of_another_scheduler_points_to_warmup_steps(tmp_path: Path) -> None:
    """A LinearLR beside the plateau is refused, and the message names PlateauConfig(warmup_steps=...)."""

    class TwoSchedulers(ScriptedPlateauModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LinearLR(optimizer), "interval": "step"},
            }

    with pytest.raises(
        MisconfigurationException, match=re.escape("PlateauConfig(warmup_steps=..., warmup_start_factor=...)")
    ):
        trainer(tmp_path, callbacks=[PlateauCallback(PlateauConfig())]).fit(TwoSchedulers([1.0]))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"warmup_steps": -1}, "`warmup_steps` must be an int >= 0, got -1"),
        ({"warmup_steps": 2.5}, "`warmup_steps` must be an int >= 0, got 2.5"),
        ({"warmup_steps": "10"}, "`warmup_steps` must be an int >= 0, got '10'"),
        ({"warmup_start_factor": 0.0}, "`warmup_start_factor` must be a float in (0, 1], got 0.0"),
        ({"warmup_start_factor": 1.5}, "`warmup_start_factor` must be a float in (0, 1], got 1.5"),
        ({"warmup_start_factor": math.nan}, "`warmup_start_factor` must be a float in (0, 1], got nan"),
    ],
)
def test_warmup_config_refuses_bad_values(fields: dict[str, Any], expected: str) -> None:
    """A bad warmup setting names the field, the value and what is allowed."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        PlateauConfig(**fields)


def test_warmup_config_defaults_are_off() -> None:
    """No warmup by default; a start factor of 1 (a flat warmup that only delays the plateau) is allowed."""
    assert PlateauConfig().warmup_steps == 0
    assert PlateauConfig(warmup_steps=3, warmup_start_factor=1).warmup_start_factor == 1.0
    assert PlateauConfig(warmup_steps=3).describe() == "val_loss (min), patience 10, factor 0.1, warmup 3 steps"


def test_warmup_old_checkpoint_without_warmup_state_does_not_start_one() -> None:
    """A scheduler state without warmup keys (an older checkpoint) resumes with the warmup over, and says so."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    old = PlateauScheduler(optimizer).state_dict()
    for key in (
        "warmup_done",
        "warmup_base_lrs",
        "warmup_steps",
        "warmup_start_factor",
        "warmup_start_step",
        "warmup_end_step",
        "on_nonfinite",
        "_uncounted",
    ):
        old.pop(key)
    optimizer.param_groups[0]["lr"] = 0.01  # a cut LR the checkpoint's optimizer holds
    scheduler = PlateauScheduler(optimizer, PlateauConfig(warmup_steps=5))
    optimizer.param_groups[0]["lr"] = 0.01
    with pytest.warns(UserWarning, match="its run had no warmup, so warmup_steps=5 does not apply"):
        scheduler.load_state_dict(old)
    assert scheduler.warmup_done
    assert (scheduler.warmup_start_step, scheduler.warmup_end_step) == (0, None)  # no warmup counted from 0
    assert scheduler.apply_warmup(7) is False
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_warmup_checkpoint_without_its_end_step_reports_where_it_ended() -> None:
    """A warmup's state written before the start and end steps were kept: counted from 0, over at warmup_steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    ran = PlateauScheduler(optimizer, PlateauConfig(warmup_steps=5))
    ran.apply_warmup(5)
    saved = ran.state_dict()
    assert (saved["warmup_start_step"], saved["warmup_end_step"]) == (0, 5)
    saved.pop("warmup_start_step")
    saved.pop("warmup_end_step")
    scheduler = PlateauScheduler(optimizer, PlateauConfig(warmup_steps=5))
    scheduler.load_state_dict(saved)
    assert (scheduler.warmup_done, scheduler.warmup_start_step, scheduler.warmup_end_step) == (True, 0, 5)


def test_warmup_summary_of_a_fit_that_ends_inside_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fit shorter than its warmup: the summary says the warmup was not over, and names no LR change as a cut."""
    import logging

    with caplog.at_level(logging.INFO):
        fit = trainer(tmp_path, max_epochs=2)
        fit.fit(ScriptedPlateauModel([1.0, 2.0], plateau=PlateauConfig(warmup_steps=100)))
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")]
    assert summary.endswith(
        "0 cuts in 2 evaluations (2 during warmup), warmup lr 0.01 -> 0.1 over 100 steps, not over when the fit"
        " ended (last evaluation at step 8)"
    )


def test_warmup_with_training_metric_windows(tmp_path: Path) -> None:
    """Windows of 2 steps with a 4-step warmup: the window at step 2 is not judged, the one at step 4 is, at lr."""
    from test_windows import StepModel

    recorder = StepLRs()
    config = PlateauConfig(monitor="train_loss", window_steps=2, patience=0, warmup_steps=4, warmup_start_factor=0.1)
    fit = trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[recorder])
    fit.fit(StepModel([1.0], config))
    history = plateau_of(fit).history
    assert [(row.global_step, row.warmup, row.cut) for row in history] == [
        (2, True, False),
        (4, False, False),
        (6, False, True),
        (8, False, True),
    ]
    # the window judged at the warmup's last step sees the warmup's end already: the cuts that follow stand
    assert [row.lrs for row in history] == [(hand_lr(2, 4, 0.1),), (LR,), (LR * 0.1,), (LR * 0.1 * 0.1,)]
    assert recorder.lrs == [hand_lr(k, 4, 0.1) for k in range(4)] + [LR, LR, LR * 0.1, LR * 0.1]


_LONGER_VALUES = [1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]


@pytest.mark.parametrize(
    ("first_warmup", "expected_warmup_part"),
    [
        # a warmup that was over at the checkpoint: the summary reports it as it ran, not as the new setting says
        pytest.param(4, "warmup lr 0.01 -> 0.1 over 4 steps, ended at step 4, ", id="warmup-over"),
        # a run that never had one: none is reported
        pytest.param(0, None, id="no-warmup"),
    ],
)
def test_warmup_resume_with_a_longer_warmup_judges_as_the_uninterrupted_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first_warmup: int, expected_warmup_part: Optional[str]
) -> None:
    """Resumed with warmup_steps=40 after a warmup that was over (or none): every later evaluation is judged."""
    import logging

    reference = StepLRs()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    first = PlateauConfig(patience=1, warmup_steps=first_warmup)
    uninterrupted = trainer(tmp_path, max_epochs=8, callbacks=[reference, saver], enable_checkpointing=True)
    uninterrupted.fit(ScriptedPlateauModel(_LONGER_VALUES, plateau=first))
    full = plateau_of(uninterrupted)
    assert full.scheduler is not None
    assert [cut.evaluation for cut in full.scheduler.cuts] == [4, 6, 8]

    checkpoint = tmp_path / "ckpt" / "epoch=2-step=12.ckpt"
    recorder = StepLRs()
    model = ScriptedPlateauModel(_LONGER_VALUES, plateau=PlateauConfig(patience=1, warmup_steps=40))
    model.evaluations = 3
    resumed = trainer(tmp_path / "resumed", max_epochs=8, callbacks=[recorder])
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="does not start again"):
        resumed.fit(model, ckpt_path=checkpoint)
    callback = plateau_of(resumed)
    assert callback.scheduler is not None
    assert not any(row.warmup for row in callback.history[3:])
    assert callback.history == full.history
    assert callback.scheduler.cuts == full.scheduler.cuts
    # the LR and the judging agree: no ramp again either
    assert recorder.lrs == reference.lrs[12:]
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")][-1]
    if expected_warmup_part is None:
        assert "warmup lr" not in summary
    else:
        assert expected_warmup_part in summary


class _WarmupSteps(pl.Callback):
    """Records (global step, LR) of each optimizer step, over several fits of one Trainer."""

    def __init__(self) -> None:
        self.lrs: list[tuple[int, float]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.lrs.append((trainer.global_step, optimizer.param_groups[0]["lr"]))


class _LinearLRModel(ScriptedModel):
    """torch's LinearLR stepped per optimizer step: the warmup that warmup_steps ports."""

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, total_iters=6)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": linear, "interval": "step"}}


def test_warmup_reused_trainer_fresh_fit_warms_up_from_its_own_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second fit of a fresh model on a reused Trainer (starting at step 12) warms up from there, as LinearLR does."""
    import csv
    import logging

    config = PlateauConfig(patience=1, warmup_steps=6, warmup_start_factor=0.25)
    recorder = _WarmupSteps()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    logger = CSVLogger(tmp_path, name="run")
    fit = trainer(tmp_path, max_epochs=3, callbacks=[recorder, saver], enable_checkpointing=True, logger=logger)
    fit.fit(ScriptedPlateauModel([1.0] * 6, plateau=config))
    fit.fit_loop.max_epochs = 6
    with caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel([1.0] * 6, plateau=config))
    second = recorder.lrs[12:]
    assert [step for step, _ in second] == list(range(12, 24))
    assert [lr for _, lr in second] == [hand_lr(step - 12, 6, 0.25) for step in range(12, 24)]
    # torch's LinearLR in the same reuse: each fit warms up from its own first step
    baseline = _WarmupSteps()
    reused = trainer(tmp_path / "linear", max_epochs=3, callbacks=[baseline])
    reused.fit(_LinearLRModel([1.0]))
    reused.fit_loop.max_epochs = 6
    reused.fit(_LinearLRModel([1.0]))
    assert [step for step, _ in baseline.lrs] == [step for step, _ in recorder.lrs]
    assert [lr for _, lr in second] == pytest.approx([lr for _, lr in baseline.lrs[12:]], rel=1e-12)

    callback = plateau_of(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    assert scheduler.warmup_start_step == 12
    # evaluations at steps 16 (4 steps into the warmup), 20 and 24; the flat values cut at the 2nd bad one
    assert [(row.global_step, row.warmup) for row in callback.history] == [(16, True), (20, False), (24, False)]
    assert [cut.evaluation for cut in scheduler.cuts] == []
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")][-1]
    assert "(1 during warmup), warmup lr 0.025 -> 0.1 over 6 steps, ended at step 18, lr 0.1 -> 0.1" in summary
    with (Path(logger.log_dir) / "metrics.csv").open() as handle:
        traced = [row for row in csv.DictReader(handle) if row.get("plateau/value")]
    # the second fit's rows say where its warmup counts from; the first fit's (from 0) need not
    assert [(row["plateau/global_step"], row["plateau/warmup_start_step"]) for row in traced[3:]] == [
        ("16", "12"),
        ("20", "12"),
        ("24", "12"),
    ]
    assert {row["plateau/warmup_start_step"] for row in traced[:3]} == {""}

    # resumed from the second fit's checkpoint written mid-warmup (step 16): the same LRs and rows from there on
    checkpoint = tmp_path / "ckpt" / "epoch=3-step=16.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["lr_schedulers"][0]["warmup_start_step"] == 12
    resumed_recorder = _WarmupSteps()
    model = ScriptedPlateauModel([1.0] * 6, plateau=config)
    model.evaluations = 1
    resumed = trainer(tmp_path / "resumed", max_epochs=6, callbacks=[resumed_recorder])
    resumed.fit(model, ckpt_path=checkpoint)
    assert resumed_recorder.lrs == recorder.lrs[16:]
    assert plateau_of(resumed).history == callback.history


class _SetLR(pl.Callback):
    """Writes the LR at the start of epoch ``epoch``: a change the plateau did not make."""

    def __init__(self, epoch: int, lr: float) -> None:
        self.epoch, self.lr = epoch, lr

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.optimizers[0].param_groups[0]["lr"] = self.lr


_OUTSIDE_WARNING = (
    "The learning rate changed from 0.1 to 0.05 after the last evaluation of 'val_loss', and not by the plateau:"
    " something else writes `param_group['lr']` (your code, another scheduler or callback). The plateau's cuts apply"
    " to whatever LR it finds; the end-of-fit summary lists these changes. Warned once."
)


@pytest.mark.parametrize(
    ("warmup_steps", "callbacks", "expected"),
    [
        # the only evaluation (step 8) is in the warmup, which ends at step 10: the fit ends at 0.1, not 0.082
        pytest.param(
            10,
            [],
            "0 cuts in 1 evaluation (1 during warmup), warmup lr 0.01 -> 0.1 over 10 steps, ended at step 10,"
            " lr 0.1 -> 0.1",
            id="warmup-ends-after-the-last-evaluation",
        ),
        # an LR written after the last evaluation is the final LR, and named as not the plateau's
        pytest.param(
            0,
            [_SetLR(2, 0.05)],
            "0 cuts in 1 evaluation, lr 0.1 -> 0.05 (changed outside the plateau: 0.1 -> 0.05 after the last"
            " evaluation), best",
            id="outside-change-after-the-last-evaluation",
        ),
    ],
)
def test_warmup_summary_reports_the_final_lr(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    warmup_steps: int,
    callbacks: list[pl.Callback],
    expected: str,
) -> None:
    """The summary's "lr A -> B" ends at the LR the fit ended with, and a change the plateau did not make is named."""
    import logging

    model = ScriptedPlateauModel([1.0], plateau=PlateauConfig(patience=1, warmup_steps=warmup_steps))
    fit = trainer(tmp_path, max_epochs=3, check_val_every_n_epoch=2, callbacks=callbacks)
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(model)
    outside = [str(w.message) for w in caught if "not by the plateau" in str(w.message)]
    assert outside == ([] if warmup_steps else [_OUTSIDE_WARNING])
    assert fit.optimizers[0].param_groups[0]["lr"] == (0.1 if warmup_steps else 0.05)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")][-1]
    assert expected in summary


def test_warmup_scheduler_by_hand_without_apply_warmup_is_refused() -> None:
    """Stepped by hand as torch's class is, with a warmup that never advances: the second value is refused."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = PlateauScheduler(optimizer, patience=1, warmup_steps=5)
    for _ in range(3):
        optimizer.step()
    scheduler.step(1.0)  # the first value may come before any step: recorded in the warmup
    for _ in range(3):
        optimizer.step()
    with pytest.raises(
        RuntimeError, match=re.escape("Call `scheduler.apply_warmup(optimizer_steps_taken)` after each")
    ):
        scheduler.step(1.0)
    assert scheduler.num_evaluations == 1


def test_warmup_scheduler_by_hand_with_apply_warmup_cuts_as_torch_after_it() -> None:
    """Stepped by hand with apply_warmup after each optimizer step: the ramp's LRs, then torch's cuts."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = PlateauScheduler(optimizer, patience=1, warmup_steps=15, warmup_start_factor=0.5)
    torch_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    torch_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_optimizer, patience=1)
    scheduler.step(1.0)  # a validation before training
    step_lrs, lrs, torch_lrs, steps = [], [], [], 0
    for _ in range(8):
        for _ in range(10):
            step_lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            steps += 1
            scheduler.apply_warmup(steps)
        scheduler.step(1.0)
        if steps > 15:  # the values after the warmup, judged as torch judges them
            torch_scheduler.step(1.0)
            lrs.append(optimizer.param_groups[0]["lr"])
            torch_lrs.append(torch_optimizer.param_groups[0]["lr"])
    assert step_lrs[:20] == [hand_lr(k, 15, 0.5) for k in range(15)] + [LR] * 5
    assert scheduler.num_evaluations == 9
    assert lrs == torch_lrs
    assert torch_lrs == pytest.approx([LR, LR, LR * 0.1, LR * 0.1, LR * 0.01, LR * 0.01, LR * 0.001])
    assert [cut.evaluation for cut in scheduler.cuts] == [5, 7, 9]


def test_warmup_progress_bar_state_changes_when_the_warmup_ends(tmp_path: Path) -> None:
    """The bar's "· warmup" (from an evaluation in it) gives way to the plateau's state at the warmup's last step."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    class BarStates(pl.Callback):
        def __init__(self) -> None:
            self.states: dict[int, Any] = {}

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self.states[trainer.global_step] = trainer.progress_bar_metrics.get("plateau")

    states = BarStates()
    model = ScriptedPlateauModel([1.0, 0.9], plateau=PlateauConfig(patience=1, warmup_steps=6))
    fit = trainer(tmp_path, max_epochs=2, enable_progress_bar=True, callbacks=[TQDMProgressBar(), states])
    fit.fit(model)
    assert states.states[5] == f"lr {hand_lr(4, 6, 0.1):.4g} · warmup"
    assert states.states[6] == "lr 0.1 · bad 0/2"
    assert states.states[7] == "lr 0.1 · bad 0/2"
