"""Plateau detectors on real training: torch's `best` rule against EMA smoothing and dlib's `slope`, over seeds.

Run: ``python benchmarks/detectors.py [--seeds 10] [--tasks T,...] [--arms A,...] [--arm NAME=JSON] [--jobs 1]
[--quick] [--markdown PATH]``. Prints one Markdown section (progress goes to stderr); ``--markdown`` also writes it
to a file, to paste unchanged into ``benchmarks/RESULTS.md``. ``--quick`` is a smoke run (2 seeds, half the
epochs) of well under a minute.

Each task (``detector_tasks.py``: the digits classifier and the diabetes regression of ``examples/``, clean and
noisy) is trained with plain Lightning on CPU for a fixed number of epochs, once per seed and arm. An arm is a dict
of PlateauConfig fields laid over the task's base policy (``ARMS``: ``best``, ``best+smoothing``, ``slope``,
``slope+robust`` at the task's patience, and ``constant``, a reference that never cuts; ``--arm`` adds more). An arm
whose fields PlateauConfig does not have (yet), or whose values it refuses, is skipped with a note. Every run of a
seed starts from the same split, weights and batch order, so the arms are compared pairwise, seed by seed.

At each cut the run's state (weights, optimizer state, random state) is kept, and after the run the same training
is continued from there without that cut, for the task's patience in evaluations: a cut is *premature* when that
continuation beats the best value reached before the cut. Runs are deterministic; with the ``constant`` arm in the
selection the script checks it: every arm equals the constant-LR run up to its first cut, and the continuation of
its first cut without the cut equals the constant-LR run there, value for value.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional

import lightning
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_tasks import TASKS, Split, Task, make_model, make_split, test_score

import lightning_plateau
from lightning_plateau import PlateauCallback, PlateauConfig

#: patience of the constant-LR reference: no cut within any budget
NEVER = 10**9
#: the arms, as PlateauConfig fields over each task's base policy (same patience in all)
ARMS: dict[str, dict[str, Any]] = {
    "constant": {"patience": NEVER},
    "best": {},
    "best+smoothing": {"smoothing": 0.6},
    "slope": {"detector": "slope"},
    # dlib's quantile leaves a value out of the line only from 7 kept values on; the default window at patience 5
    # keeps 6, where the robust count is the plain one. A window of 12 gives it values to leave out.
    "slope+robust": {"detector": "slope", "slope_robust": True, "slope_window": 12},
}
#: the arm the targets and the paired test differences refer to
REFERENCE = "best"
QUICK_SEEDS, QUICK_EPOCH_SHARE = 2, 1 / 2


@dataclass(frozen=True)
class _State:
    """What a continuation from an evaluation needs: weights, optimizer state, random state, LRs to train with."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    lrs: tuple[float, ...]


@dataclass
class Run:
    """One arm's run of one (task, seed).

    Attributes:
        values: the monitored metric at each evaluation, raw (as logged, never smoothed).
        extras: the task's other validation metrics at each evaluation.
        cuts: 1-based evaluation of each cut.
        forks: for each cut, the monitored values of the same run continued from that evaluation without the cut.
        test: the held-out score of the model at the end of the budget.
        seconds: wall time of the run and of its continuations.
    """

    arm: str
    seed: int
    values: list[float]
    extras: dict[str, list[float]]
    cuts: list[int]
    forks: list[list[float]]
    test: float
    seconds: float


class _Recorder(pl.Callback):
    """Records the raw validation metrics at each evaluation; keeps the state after each cut, to continue from."""

    def __init__(self, names: Sequence[str], plateau: Optional[PlateauCallback]) -> None:
        self.values: dict[str, list[float]] = {name: [] for name in names}
        self.plateau = plateau
        self.states: dict[int, _State] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, values in self.values.items():
            values.append(float(trainer.callback_metrics[name]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation and the plateau's decision, before the next epoch draws its batch order.
        scheduler = self.plateau.scheduler if self.plateau is not None else None
        if scheduler is None or not scheduler.cuts:
            return
        evaluation = len(next(iter(self.values.values())))
        if scheduler.num_evaluations != evaluation:
            raise RuntimeError(f"the plateau judged {scheduler.num_evaluations} values, the recorder saw {evaluation}")
        cut = scheduler.cuts[-1]
        if cut.evaluation == evaluation:
            self.states[evaluation] = _State(
                copy.deepcopy(pl_module.state_dict()),
                copy.deepcopy(trainer.optimizers[0].state_dict()),
                torch.get_rng_state(),
                cut.lrs_before,
            )


class _Resume(pl.Callback):
    """Starts a fit from a kept state: the optimizer's state with the LRs before the cut, and the random state."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before the fit loop creates the first epoch's batch order (it draws from the global generator).
        optimizer = trainer.optimizers[0]
        optimizer.load_state_dict(copy.deepcopy(self.state.optimizer))
        for group, lr in zip(optimizer.param_groups, self.state.lrs, strict=True):
            group["lr"] = lr
        torch.set_rng_state(self.state.rng)


def _fit(task: Task, split: Split, model: pl.LightningModule, callbacks: list[pl.Callback], epochs: int) -> None:
    batch_size = 64 if task.dataset == "digits" else 32
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            default_root_dir=root,
            accelerator="cpu",
            devices=1,
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
            callbacks=callbacks,
        )
        trainer.fit(
            model,
            DataLoader(split.train, batch_size=batch_size, shuffle=True),
            # One batch: the logged value is the metric over the whole validation set.
            DataLoader(split.val, batch_size=len(split.val)),
        )


def _run_arm(task: Task, split: Split, seed: int, arm: str, overrides: dict[str, Any], forks: bool) -> Run:
    started = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    model = make_model(task, PlateauConfig(**{**task.plateau, **overrides}))
    plateau = PlateauCallback(verbose=False, log_traces=False)
    recorder = _Recorder((task.monitor, *task.extra_metrics), plateau if forks else None)
    _fit(task, split, model, [plateau, recorder], task.epochs)
    assert plateau.scheduler is not None
    cuts = [cut.evaluation for cut in plateau.scheduler.cuts]
    test = test_score(task, model, split)
    continuations = [_continue(task, split, recorder.states[cut], cut) for cut in cuts] if forks else []
    values = recorder.values.pop(task.monitor)
    return Run(arm, seed, values, recorder.values, cuts, continuations, test, time.perf_counter() - started)


def _continue(task: Task, split: Split, state: _State, evaluation: int) -> list[float]:
    """The monitored values of the run continued from ``evaluation`` without its cut, up to patience evaluations."""
    patience = PlateauConfig(**task.plateau).patience
    epochs = min(patience, task.epochs - evaluation)
    if epochs <= 0:
        return []
    model = make_model(task, PlateauConfig(**{**task.plateau, "patience": NEVER}), lr=state.lrs[0])
    model.load_state_dict(state.model)
    recorder = _Recorder((task.monitor,), None)
    _fit(task, split, model, [_Resume(state), PlateauCallback(verbose=False, log_traces=False), recorder], epochs)
    return recorder.values[task.monitor]


def _quiet() -> None:
    """Silence Lightning's set-up chatter and its advice for bigger jobs; the package's own warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    torch.set_num_threads(1)


def run_unit(task: Task, seed: int, arms: dict[str, dict[str, Any]], forks: bool) -> list[Run]:
    """Every arm of one (task, seed), in one process, one after the other."""
    _quiet()
    split = make_split(task, seed)
    return [_run_arm(task, split, seed, arm, overrides, forks) for arm, overrides in arms.items()]


def check_arm(overrides: dict[str, Any], tasks: Sequence[Task]) -> Optional[str]:
    """Why the arm cannot run with this PlateauConfig, ``None`` if it can."""
    names = {f.name for f in dataclasses.fields(PlateauConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        return f"PlateauConfig has no field {', '.join(unknown)} (yet)"
    for task in tasks:
        try:
            PlateauConfig(**{**task.plateau, **overrides})
        except (TypeError, ValueError) as error:
            return f"PlateauConfig refuses {overrides} for {task.name}: {error}"
    return None


# --- measures --------------------------------------------------------------------------------------------------


def _better(value: float, best: float, config: PlateauConfig) -> bool:
    """torch's ``ReduceLROnPlateau.is_better``: ``value`` improves on ``best`` by the policy's threshold."""
    if config.mode == "min":
        return value < (best * (1 - config.threshold) if config.threshold_mode == "rel" else best - config.threshold)
    return value > (best * (1 + config.threshold) if config.threshold_mode == "rel" else best + config.threshold)


def _best(values: Sequence[float], config: PlateauConfig) -> float:
    return min(values) if config.mode == "min" else max(values)


def improved_after_cuts(run: Run, config: PlateauConfig) -> tuple[int, int]:
    """(cuts after which the run itself beat the best before the cut within patience, cuts followed by any)."""
    improved = judged = 0
    for cut in run.cuts:
        window = run.values[cut : cut + config.patience]
        if window:
            judged += 1
            best = _best(run.values[:cut], config)
            improved += any(_better(value, best, config) for value in window)
    return improved, judged


def premature_cuts(run: Run, config: PlateauConfig) -> tuple[int, int]:
    """(cuts whose continuation without the cut beat the best before the cut, cuts with a continuation)."""
    premature = judged = 0
    for cut, fork in zip(run.cuts, run.forks, strict=True):
        if fork:
            judged += 1
            best = _best(run.values[:cut], config)
            premature += any(_better(value, best, config) for value in fork)
    return premature, judged


def evaluations_to(values: Sequence[float], target: float, mode: str) -> float:
    """1-based evaluation at which ``values`` first reach ``target``; inf if never."""
    for index, value in enumerate(values, start=1):
        if (value <= target) if mode == "min" else (value >= target):
            return float(index)
    return math.inf


def check_determinism(runs: dict[str, Run]) -> tuple[int, list[str]]:
    """Compare one seed's arms with its constant-LR run; (comparisons made, those that differ)."""
    constant = runs.get("constant")
    if constant is None:
        return 0, []
    checks, failures = 0, []
    for arm, run in runs.items():
        if arm == "constant":
            continue
        until = run.cuts[0] if run.cuts else len(run.values)
        checks += 1
        if run.values[:until] != constant.values[:until]:
            failures.append(f"{arm}, seed {run.seed}: differs from the constant-LR run before its first cut")
        if run.cuts and run.forks:
            checks += 1
            fork = run.forks[0]
            if fork != constant.values[until : until + len(fork)]:
                failures.append(f"{arm}, seed {run.seed}: the continuation without the first cut differs from it")
    return checks, failures


# --- tables ----------------------------------------------------------------------------------------------------


def _number(value: float, digits: int) -> str:
    if math.isinf(value):
        return "never"
    if digits and round(value, digits) == 0:
        value = 0.0  # no "-0.000"
    return f"{value:.{digits}f}" if digits else f"{value:g}"


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``median [min .. max]`` over seeds."""
    if not values:
        return "—"
    middle, low, high = statistics.median(values), min(values), max(values)
    return f"{_number(middle, digits)} [{_number(low, digits)} .. {_number(high, digits)}]"


def _ratio(pairs: Sequence[tuple[int, int]]) -> str:
    count, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    return f"{count}/{total}" + (f" ({100 * count / total:.0f}%)" if total else "")


@dataclass
class TaskResult:
    """Every run of one task, by arm then seed, and what the tables need from them."""

    task: Task
    runs: dict[str, list[Run]] = field(default_factory=dict)
    forks: bool = True

    @property
    def config(self) -> PlateauConfig:
        return PlateauConfig(**self.task.plateau)

    def reference(self) -> str:
        return REFERENCE if REFERENCE in self.runs else next(iter(self.runs))

    def targets(self) -> dict[int, float]:
        """The reference arm's best value on each seed."""
        return {run.seed: _best(run.values, self.config) for run in self.runs[self.reference()]}

    def rows(self) -> list[list[str]]:
        config, targets, reference = self.config, self.targets(), self.reference()
        reference_tests = {run.seed: run.test for run in self.runs[reference]}
        rows = []
        for arm, runs in self.runs.items():
            has_cuts = arm != "constant"
            reached = [evaluations_to(run.values, targets[run.seed], config.mode) for run in runs]
            row = [
                f"`{arm}`",
                spread([len(run.cuts) for run in runs], 0),
                _ratio([improved_after_cuts(run, config) for run in runs]) if has_cuts else "—",
                _ratio([premature_cuts(run, config) for run in runs]) if has_cuts and self.forks else "—",
                spread([_best(run.values, config) for run in runs]),
                spread([run.values[-1] for run in runs]),
            ]
            row += [spread([run.extras[name][-1] for run in runs]) for name in self.task.extra_metrics]
            row += [
                f"{spread(reached, 0)}, {sum(not math.isinf(r) for r in reached)}/{len(runs)}",
                spread([run.test for run in runs]),
                "—" if arm == reference else spread([run.test - reference_tests[run.seed] for run in runs]),
            ]
            rows.append(row)
        return rows

    def header(self) -> list[str]:
        monitor, reference = self.task.monitor, self.reference()
        return [
            "arm",
            "cuts",
            "improved after cut",
            "premature (continued without the cut)",
            f"best {monitor}",
            f"last {monitor}",
            *(f"last {name}" for name in self.task.extra_metrics),
            f"evaluations to `{reference}`'s best {monitor}, reached",
            self.task.test_metric,
            f"{self.task.test_metric} minus `{reference}`'s",
        ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(
    results: list[TaskResult],
    arms: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    seeds: int,
    seconds: float,
    command: str,
) -> str:
    """The section for RESULTS.md: set-up, definitions, one table per task, a summary and the determinism check."""
    runs = sum(len(r) for result in results for r in result.runs.values())
    lines = [
        f"## Plateau detectors on real training ({datetime.date.today().isoformat()})",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()},"
        f" torch {torch.__version__}, lightning {lightning.__version__}, lightning-plateau"
        f" {lightning_plateau.__version__}. Measured by `{command}`: {len(results)} tasks x {seeds} seeds x"
        f" {len(arms)} arms = {runs} runs, plus one continuation per cut, in {_duration(seconds)}.",
        "",
        "Arms (PlateauConfig fields laid over each task's policy; `constant` is the reference that never cuts): "
        + "; ".join(f"`{arm}` {json.dumps(overrides)}" for arm, overrides in arms.items())
        + ".",
    ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{arm}`: {why}" for arm, why in skipped.items()) + "."]
    lines += ["", *_table(["task", "data", "model, optimizer, budget, policy"], _task_rows(results)), ""]
    lines += _definitions(results)
    for result in results:
        lines += ["", f"### {result.task.name}: {result.task.summary}", "", *_table(result.header(), result.rows())]
    lines += ["", *_summary(results)]
    checks, failures = 0, []
    for result in results:
        by_seed: dict[int, dict[str, Run]] = {}
        for arm, arm_runs in result.runs.items():
            for run in arm_runs:
                by_seed.setdefault(run.seed, {})[arm] = run
        for seed_runs in by_seed.values():
            made, failed = check_determinism(seed_runs)
            checks += made
            failures += [f"{result.task.name}: {failure}" for failure in failed]
    if checks:
        verdict = "all equal, value for value" if not failures else "**DIFFERENT**: " + "; ".join(failures)
        lines += [
            "",
            f"- Determinism: {checks} comparisons with the constant-LR run of the same seed (each arm's run up to"
            f" its first cut; the continuation from its first cut without that cut): {verdict}.",
        ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _task_rows(results: list[TaskResult]) -> list[list[str]]:
    return [[f"`{r.task.name}`", r.task.summary, r.task.describe()] for r in results]


def _definitions(results: list[TaskResult]) -> list[str]:
    reference = results[0].reference() if results else REFERENCE
    return [
        "Each cell is the median [min .. max] over seeds; a/b counts are summed over seeds. P is the task's patience;"
        " \"better\" is the rule's own test (better than the best by the policy's threshold), on the raw monitored"
        " value (never the smoothed one).",
        "",
        "- **cuts**: LR cuts in the budget.",
        "- **improved after cut**: cuts after which one of the next P evaluations of the run (fewer at the end of"
        " the budget) is better than the best before the cut (up to and including the cut's evaluation); of the cuts"
        ' with an evaluation after them. This is "a cut followed by an improvement within patience"; it also counts'
        " improvements that the lower LR brought about.",
        "- **premature**: cuts where the same run, continued from the cut's evaluation *without* the cut (weights,"
        " optimizer state and random state as they were, the LR as before the cut) for the same evaluations, beats"
        " the best before the cut: the old LR was still making progress. Of the cuts with an evaluation after them.",
        "- **best / last**: the monitored value, best over the budget and at its last evaluation"
        " (digits: also the validation accuracy at the last evaluation).",
        f"- **evaluations to `{reference}`'s best**: the first evaluation whose value is as good as the best value"
        f' of `{reference}` on the same seed ("never" if none is, counted as later than any); then on how many'
        " seeds it was reached.",
        "- **test**: the model at the end of the budget, on the held-out test fifth that no plateau sees; and its"
        f" difference from `{reference}`'s on the same seed (same split, weights and batch order).",
    ]


def _summary(results: list[TaskResult]) -> list[str]:
    arms = list(dict.fromkeys(arm for result in results for arm in result.runs))
    rows = []
    for result in results:
        row = [f"`{result.task.name}`"]
        for arm in arms:
            runs = result.runs.get(arm, [])
            if not runs:
                row.append("—")
                continue
            cell = f"{result.task.test_metric} {statistics.median(run.test for run in runs):.3f}"
            reference = {run.seed: run.test for run in result.runs[result.reference()]}
            if arm != result.reference():
                difference = statistics.median(run.test - reference[run.seed] for run in runs)
                cell += f" ({_number(difference, 3)})"
            if arm != "constant" and result.forks:
                cell += f", premature {_ratio([premature_cuts(run, result.config) for run in runs])}"
            row.append(cell)
        rows.append(row)
    return [
        "Summary: the median test score over seeds (in brackets: the median difference from"
        f" `{results[0].reference() if results else REFERENCE}`'s on the same seed), and premature cuts of all cuts.",
        "",
        *_table(["task", *(f"`{arm}`" for arm in arms)], rows),
    ]


# --- driver ----------------------------------------------------------------------------------------------------


def _selection(text: Optional[str], known: dict[str, Any], what: str) -> list[str]:
    if text is None:
        return list(known)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; the {what}s are {list(known)}")
    return names


def _arm_definition(text: str) -> tuple[str, dict[str, Any]]:
    name, _, definition = text.partition("=")
    try:
        overrides = json.loads(definition)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--arm {text!r}: expected NAME={{JSON object of PlateauConfig fields}}: {error}") from None
    if not name or not isinstance(overrides, dict):
        raise SystemExit(
            f"--arm {text!r}: expected NAME={{JSON object of PlateauConfig fields}}, e.g. --arm"
            ' \'slope-p10={"detector": "slope", "patience": 10}\''
        )
    return name, overrides


def measure(
    tasks: Sequence[Task],
    seeds: int,
    arms: dict[str, dict[str, Any]],
    forks: bool = True,
    jobs: int = 1,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[TaskResult]:
    """Run every (task, seed) unit, in ``jobs`` processes; the results by task, arm and seed."""
    units = [(task, seed) for task in tasks for seed in range(seeds)]
    results = {task.name: TaskResult(task, {arm: [] for arm in arms}, forks) for task in tasks}

    def record(task: Task, seed: int, runs: list[Run]) -> None:
        for run in runs:
            results[task.name].runs[run.arm].append(run)
        shown = ", ".join(f"{run.arm} {len(run.cuts)} cuts" for run in runs)
        progress(f"{task.name} seed {seed}: {shown} ({sum(run.seconds for run in runs):.1f} s)")

    if jobs <= 1:
        for task, seed in units:
            record(task, seed, run_unit(task, seed, arms, forks))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = [(task, seed, pool.submit(run_unit, task, seed, arms, forks)) for task, seed in units]
            for task, seed, future in futures:
                record(task, seed, future.result())
    for result in results.values():
        for arm_runs in result.runs.values():
            arm_runs.sort(key=lambda run: run.seed)
    return list(results.values())


def _command(argv: Optional[list[str]]) -> str:
    """The command line that measured, without where it wrote the Markdown."""
    words, shown = list(sys.argv[1:] if argv is None else argv), []
    while words:
        word = words.pop(0)
        if word == "--markdown":
            words = words[1:]
        elif not word.startswith("--markdown="):
            shown.append(word)
    return shlex.join(["python", "benchmarks/detectors.py", *shown])


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per task (seeds 0 .. N-1)")
    parser.add_argument("--tasks", help=f"comma-separated, of {list(TASKS)} (default: all)")
    parser.add_argument("--arms", help=f"comma-separated, of {list(ARMS)} and --arm names (default: all)")
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='add or replace an arm, e.g. --arm \'slope-p10={"detector": "slope", "patience": 10}\'',
    )
    parser.add_argument("--no-forks", action="store_true", help="skip the continuations without each cut")
    parser.add_argument("--jobs", type=int, default=1, help="processes (each runs every arm of one task and seed)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, half the epochs")
    parser.add_argument("--markdown", help="also write the section to this file")
    args = parser.parse_args(argv)
    _quiet()
    known = dict(ARMS)
    known.update(_arm_definition(text) for text in args.arm)
    tasks = [TASKS[name] for name in _selection(args.tasks, TASKS, "task")]
    seeds = args.seeds
    if args.quick:
        seeds = min(seeds, QUICK_SEEDS)
        tasks = [dataclasses.replace(t, epochs=max(10, round(t.epochs * QUICK_EPOCH_SHARE))) for t in tasks]
    arms, skipped = {}, {}
    for name in _selection(args.arms, known, "arm"):
        why = check_arm(known[name], tasks)
        if why is None:
            arms[name] = known[name]
        else:
            skipped[name] = why
            print(f"Skipping arm `{name}`: {why}.", file=sys.stderr)
    if not arms:
        raise SystemExit("no arm can run with this PlateauConfig")
    started = time.perf_counter()
    results = measure(tasks, seeds, arms, forks=not args.no_forks, jobs=args.jobs)
    text = markdown(results, arms, skipped, seeds, time.perf_counter() - started, _command(argv)) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
