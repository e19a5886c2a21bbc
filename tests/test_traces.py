"""Plateau traces in real loggers: CSV, an offline W&B run (single process and 2-process DDP), the chart."""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers import ScriptedModel, ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.loggers import CSVLogger
from test_chart import EXTREME_HISTORIES

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauEvaluation, PlateauScheduler, plot_plateau
from lightning_plateau._wandb_file import WandbRun, read_run

TESTS_DIR = Path(__file__).resolve().parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRACE_KEYS = {
    "plateau/value",
    "plateau/best",
    "plateau/num_bad",
    "plateau/cooldown",
    "plateau/reductions",
    "plateau/evaluation",
    "plateau/global_step",
}
# Two cuts at patience 1: after evaluations 4 and 8.
VALUES = [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.86, 0.87]


class TwoGroupModel(ScriptedPlateauModel):
    """The scripted model with two param groups at different LRs."""

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [{"params": [self.layer.weight], "lr": self.lr}, {"params": [self.layer.bias], "lr": self.lr / 10}]
        )


class Float64Model(ScriptedPlateauModel):
    """The scripted model logging its metric as a float64 tensor: values near 1e308 reach the callback unchanged."""

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log(self.monitor, torch.tensor(self._next_value(), dtype=torch.float64))


class RefusingLogger(CSVLogger):
    """A CSVLogger whose backend refuses the plateau keys, as a tracking server with a fixed schema would."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if any(key.startswith("plateau/") for key in metrics):
            raise ValueError("metric keys must be declared first")
        super().log_metrics(metrics, step)


def expected_traces(history: Sequence[PlateauEvaluation]) -> list[dict[str, float]]:
    """What every logger must hold: one row per judged evaluation, the scheduler's state after it."""
    rows = []
    reductions = 0
    for row in history:
        reductions += row.cut
        expected: dict[str, float] = {
            "plateau/value": row.value,
            "plateau/best": row.best,
            "plateau/num_bad": row.num_bad,
            "plateau/cooldown": row.cooldown,
            "plateau/reductions": reductions,
            "plateau/evaluation": row.evaluation,
        }
        if row.global_step is not None:
            expected["plateau/global_step"] = row.global_step
        if len(row.lrs) == 1:
            expected["plateau/lr"] = row.lrs[0]
        else:
            expected.update({f"plateau/lr/pg{index}": lr for index, lr in enumerate(row.lrs)})
        rows.append(expected)
    return rows


def plateau_callback(trainer_: Any) -> PlateauCallback:
    callback = plateau_of(trainer_)
    return callback


def csv_rows(log_dir: Path) -> list[dict[str, str]]:
    with (log_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def plateau_part(row: dict[str, Any]) -> dict[str, float]:
    """The plateau keys of one logged row, as floats (CSV gives strings, W&B gives ints for integral floats)."""
    return {key: float(value) for key, value in row.items() if key.startswith("plateau/") and value not in ("", None)}


def step_metrics(wandb_file: Path) -> dict[str, str]:
    """The exact-name ``define_metric`` records of the plateau keys in a .wandb file: name -> step metric."""
    import wandb.proto.wandb_internal_pb2 as wandb_internal_pb2

    from lightning_plateau._wandb_file import _payloads

    defined = {}
    for payload in _payloads(wandb_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "metric" and record.metric.name.startswith("plateau/"):
            defined[record.metric.name] = record.metric.step_metric
    return defined


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline W&B with every directory it writes inside tmp_path; the run is finished and torn down after."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    yield
    wandb.finish()
    wandb.teardown()


def finish_wandb(save_dir: Path) -> WandbRun:
    """Finish this process's W&B run and read it back from its .wandb file."""
    import wandb

    wandb.finish()
    wandb.teardown()
    return read_run(save_dir / "wandb")


@pytest.mark.parametrize(
    ("model_kwargs", "config", "trainer_kwargs", "expected_cut_evaluations"),
    [
        ({}, PlateauConfig(patience=1), {"max_epochs": 9}, [4, 8]),
        # two validations per epoch (after batches 2 and 4): a cut shows at its own evaluation, mid-epoch
        ({}, PlateauConfig(patience=1, cooldown=1), {"max_epochs": 5, "val_check_interval": 2}, [4, 8]),
        # two param groups: one LR key per group
        ({"model_class": TwoGroupModel}, PlateauConfig(patience=1), {"max_epochs": 9}, [4, 8]),
        # a metric logged in training_step with on_epoch=True: judged at each training epoch's end
        (
            {"where": "training", "monitor": "train_loss"},
            PlateauConfig(monitor="train_loss", patience=1),
            {"max_epochs": 9},
            [4, 8],
        ),
    ],
    ids=["one-per-epoch", "two-per-epoch-cooldown", "two-param-groups", "training-metric"],
)
def test_traces_csv_logger_holds_every_evaluation(
    tmp_path: Path,
    model_kwargs: dict[str, Any],
    config: PlateauConfig,
    trainer_kwargs: dict[str, Any],
    expected_cut_evaluations: list[int],
) -> None:
    """metrics.csv has one plateau row per evaluation, equal to callback.history, at Lightning's step."""
    model_class = model_kwargs.pop("model_class", ScriptedPlateauModel)
    model = model_class(VALUES, plateau=config, **model_kwargs)
    logger = CSVLogger(tmp_path)
    # log_every_n_steps=1: Lightning logs a row per training step, and none of them may carry plateau keys
    fit = trainer(tmp_path, logger=logger, log_every_n_steps=1, **trainer_kwargs)
    fit.fit(model)
    callback = plateau_callback(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    assert [cut.evaluation for cut in scheduler.cuts] == expected_cut_evaluations

    rows = csv_rows(Path(logger.log_dir))
    logged = [row for row in rows if row.get("plateau/value")]

    assert [plateau_part(row) for row in logged] == expected_traces(callback.history)
    # Lightning's own step for the monitored value (it logs validation before counting the last batch)
    monitor_steps = [int(row["step"]) for row in rows if row.get(config.monitor)]
    assert [int(row["step"]) for row in logged] == monitor_steps
    assert [int(row["epoch"]) for row in logged] == [row.epoch for row in callback.history]
    for cut in scheduler.cuts:
        (at_cut,) = [row for row in logged if int(row["plateau/evaluation"]) == cut.evaluation]
        lr_keys = ["plateau/lr"] if len(cut.lrs_after) == 1 else [f"plateau/lr/pg{i}" for i in range(2)]
        assert [float(at_cut[key]) for key in lr_keys] == list(cut.lrs_after)
        assert int(at_cut["epoch"]) == cut.epoch


def test_traces_log_traces_false_logs_and_writes_nothing(tmp_path: Path) -> None:
    """log_traces=False: no plateau keys in any logger and no chart; the LR still follows the plateau."""
    callback = PlateauCallback(PlateauConfig(patience=1), log_traces=False)
    model = ScriptedModel(VALUES)
    logger = CSVLogger(tmp_path)
    fit = trainer(tmp_path, logger=logger, max_epochs=len(VALUES), callbacks=[callback])
    fit.fit(model)

    assert callback.scheduler is not None
    assert callback.scheduler.num_reductions == 2
    assert not any(key.startswith("plateau/") for row in csv_rows(Path(logger.log_dir)) for key in row)
    assert not list(tmp_path.rglob("plateau.png"))


def test_traces_log_traces_must_be_a_bool() -> None:
    """A non-bool log_traces is refused at once, naming the value given."""
    with pytest.raises(ValueError, match="`log_traces` must be True or False, got 'yes'"):
        PlateauCallback(log_traces="yes")  # type: ignore[arg-type]


def test_traces_chart_beside_the_logger_and_named_in_final_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The chart lands in the CSV logger's version directory; the last rank-zero message names its path."""
    logger = CSVLogger(tmp_path / "logs")
    fit = trainer(tmp_path, logger=logger, max_epochs=len(VALUES))
    with caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))

    chart = Path(logger.log_dir) / "plateau.png"
    assert plateau_callback(fit).chart_path == chart  # waits for the chart drawn in the background
    assert chart.read_bytes()[:8] == PNG_MAGIC
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")]
    assert "2 cuts in 9 evaluations, lr 0.1 -> 1e-3, best val_loss 0.8000 at epoch 5" in message
    assert f"chart: {chart}" in message


def fit_then_chart(fit: pl.Trainer, model: pl.LightningModule) -> Path | None:
    """Fit, then wait for the chart drawn in the background (and for its warnings)."""
    fit.fit(model)
    return plateau_callback(fit).chart_path


def test_traces_chart_drawn_after_fit_returns(tmp_path: Path) -> None:
    """Without W&B the chart is drawn on a background thread: fit returns while the drawing waits; chart_path waits."""
    from lightning_plateau import chart as chart_module

    go, released = threading.Event(), threading.Event()

    def hold_the_drawing() -> None:
        go.wait(timeout=30)
        released.set()
        chart_module._DRAWING.release()

    logger = CSVLogger(tmp_path)
    fit = trainer(tmp_path, logger=logger, max_epochs=len(VALUES))
    chart_module._DRAWING.acquire()  # no chart can be drawn until the holder lets go
    holder = threading.Thread(target=hold_the_drawing)
    holder.start()
    try:
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))
        returned_while_held = not released.is_set()
        written_while_held = (Path(logger.log_dir) / "plateau.png").exists()
    finally:
        go.set()
        holder.join()

    assert returned_while_held  # a chart drawn inside fit would have waited for the release
    assert not written_while_held
    assert plateau_callback(fit).chart_path == Path(logger.log_dir) / "plateau.png"
    assert (Path(logger.log_dir) / "plateau.png").read_bytes()[:8] == PNG_MAGIC


def test_traces_without_a_logger_write_no_file(tmp_path: Path) -> None:
    """logger=False: nothing is logged and no file written (Lightning writes none either); the history is there to
    draw the chart on request."""
    fit = trainer(tmp_path / "root", max_epochs=3)
    fit.fit(ScriptedPlateauModel([1.0, 1.0, 1.0], plateau=PlateauConfig(patience=1)))

    assert not (tmp_path / "root").exists() or not list((tmp_path / "root").rglob("*"))
    callback = plateau_of(fit)
    assert callback.chart_path is None
    assert plot_plateau(callback.history, callback.config, tmp_path / "asked.png").read_bytes()[:8] == PNG_MAGIC


def test_traces_unwritable_chart_dir_warns_and_fit_succeeds(tmp_path: Path) -> None:
    """A chart that cannot be written (here: a directory stands where the file goes) costs a warning, not the fit."""
    logger = CSVLogger(tmp_path, name="run", version=0)
    (Path(logger.log_dir) / "plateau.png").mkdir(parents=True)
    fit = trainer(tmp_path, max_epochs=3, logger=logger)

    with pytest.warns(UserWarning, match="could not write its chart to .*plateau.png"):
        chart = fit_then_chart(fit, ScriptedPlateauModel([1.0, 1.0, 1.0], plateau=PlateauConfig(patience=1)))

    assert chart is None


@pytest.mark.parametrize(("values", "config"), EXTREME_HISTORIES)
def test_traces_extreme_history_fit_ends_with_a_chart(
    tmp_path: Path, values: list[float], config: PlateauConfig
) -> None:
    """Huge values, an LR cut to 0, NaN or inf only, one evaluation, a flat line: the fit ends and draws its chart."""
    logger = CSVLogger(tmp_path)
    fit = trainer(tmp_path, logger=logger, max_epochs=len(values))

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="PlateauCallback")
        fit.fit(Float64Model(values, plateau=config, train_batches=1))
        callback = plateau_callback(fit)
        chart = callback.chart_path  # drawn in the background, under the same warning filter

    judged = [row.value for row in callback.history]
    assert [str(v) for v in judged] == [str(v) for v in values]  # the extremes reached the scheduler as they are
    assert chart == Path(logger.log_dir) / "plateau.png"
    assert chart.read_bytes()[:8] == PNG_MAGIC
    assert len([row for row in csv_rows(Path(logger.log_dir)) if row.get("plateau/value")]) == len(values)


def test_traces_chart_that_cannot_be_drawn_warns_and_fit_succeeds(tmp_path: Path) -> None:
    """A chart matplotlib refuses (here: a monitor name that is broken mathtext) costs a warning naming why."""
    monitor = r"cost_$\x$"
    fit = trainer(tmp_path, max_epochs=3, logger=CSVLogger(tmp_path))

    model = ScriptedPlateauModel([1.0, 1.0, 1.0], plateau=PlateauConfig(monitor=monitor, patience=1), monitor=monitor)

    with pytest.warns(UserWarning, match=r"could not draw its chart .*plateau.png: ValueError: .*Unknown symbol"):
        chart = fit_then_chart(fit, model)

    assert chart is None
    assert fit.state.finished
    assert plateau_callback(fit).scheduler.num_reductions == 1  # type: ignore[union-attr]


def test_traces_logger_refusing_the_traces_warns_once_and_fit_succeeds(tmp_path: Path) -> None:
    """A logger that raises on the plateau keys: one warning names it and the error; training and the chart go on."""
    logger = RefusingLogger(tmp_path)
    fit = trainer(tmp_path, logger=logger, max_epochs=len(VALUES))

    with pytest.warns(UserWarning, match="could not log its traces to RefusingLogger at evaluation 1") as caught:
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))

    (warned,) = [str(w.message) for w in caught if "could not log its traces" in str(w.message)]
    assert "ValueError: metric keys must be declared first" in warned
    callback = plateau_callback(fit)
    assert callback.scheduler is not None
    assert callback.scheduler.num_reductions == 2
    assert callback.chart_path == Path(logger.log_dir) / "plateau.png"
    assert len([row for row in csv_rows(Path(logger.log_dir)) if row.get("val_loss")]) == len(VALUES)


def test_traces_without_matplotlib_fit_runs_and_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib not importable: the fit and the traces go on, one warning names the `plot` extra."""
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    logger = CSVLogger(tmp_path)
    fit = trainer(tmp_path, logger=logger, max_epochs=len(VALUES))

    with pytest.warns(UserWarning, match=r'wrote no chart.*pip install "lightning-plateau\[plot\]"') as caught:
        chart = fit_then_chart(fit, ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))

    assert chart is None

    assert len([w for w in caught if "chart" in str(w.message)]) == 1
    assert not list(tmp_path.rglob("plateau.png"))
    assert len([row for row in csv_rows(Path(logger.log_dir)) if row.get("plateau/value")]) == len(VALUES)


def test_traces_import_does_not_load_wandb_or_matplotlib() -> None:
    """Importing every lightning_plateau module imports neither wandb, nor matplotlib, nor Pillow."""
    # Lightning imports torchmetrics, which imports matplotlib itself: so record who imports what.
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys, traceback
        optional = ("wandb", "matplotlib", "PIL")
        culprits = set()
        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in optional:
                    frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
                    importer = frames[-1]
                    if "lightning_plateau" in importer.filename:
                        culprits.add(f"{name} from {importer.filename}:{importer.lineno}")
                return None
        sys.meta_path.insert(0, Watch())
        import lightning_plateau
        for module in pkgutil.walk_packages(lightning_plateau.__path__, "lightning_plateau."):
            importlib.import_module(module.name)
        print(sorted(culprits), "wandb" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)

    assert result.stdout.strip().splitlines()[-1] == "[] False"


def test_traces_wandb_offline_run_holds_history_summary_table_and_chart(
    tmp_path: Path, wandb_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A real offline W&B run: plateau/* history equals callback.history, plus summary, cut table and chart."""
    from lightning.pytorch.loggers import WandbLogger

    from lightning_plateau.traces import wandb_run_dir

    fit = trainer(tmp_path, logger=WandbLogger(offline=True, save_dir=tmp_path), max_epochs=len(VALUES))
    with caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))
    callback = plateau_callback(fit)
    scheduler = callback.scheduler
    assert scheduler is not None
    run_dir = wandb_run_dir(fit)
    run = finish_wandb(tmp_path)

    traced = [row for row in run.history if "plateau/value" in row]
    assert [plateau_part(row) for row in traced] == expected_traces(callback.history)
    assert [row["epoch"] for row in traced] == [row.epoch for row in callback.history]
    # the same step as Lightning's own val_loss rows, so both line up on trainer/global_step
    val_steps = [row["trainer/global_step"] for row in run.history if "val_loss" in row]
    assert [row["trainer/global_step"] for row in traced] == val_steps
    assert run.summary["plateau/reductions"] == 2
    assert run.summary["plateau/lr"] == pytest.approx(1e-3)
    assert run.summary["plateau/best"] == pytest.approx(0.8)
    assert run.summary["plateau/best_epoch"] == 5
    assert run.summary["plateau/best_evaluation"] == 6

    assert run_dir is not None
    assert run_dir == run.path.resolve().parent
    # every plateau key is plotted against plateau/evaluation by default, by exact name (WandbLogger's `*` glob
    # would win over another glob)
    assert step_metrics(run.path) == {key: "plateau/evaluation" for key in TRACE_KEYS - {"plateau/evaluation"}} | {
        "plateau/lr": "plateau/evaluation"
    }
    (media,) = [row for row in run.history if "plateau/cuts._type" in row]
    assert media["plateau/cuts._type"] == "table-file"
    table = json.loads((run_dir / "files" / media["plateau/cuts.path"]).read_text())
    columns = ["cut", "evaluation", "epoch", "global_step", "value", "best", "lr_before", "lr_after", "reason"]
    assert table["columns"] == columns
    expected_rows = [
        [n, c.evaluation, c.epoch, c.global_step, c.value, c.best, c.lrs_before[0], c.lrs_after[0]]
        for n, c in enumerate(scheduler.cuts, start=1)
    ]
    assert [row[:-1] for row in table["data"]] == expected_rows
    assert all("> patience 1" in row[-1] for row in table["data"])
    assert media["plateau/chart._type"] == "image-file"
    assert (run_dir / "files" / media["plateau/chart.path"]).read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "plateau.png").read_bytes()[:8] == PNG_MAGIC

    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")]
    assert f"chart: {tmp_path / 'plateau.png'}" in message
    assert f"W&B offline run: {run_dir}" in message
    assert f"wandb sync {run_dir}" in message


def test_traces_wandb_disabled_mode_names_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """WANDB_MODE=disabled (common in CI): the fit and the chart go on, and no W&B run is claimed."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from lightning_plateau import wandb_run_dir

    monkeypatch.setenv("WANDB_MODE", "disabled")
    fit = trainer(tmp_path, logger=WandbLogger(save_dir=tmp_path), max_epochs=len(VALUES))
    with caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))
    run_dir = wandb_run_dir(fit)
    wandb.finish()
    # wandb keeps its settings (the disabled mode too) in a process-wide singleton until torn down
    wandb.teardown()

    assert run_dir is None
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PlateauCallback (")]
    assert "W&B" not in message
    assert f"chart: {tmp_path / 'plateau.png'}" in message
    assert not (tmp_path / "wandb").exists()


DDP_SCRIPT = """
import json, sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, {tests_dir!r})
import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from helpers import ScriptedPlateauModel, plateau_of
from lightning_plateau import PlateauCallback, PlateauConfig

out = Path(sys.argv[1])
values = json.loads(sys.argv[2])
trainer = pl.Trainer(
    default_root_dir=out, accelerator="cpu", devices=2, strategy="ddp", max_epochs=len(values),
    num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    logger=WandbLogger(offline=True, save_dir=out),
)
trainer.fit(ScriptedPlateauModel(values, plateau=PlateauConfig(patience=1)))
if trainer.is_global_zero:
    import wandb

    wandb.finish()
    wandb.teardown()
    callback = plateau_of(trainer)
    (out / "history.json").write_text(json.dumps([asdict(row) for row in callback.history]))
import torch.distributed as dist
if dist.is_initialized():
    dist.destroy_process_group()  # not left to interpreter exit, where gloo's threads can abort the process
"""


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_traces_ddp_writes_one_wandb_run_with_single_process_traces(tmp_path: Path, wandb_env: None) -> None:
    """2-process CPU DDP: exactly one W&B run, holding the same plateau traces as a single-process fit."""
    from lightning.pytorch.loggers import WandbLogger

    single_dir = tmp_path / "single"
    fit = trainer(single_dir, logger=WandbLogger(offline=True, save_dir=single_dir), max_epochs=len(VALUES))
    fit.fit(ScriptedPlateauModel(VALUES, plateau=PlateauConfig(patience=1)))
    single = finish_wandb(single_dir)

    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    script = tmp_path / "ddp_wandb.py"
    script.write_text(DDP_SCRIPT.format(tests_dir=str(TESTS_DIR)))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, str(script), str(ddp_dir), json.dumps(VALUES)],
        cwd=ddp_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    assert len(list(ddp_dir.rglob("*.wandb"))) == 1
    assert len(list(ddp_dir.glob("wandb/offline-run-*"))) == 1
    ddp = read_run(ddp_dir / "wandb")
    history = [
        PlateauEvaluation(**{**row, "lrs": tuple(row["lrs"])})
        for row in json.loads((ddp_dir / "history.json").read_text())
    ]

    def traces(run: WandbRun) -> list[dict[str, float]]:
        # Not the trainer's step: each of the 2 ranks trains on half the batches of the single process.
        return [
            {**{k: v for k, v in plateau_part(row).items() if k != "plateau/global_step"}, "epoch": row["epoch"]}
            for row in run.history
            if "plateau/value" in row
        ]

    assert traces(ddp) == traces(single)
    assert len(traces(ddp)) == len(VALUES)
    assert [plateau_part(row) for row in ddp.history if "plateau/value" in row] == expected_traces(history)
    assert ddp.summary["plateau/reductions"] == single.summary["plateau/reductions"] == 2
    assert (ddp_dir / "plateau.png").read_bytes()[:8] == PNG_MAGIC


def test_traces_scheduler_state_matches_trace_row() -> None:
    """The traced row is the scheduler's snapshot: a cut shows its new LR at the evaluation that made it."""
    from lightning_plateau.traces import _trace_metrics

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = PlateauScheduler(optimizer, PlateauConfig(patience=0, cooldown=2))
    scheduler._context = (3, 40)
    scheduler.step(1.0)
    scheduler.step(1.0)

    assert _trace_metrics(scheduler.snapshot(), scheduler.num_reductions) == {
        "plateau/value": 1.0,
        "plateau/best": 1.0,
        "plateau/num_bad": 0,
        "plateau/cooldown": 2,
        "plateau/reductions": 1,
        "plateau/evaluation": 2,
        "plateau/global_step": 40,
        "plateau/lr": pytest.approx(0.01),
        "epoch": 3,
    }
    assert set(_trace_metrics(scheduler.snapshot(), 1)) >= TRACE_KEYS
    assert asdict(scheduler.snapshot())["cut"] is True


def test_traces_messages_do_not_tear_the_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """With Lightning's TQDM bar shown, a cut message starts a line of its own (written through the bar, which clears
    itself first), never after the bar's text; the summary comes once the bars are closed."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    # Named: with rich installed, Lightning's default bar is the Rich one (tested below).
    fit = trainer(tmp_path, max_epochs=4, enable_progress_bar=True, logger=False, callbacks=[TQDMProgressBar()])
    with caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel([1.0] * 4, plateau=PlateauConfig(patience=1)))
    captured = capsys.readouterr()
    cut_lines = [line for line in (captured.out + captured.err).splitlines() if "eval 3:" in line]
    assert len(cut_lines) == 1
    assert cut_lines[0].split("\r")[-1].startswith("epoch 2, eval 3: val_loss has not improved")
    # the bar itself shows the plateau's state after each evaluation: the cut (2 of 2), then the next one's count
    bar_text = captured.out + captured.err
    assert "plateau=lr 0.1 · bad 1/2" in bar_text
    assert "plateau=lr 0.01 · bad 2/2" in bar_text
    assert "plateau=lr 0.01 · bad 1/2" in bar_text
    assert not [r for r in caplog.records if "eval 3:" in r.getMessage()]  # not also logged beside the bar
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.getMessage().startswith("PlateauCallback (")] == [
        "PlateauCallback (val_loss (min), patience 1, factor 0.1)"
    ]


def test_traces_messages_and_state_with_the_rich_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Lightning's Rich bar too: the cut message is a line of its own, and the bar shows the plateau's state."""
    pytest.importorskip("rich")
    from lightning.pytorch.callbacks import RichProgressBar

    fit = trainer(tmp_path, max_epochs=4, enable_progress_bar=True, logger=False, callbacks=[RichProgressBar()])
    with caplog.at_level(logging.INFO):
        fit.fit(ScriptedPlateauModel([1.0] * 4, plateau=PlateauConfig(patience=1)))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    cut_lines = [line for line in text.splitlines() if "eval 3:" in line]
    assert len(cut_lines) == 1
    assert cut_lines[0].split("\r")[-1].strip().startswith("epoch 2, eval 3: val_loss has not improved")
    assert "plateau: lr 0.01" in text
    assert not [r for r in caplog.records if "eval 3:" in r.getMessage()]
