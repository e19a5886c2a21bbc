"""The README quickstart and the two LightningCLI examples run for real, on tiny budgets."""

from __future__ import annotations

import importlib.util
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


def cut_rows(output: str) -> list[tuple[int, int, str]]:
    """(epoch, evaluation, "lr before -> lr after") of each row of the printed cut table."""
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+(\S+ -> \S+)$", output, flags=re.MULTILINE)
    return [(int(epoch), int(evaluation), lrs) for epoch, evaluation, lrs in rows]


def test_digits_example_prints_cuts_and_wandb_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """digits.py with its YAML cuts at evaluations 2 and 3, prints them and the offline W&B run it wrote."""
    wandb = pytest.importorskip("wandb")
    digits = load_example("digits")
    config = str(ROOT / "configs" / "digits.yaml")
    save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    try:
        digits.main(["fit", "--config", config, *TINY_TRAINER, *CUT_EVERY_EVALUATION, *save_dir])
    finally:
        wandb.teardown()
    output = capsys.readouterr().out
    assert "Plateau: val_loss (min), patience 0, factor 0.3; 3 evaluations, 2 cut(s)" in output
    assert cut_rows(output) == [(2, 2, "0.01 -> 0.003"), (3, 3, "0.003 -> 0.0009")]
    match = re.search(r"^W&B offline run: (\S+)", output, flags=re.MULTILINE)
    assert match is not None
    run_dir = Path(match.group(1))
    assert run_dir.parent == tmp_path / "runs" / "wandb"
    assert run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("run-*.wandb"))


def test_regression_example_prints_cuts_and_csv_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """regression.py with its YAML cuts at evaluations 2 and 3, prints them and the CSV log directory."""
    regression = load_example("regression")
    config = str(ROOT / "configs" / "regression.yaml")
    save_dir = ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    regression.main(["fit", "--config", config, *TINY_TRAINER, *CUT_EVERY_EVALUATION, *save_dir])
    output = capsys.readouterr().out
    assert "Plateau: val_mse (min), patience 0, factor 0.5; 3 evaluations, 2 cut(s)" in output
    assert cut_rows(output) == [(2, 2, "1e-3 -> 5e-4"), (3, 3, "5e-4 -> 2.5e-4")]
    match = re.search(r"^Logs: (\S+)", output, flags=re.MULTILINE)
    assert match is not None
    log_dir = Path(match.group(1))
    assert log_dir == tmp_path / "runs" / "regression" / "version_0"
    header = (log_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_mse" in header
