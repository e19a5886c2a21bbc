"""The README quickstart and the two LightningCLI examples run for real, on tiny budgets."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lightning_plateau import PlateauConfig, PlateauScheduler

ROOT = Path(__file__).resolve().parent.parent

# Every evaluation after the first one counts as "not improved" (no value beats the best by 10), and patience 0
# cuts at each of them: a short run cuts at known epochs, whatever the data.
CUT_EVERY_EVALUATION = ["--model.plateau.patience", "0", "--model.plateau.threshold", "10"]
CUT_EVERY_EVALUATION += ["--model.plateau.threshold_mode", "abs"]
TINY_TRAINER = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
TINY_TRAINER += ["--trainer.log_every_n_steps", "1", "--trainer.enable_model_summary", "false"]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def readme_block(heading: str) -> str:
    """The first ```python block after ``## <heading>`` in README.md."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, f"no python block under '## {heading}'"
    return match.group(1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever a run writes by default lands in tmp_path; W&B stays offline and quiet.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["example"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    """The quickstart block of README.md runs as written and its scheduler judges one value per epoch."""
    namespace: dict[str, object] = {"__name__": "readme_quickstart"}
    exec(compile(readme_block("Quickstart"), "README.md#quickstart", "exec"), namespace)
    trainer = namespace["trainer"]
    scheduler = trainer.lr_scheduler_configs[0].scheduler  # type: ignore[attr-defined]
    assert isinstance(scheduler, PlateauScheduler)
    assert scheduler.config == PlateauConfig(patience=2, factor=0.5)
    assert scheduler.num_evaluations == trainer.max_epochs  # type: ignore[attr-defined]
    assert scheduler.cuts
    for cut in scheduler.cuts:
        assert cut.lrs_after == tuple(lr * 0.5 for lr in cut.lrs_before)


def test_readme_setup_has_two_commands() -> None:
    """The set-up block lists exactly `make demo` and `make test`, both targets of the Makefile."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Set-up\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None
    assert match.group(1).split("\n")[:-1] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)


def plateau_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The PlateauCallback's rank-zero messages of a run: one per cut, then the end-of-fit summary."""
    return [
        r.getMessage() for r in caplog.records if re.match(r"(epoch \d+, eval \d+:|PlateauCallback \()", r.getMessage())
    ]


def test_digits_example_reports_once_and_writes_the_wandb_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """digits.py with its YAML cuts at evaluations 2 and 3; the cuts, the summary (once, one number format) and the
    offline W&B run it wrote are said by the callback, and the example prints nothing on top."""
    wandb = pytest.importorskip("wandb")
    digits = load_example("digits")
    config = str(ROOT / "configs" / "digits.yaml")
    save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    try:
        with caplog.at_level(logging.INFO):
            digits.main(["fit", "--config", config, *TINY_TRAINER, *CUT_EVERY_EVALUATION, *save_dir])
    finally:
        wandb.teardown()
    messages = plateau_messages(caplog)
    assert [m.split(":")[0] for m in messages[:-1]] == ["epoch 1, eval 2", "epoch 2, eval 3"]
    assert messages[0].endswith("lr 0.01 -> 3e-3")
    summary = messages[-1]
    assert summary.startswith("PlateauCallback (val_loss (min), patience 0, factor 0.3): 2 cuts in 3 evaluations")
    assert "lr 0.01 -> 9e-4" in summary
    assert sum(m.startswith("PlateauCallback (") for m in messages) == 1
    match = re.search(r"W&B offline run: (\S+)", summary)
    assert match is not None
    run_dir = Path(match.group(1))
    assert run_dir.parent == tmp_path / "runs" / "wandb"
    assert run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("run-*.wandb"))
    assert "cut(s)" not in capsys.readouterr().out


def test_regression_example_reports_cuts_and_csv_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """regression.py with its YAML cuts at evaluations 2 and 3, says them once and names the CSV log directory."""
    regression = load_example("regression")
    config = str(ROOT / "configs" / "regression.yaml")
    save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    with caplog.at_level(logging.INFO):
        regression.main(["fit", "--config", config, *TINY_TRAINER, *CUT_EVERY_EVALUATION, *save_dir])
    messages = plateau_messages(caplog)
    assert [m.split(":")[0] for m in messages[:-1]] == ["epoch 1, eval 2", "epoch 2, eval 3"]
    assert messages[-1].startswith("PlateauCallback (val_mse (min), patience 0, factor 0.5): 2 cuts in 3 evaluations")
    assert "lr 1e-3 -> 2.5e-4" in messages[-1]
    match = re.search(r"^Logs: (\S+)", capsys.readouterr().out, flags=re.MULTILINE)
    assert match is not None
    log_dir = Path(match.group(1))
    assert log_dir == tmp_path / "runs" / "regression" / "version_0"
    header = (log_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_mse" in header


def test_warmup_config_parses_fits_and_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """configs/warmup.yaml gives digits.py its warmup; the fit ramps the LR, and explain replays the CSV log alike."""
    import json

    import lightning.pytorch as pl

    from lightning_plateau.cli import main as explain_main

    digits = load_example("digits")
    config = str(ROOT / "configs" / "warmup.yaml")
    parsed = digits.PlateauReportCLI(
        digits.DigitsClassifier,
        digits.DigitsDataModule,
        args=["--config", config],
        run=False,
        auto_configure_optimizers=False,
    )
    assert parsed.model.plateau_config == PlateauConfig(
        patience=2, factor=0.3, min_lr=5e-4, warmup_steps=115, warmup_start_factor=0.1, on_nonfinite="skip"
    )

    class StepLRs(pl.Callback):
        def __init__(self) -> None:
            self.lrs: list[float] = []

        def on_before_optimizer_step(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: object
        ) -> None:
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    # 2 batches per epoch: a 3-step warmup covers the first evaluation (step 2) only
    short = ["--model.plateau.warmup_steps", "3", *TINY_TRAINER, *save_dir]
    fitted = digits.PlateauReportCLI(
        digits.DigitsClassifier,
        digits.DigitsDataModule,
        args=["fit", "--config", config, *short],
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [StepLRs()]},
    )
    (recorder,) = [cb for cb in fitted.trainer.callbacks if isinstance(cb, StepLRs)]
    assert recorder.lrs == [0.01 * (0.1 + 0.9 * k / 3) if k < 3 else 0.01 for k in range(6)]
    plateau = next(cb for cb in fitted.trainer.callbacks if getattr(cb, "scheduler", None) is not None)
    assert [row.warmup for row in plateau.history] == [True, False, False]
    capsys.readouterr()
    assert explain_main(["explain", str(tmp_path / "runs" / "warmup"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["warmup"] for row in report["evaluations"]] == [True, False, False]
    assert [tuple(row["lrs"]) for row in report["evaluations"]] == [row.lrs for row in plateau.history]
    stored = report["settings"].split("; ")[0]
    assert "warmup_steps 3, warmup_start_factor 0.1, on_nonfinite skip" in stored
    assert "(from " in stored
