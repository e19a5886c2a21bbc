"""Restore best on cut: at each cut training goes on from the best evaluation's weights and optimizer state."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy, Strategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauMixin, PlateauScheduler, replay
from lightning_plateau._checks import check_restore
from lightning_plateau.cli import main as cli_main
from tests.helpers import ScriptedModel, plateau_of, trainer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Be aware that when using `ckpt_path`",  # the resumed Trainer needs no ModelCheckpoint
    "ignore:You're resuming from a checkpoint that ended before the epoch ended",  # validation-end checkpoints
)

# patience 1: cut at eval 4 (best: eval 2), a new best at eval 5, cut at eval 7 (best: eval 5)
TWO_BESTS = [1.0, 0.5, 0.6, 0.7, 0.4, 0.8, 0.9, 0.9]
# patience 1: cut at eval 4 and again at eval 6, both from the best of eval 2: the kept state must survive a restore
ONE_BEST_TWICE = [1.0, 0.5, 0.6, 0.7, 0.6, 0.7, 0.8]
CONFIG = PlateauConfig(patience=1, restore_best_on_cut=True)
LR = 0.1

State = dict[str, Any]


def _snapshot(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> State:
    """The module's state_dict (buffers included), each optimizer's per-parameter state and LRs, cloned."""
    return {
        "module": {name: tensor.detach().clone() for name, tensor in module.state_dict().items()},
        "optimizers": [_clone(optimizer.state_dict()["state"]) for optimizer in optimizers],
        "lrs": [[group["lr"] for group in optimizer.param_groups] for optimizer in optimizers],
    }


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {key: _clone(item) for key, item in value.items()}
    return value


def _equal(a: Any, b: Any) -> bool:
    """Tensor for tensor (torch.equal), key for key."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or a.keys() != b.keys():
            return False
        return all(_equal(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_weights_and_moments(a: State, b: State) -> bool:
    return _equal(a["module"], b["module"]) and _equal(a["optimizers"], b["optimizers"])


class _Recorded:
    """Records the state at each evaluation (as validated) and at each epoch start (what training goes on from)."""

    at_evaluation: list[State]
    at_epoch_start: list[State]
    trainer: Any

    def _record(self) -> State:
        return _snapshot(self, list(self.trainer.optimizers))  # type: ignore[arg-type]

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # type: ignore[misc]
        if not self.trainer.sanity_checking:
            self.at_evaluation.append(self._record())

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()  # type: ignore[misc]
        self.at_epoch_start.append(self._record())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["script_position"] = self.evaluations  # type: ignore[attr-defined]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.evaluations = checkpoint["script_position"]


class PlainAdamBatchNormModel(_Recorded, ScriptedModel):
    """A BatchNorm (its running statistics are buffers) and Adam (moments and a step count per parameter)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(values, lr=LR)
        self.norm = torch.nn.BatchNorm1d(1)
        self.at_evaluation, self.at_epoch_start = [], []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.norm(self.layer(x)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class AdamBatchNormModel(PlateauMixin, PlainAdamBatchNormModel):
    """The same with the mixin and its plateau."""

    def __init__(self, values: list[float], plateau: PlateauConfig = CONFIG) -> None:
        super().__init__(values)
        self.plateau = plateau

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    configure_optimizers = PlateauMixin.configure_optimizers


def _fit(
    root: Path,
    values: list[float],
    plateau: PlateauConfig = CONFIG,
    ckpt_path: Optional[Path] = None,
    callbacks: tuple[Callback, ...] = (),
    **trainer_kwargs: Any,
) -> tuple[AdamBatchNormModel, pl.Trainer]:
    model = AdamBatchNormModel(values, plateau)
    options: dict[str, Any] = {"max_epochs": len(values), "enable_checkpointing": bool(callbacks)}
    options.update(trainer_kwargs)
    fit = trainer(root, callbacks=list(callbacks), **options)
    fit.fit(model, ckpt_path=ckpt_path)
    return model, fit


@pytest.mark.parametrize(
    ("values", "expected_restores"),
    [(TWO_BESTS, {4: 2, 7: 5}), (ONE_BEST_TWICE, {4: 2, 6: 2})],
    ids=["two-bests", "one-best-twice"],
)
def test_restore_best_on_cut_goes_on_from_the_best_evaluations_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, values: list[float], expected_restores: dict[int, int]
) -> None:
    """After each cut the weights, buffers and Adam state equal those of the best evaluation, at the cut LR."""
    caplog.set_level(logging.INFO)
    model, fit = _fit(tmp_path, values)
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert {cut.evaluation: cut.restored_from for cut in scheduler.cuts} == expected_restores
    for cut in scheduler.cuts:
        best, at_cut = model.at_evaluation[cut.restored_from - 1], model.at_evaluation[cut.evaluation - 1]
        # validation runs at each epoch's end: evaluation e is epoch e - 1, and epoch e trains after it
        goes_on_from = model.at_epoch_start[cut.evaluation]
        assert _same_weights_and_moments(goes_on_from, best)
        assert not _equal(at_cut["module"], best["module"]), "the weights moved since the best, or this proves nothing"
        assert goes_on_from["lrs"] == [list(cut.lrs_after)] == [[cut.lrs_before[0] * 0.1]]
        assert cut.restored_epoch == cut.restored_from - 1
        # training goes on from there at the lower LR
        assert not _equal(model.at_evaluation[cut.evaluation]["module"], best["module"])
        assert model.lr_at_train_start[cut.evaluation] == cut.lrs_after[0]
    assert [row.restored_from for row in plateau_of(fit).history if row.cut] == list(expected_restores.values())
    messages = [record.getMessage() for record in caplog.records]
    for cut_at, best_at in expected_restores.items():
        text = f"eval {cut_at}: val_loss has not improved"
        (line,) = [message for message in messages if text in message]
        assert line.endswith(f"; weights restored from eval {best_at} (epoch {best_at - 1})")
    (summary,) = [message for message in messages if message.startswith("PlateauCallback (")]
    restored = ", ".join(str(best_at) for best_at in expected_restores.values())
    assert f"weights restored at 2 of 2 cuts (from evaluations {restored}), best state kept on CPU:" in summary


def test_restore_best_on_cut_off_goes_on_from_the_current_weights(tmp_path: Path) -> None:
    """The default: after a cut, training goes on from the weights it had, and no state is kept."""
    model, fit = _fit(tmp_path, TWO_BESTS, PlateauConfig(patience=1))
    callback = plateau_of(fit)
    assert callback.best_state is None
    assert callback.scheduler is not None
    for cut in callback.scheduler.cuts:
        assert cut.restored_from is None
        assert _same_weights_and_moments(model.at_epoch_start[cut.evaluation], model.at_evaluation[cut.evaluation - 1])
    assert "best_state" not in callback.state_dict()


def test_restore_best_on_cut_checkpoint_at_the_cut_holds_the_restored_state(tmp_path: Path) -> None:
    """ModelCheckpoint writes after the restore: the cut's checkpoint holds the best weights, the cut LR, the copy."""
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    model, fit = _fit(tmp_path, TWO_BESTS, callbacks=(every_epoch,))
    callback = plateau_of(fit)
    checkpoint = torch.load(tmp_path / "ckpt" / "epoch=3.ckpt", weights_only=True)  # the cut of eval 4
    best = model.at_evaluation[1]
    assert _equal(dict(checkpoint["state_dict"]), best["module"])
    (optimizer_state,) = checkpoint["optimizer_states"]
    assert _equal(optimizer_state["state"], best["optimizers"][0])
    assert [group["lr"] for group in optimizer_state["param_groups"]] == [pytest.approx(LR * 0.1)]
    kept = checkpoint["callbacks"][callback.state_key]["best_state"]
    assert (kept["evaluation"], kept["epoch"]) == (2, 1)
    assert _equal(dict(kept["module"]), best["module"])


def test_restore_best_on_cut_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    """Resumed from the checkpoint of any evaluation, before, at or after a restore: it ends as the run without stop."""
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    full_model, full = _fit(tmp_path / "full", TWO_BESTS, callbacks=(every_epoch,))
    full_state = _snapshot(full_model, list(full.optimizers))
    full_callback = plateau_of(full)
    assert full_callback.scheduler is not None
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"), key=lambda path: int(path.stem.split("=")[1]))
    assert len(files) == len(TWO_BESTS)
    for file in files[:-1]:
        model, fit = _fit(tmp_path / file.stem, TWO_BESTS, ckpt_path=file)
        callback = plateau_of(fit)
        assert callback.scheduler is not None
        assert _same_weights_and_moments(_snapshot(model, list(fit.optimizers)), full_state), file.name
        assert callback.history == full_callback.history, file.name
        assert callback.scheduler.cuts == full_callback.scheduler.cuts, file.name
        assert callback.best_state is not None
        assert callback.best_state.evaluation == 5


def test_restore_best_on_cut_resumed_from_a_checkpoint_without_the_copy_warns(tmp_path: Path) -> None:
    """A checkpoint written without the setting (or by an older version) resumes; the first cut restores nothing."""
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    _fit(tmp_path / "first", TWO_BESTS, PlateauConfig(patience=1), callbacks=(every_epoch,))
    checkpoint = tmp_path / "ckpt" / "epoch=2.ckpt"  # best at eval 2, one bad evaluation pending
    with pytest.warns(UserWarning, match="the checkpoint holds no best weights .* of evaluation 2, cannot be restored"):
        model, fit = _fit(tmp_path / "resumed", TWO_BESTS, ckpt_path=checkpoint)
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    # eval 4 cuts without a restore; eval 5 is a new best, kept, and restored at the cut of eval 7
    assert [(cut.evaluation, cut.restored_from) for cut in scheduler.cuts] == [(4, None), (7, 5)]
    assert plateau_of(fit).history[0].evaluation == 1  # the checkpoint's history goes on
    # the resumed fit records from epoch 3 (eval 4) on
    at_evaluation = dict(enumerate(model.at_evaluation, start=4))
    at_epoch_start = dict(enumerate(model.at_epoch_start, start=3))
    assert _same_weights_and_moments(at_epoch_start[4], at_evaluation[4])
    assert _same_weights_and_moments(at_epoch_start[7], at_evaluation[5])


def test_restore_best_on_cut_checkpoint_resumes_with_the_setting_off(tmp_path: Path) -> None:
    """A checkpoint holding the copy resumes a run with the setting off: the copy is not used."""
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    _fit(tmp_path / "first", TWO_BESTS, callbacks=(every_epoch,))
    _, fit = _fit(
        tmp_path / "resumed", TWO_BESTS, PlateauConfig(patience=1), ckpt_path=tmp_path / "ckpt" / "epoch=4.ckpt"
    )
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert [(cut.evaluation, cut.restored_from) for cut in scheduler.cuts] == [(4, 2), (7, None)]


class TwoOptimizersManualModel(_Recorded, ScriptedModel):
    """Manual optimization of two layers, each with its own SGD with momentum; the plateau drives the first."""

    def __init__(self, values: list[float]) -> None:
        super().__init__(values, lr=LR)
        self.automatic_optimization = False
        self.other = torch.nn.Linear(4, 1)
        self.at_evaluation, self.at_epoch_start = [], []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x) + self.other(x), y)
        for optimizer in self.optimizers():  # type: ignore[union-attr]
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in self.optimizers():  # type: ignore[union-attr]
            optimizer.step()

    def configure_optimizers(self) -> Any:
        plateau = torch.optim.SGD(self.layer.parameters(), lr=LR, momentum=0.9)
        other = torch.optim.SGD(self.other.parameters(), lr=0.05, momentum=0.9)
        return [plateau, other], [PlateauScheduler(plateau, CONFIG)]


def test_restore_best_on_cut_manual_optimization_rewinds_every_optimizer(tmp_path: Path) -> None:
    """Several optimizers (manual optimization): every one's momentum goes back with the weights; the LRs stay."""
    model = TwoOptimizersManualModel(TWO_BESTS)
    fit = trainer(tmp_path, max_epochs=len(TWO_BESTS), callbacks=[PlateauCallback()])
    fit.fit(model)
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert [(cut.evaluation, cut.restored_from) for cut in scheduler.cuts] == [(4, 2), (7, 5)]
    for cut in scheduler.cuts:
        best = model.at_evaluation[cut.restored_from - 1]
        goes_on_from = model.at_epoch_start[cut.evaluation]
        assert _same_weights_and_moments(goes_on_from, best)
        assert not _equal(model.at_evaluation[cut.evaluation - 1]["optimizers"][1], best["optimizers"][1])
        # the plateau's optimizer at the cut LR; the other keeps its own
        assert goes_on_from["lrs"] == [[cut.lrs_after[0]], [0.05]]


class _AddGroupAt(Callback):
    """Adds a param group at the start of an epoch, as BaseFinetuning does when it unfreezes a layer."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.optimizers[0].add_param_group({"params": list(pl_module.frozen.parameters())})


class FrozenLayerModel(AdamBatchNormModel):
    def __init__(self, values: list[float]) -> None:
        super().__init__(values)
        self.frozen = torch.nn.Linear(1, 1)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([*self.layer.parameters(), *self.norm.parameters()], lr=self.lr)


def test_restore_best_on_cut_refuses_param_groups_changed_since_the_best(tmp_path: Path) -> None:
    """A param group added between the best and the cut: the optimizer state cannot be matched, so the cut raises."""
    fit = trainer(tmp_path, max_epochs=len(TWO_BESTS), callbacks=[_AddGroupAt(epoch=2)])
    with pytest.raises(
        RuntimeError,
        match=r"evaluation 2: optimizer 0 \(Adam\) had param groups of \[4\] parameters then and has \[4, 2\] now",
    ):
        fit.fit(FrozenLayerModel(TWO_BESTS))


class _CPUFSDPStrategy(FSDPStrategy):
    """FSDP as Lightning builds it; Lightning refuses the plain class on CPU before any callback could."""


@pytest.fixture
def _environment_kept() -> Iterator[None]:
    """Undo what a one-process distributed setup leaves behind: the process group and its environment variables."""
    before = dict(os.environ)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update(before)


@pytest.mark.usefixtures("_environment_kept")
def test_restore_best_on_cut_is_refused_under_fsdp_before_it_shards(tmp_path: Path) -> None:
    """A real FSDP fit: refused at setup, naming the strategy and the setting, before FSDP wraps the module."""
    fit = trainer(tmp_path, strategy=_CPUFSDPStrategy())
    with pytest.raises(MisconfigurationException, match=r"restore_best_on_cut=True\) is not supported with _CPUFSDP"):
        fit.fit(AdamBatchNormModel(TWO_BESTS))


@pytest.mark.parametrize(
    ("strategy", "name"),
    [
        (FSDPStrategy(), "FSDPStrategy"),
        (ModelParallelStrategy(), "ModelParallelStrategy"),
        # DeepSpeed refuses to be built without the deepspeed package: the class alone is what the check reads
        (DeepSpeedStrategy.__new__(DeepSpeedStrategy), "DeepSpeedStrategy"),
    ],
)
def test_restore_best_on_cut_check_names_each_sharded_strategy(strategy: Strategy, name: str) -> None:
    """FSDP, DeepSpeed and ModelParallel shard the module: refused, by name; the setting off passes."""
    with pytest.raises(MisconfigurationException, match=f"not supported with {name}: it shards"):
        check_restore(strategy, CONFIG)
    check_restore(strategy, PlateauConfig())


def test_restore_best_on_cut_stepped_by_hand_is_refused() -> None:
    """Outside a Trainer nothing reaches the weights: stepping such a scheduler raises instead of cutting only."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = PlateauScheduler(optimizer, restore_best_on_cut=True)
    with pytest.raises(RuntimeError, match="only a PlateauCallback in a Lightning Trainer restores them"):
        scheduler.step(1.0)


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (np.bool_(True), True)])
def test_restore_best_on_cut_config_takes_bools(value: Any, expected: bool) -> None:
    """True, False and NumPy's bool are taken, as plain bools."""
    config = PlateauConfig(restore_best_on_cut=value)
    assert config.restore_best_on_cut is expected
    assert ("restoring the best weights at each cut" in config.describe()) is expected


@pytest.mark.parametrize("value", [1, "yes", None])
def test_restore_best_on_cut_config_refuses_other_values(value: Any) -> None:
    """Anything but a bool is refused, naming the value."""
    with pytest.raises(ValueError, match=f"`restore_best_on_cut` must be True or False, got {value!r}"):
        PlateauConfig(restore_best_on_cut=value)


def test_restore_best_on_cut_traces_count_the_restores(tmp_path: Path) -> None:
    """CSV traces: plateau/restores at every evaluation, plateau/restored_from at those that restored."""
    _fit(tmp_path, TWO_BESTS, logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=1)
    (metrics,) = (tmp_path / "csv").glob("version_*/metrics.csv")
    rows = [dict(zip(header, line, strict=True)) for header, line in _csv(metrics)]
    traced = [row for row in rows if row.get("plateau/evaluation")]
    assert [int(float(row["plateau/restores"])) for row in traced] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [row["plateau/restored_from"] for row in traced] == ["", "", "", "2", "", "", "5", ""]


def _csv(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    import csv

    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for line in reader:
            yield header, line


def test_restore_best_on_cut_replay_and_explain_say_where_the_run_went_on_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay and explain of the run's checkpoint cut where the run cut and name the same restores, in its words."""
    caplog.set_level(logging.INFO)
    last = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    _, fit = _fit(tmp_path, TWO_BESTS, callbacks=(last,))
    live = plateau_of(fit).scheduler
    assert live is not None
    replayed = replay(TWO_BESTS, CONFIG, lr=LR, epochs=list(range(len(TWO_BESTS))))

    def restores(cuts: list[Any]) -> list[tuple[Any, ...]]:
        return [(cut.evaluation, cut.epoch, cut.lrs_after, cut.restored_from, cut.restored_epoch) for cut in cuts]

    assert (
        restores(replayed.cuts)
        == restores(live.cuts)
        == [(4, 3, (pytest.approx(0.01),), 2, 1), (7, 6, (pytest.approx(1e-3),), 5, 4)]
    )
    assert [row.restored_from for row in replayed.evaluations() if row.cut] == [2, 5]

    assert cli_main(["explain", str(tmp_path / "ckpt" / "last.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "restore_best_on_cut on (from the checkpoint" in out
    assert "note: restore_best_on_cut: after each cut the run went on from the weights of the best evaluation" in out
    live_messages = [record.getMessage() for record in caplog.records if "weights restored from" in record.getMessage()]
    assert live_messages == replayed.reasons()
    for message in live_messages:
        assert f"     -> {message}\n" in out
    assert "lr 0.1 -> 1e-3. After the cuts the run went on from the weights of evaluations 2, 5, in turn." in out


@pytest.mark.parametrize(("flag", "noted"), [(["--restore-best-on-cut"], True), ([], False)])
def test_restore_best_on_cut_explain_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str], noted: bool
) -> None:
    """--restore-best-on-cut: the settings line, each reason, a note and the JSON say it; without it nothing does."""
    source = tmp_path / "values.txt"
    source.write_text("\n".join(str(value) for value in TWO_BESTS))
    assert cli_main(["explain", str(source), "--patience", "1", *flag]) == 0
    table = capsys.readouterr().out
    assert ("restore_best_on_cut on (given)" in table) is noted
    assert ("note: restore_best_on_cut:" in table) is noted
    assert ("(> patience 1): lr 1e-3 -> 1e-4; weights restored from eval 2\n" in table) is noted
    assert "restore_best_on_cut off" not in table
    assert cli_main(["explain", str(source), "--patience", "1", "--json", *flag]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert [cut["restored_from"] for cut in report["cuts"]] == ([2, 5] if noted else [None, None])
    assert ("note" in report) is noted


def test_restore_best_on_cut_callback_keyword(tmp_path: Path) -> None:
    """PlateauCallback(restore_best_on_cut=True) on a plain module: it attaches the scheduler and restores."""
    model = PlainAdamBatchNormModel(TWO_BESTS)
    fit = trainer(
        tmp_path, max_epochs=len(TWO_BESTS), callbacks=[PlateauCallback(patience=1, restore_best_on_cut=True)]
    )
    fit.fit(model)
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert [cut.restored_from for cut in scheduler.cuts] == [2, 5]


def test_restore_best_on_cut_before_any_improvement_restores_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN until the cut: no value improved, nothing was kept; the cut lowers the LR and says nothing was restored."""
    caplog.set_level(logging.INFO)
    model, fit = _fit(tmp_path, [math.nan, math.nan, 1.0], PlateauConfig(patience=0, restore_best_on_cut=True))
    scheduler = plateau_of(fit).scheduler
    assert scheduler is not None
    assert [(cut.evaluation, cut.restored_from) for cut in scheduler.cuts] == [(1, None), (2, None)]
    assert _same_weights_and_moments(model.at_epoch_start[1], model.at_evaluation[0])
    messages = [record.getMessage() for record in caplog.records]
    assert sum(message.endswith("; no weights restored (no best weights were kept)") for message in messages) == 2
    best_state = plateau_of(fit).best_state
    assert best_state is not None
    assert best_state.evaluation == 3  # the first finite value is the first best
