"""Read a metric history from what users already have: a metrics.csv, a W&B run, a JSON array, a list of numbers."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from lightning_plateau._rule import _POLICY, _warmup_end_of, warmup_lrs
from lightning_plateau.config import PlateauConfig

_DEFAULT_MONITOR = PlateauConfig().monitor
# Separators a value may be followed by at the end of its line.
_TRAILING = ",; \t"
# Columns that label evaluations rather than being candidates for the monitor.
_CSV_LABELS = ("epoch", "step")
_WANDB_LABELS = ("epoch", "trainer/global_step")
# The name TensorBoard's event files start with.
_TB_EVENTS = "events.out.tfevents."
# Between the values of a history given on one line: a comma (spaces or tabs around it allowed), or blanks alone.
_ONE_LINE_SEPARATOR = re.compile(r"\s*,\s*|\s+")
# The plateau traces read besides the LRs (and Lightning's epoch, which labels them).
_TRACE_TAGS = (
    "plateau/reductions",
    "plateau/evaluation",
    "plateau/global_step",
    "plateau/warmup",
    "plateau/value",
    "plateau/skipped",
    "plateau/restores",
    "plateau/restored_from",
    "plateau/num_bad",
    "plateau/smoothed",
    "plateau/warmup_start_step",
    "epoch",
)
# The Trainer settings of a LightningCLI run (its config.yaml) that say whether a per-step column holds every value a
# window judged: one micro-batch's value per step is logged under gradient accumulation, rank 0's alone under DDP.
_TRAINER_SETTINGS = ("accumulate_grad_batches", "devices", "num_nodes", "strategy")
#: (first, last) optimizer step of a window, 1-based
Span = tuple[int, int]


class SourceError(ValueError):
    """A SOURCE that cannot be read as a metric history; the message says where and why."""


@dataclass
class Recorded:
    """What the run itself recorded at each evaluation it judged: its plateau traces, or a checkpoint's history.

    Each list holds one entry per recorded evaluation, oldest first. A replay of the run's own values and settings
    agrees with every entry; where it does not, the run did something the replay does not (a setting not stored
    with the run, or one changed at a resume), and ``explain`` says so instead of showing the replay as the run.

    Attributes:
        where: the record, for messages (``"the checkpoint's plateau history"``, ``"metrics.csv's plateau traces"``).
        values: the value judged (``plateau/value``; with windows, the window's mean); ``None`` where not recorded.
        steps: the trainer's global step (``plateau/global_step``), ``None`` entries where not recorded.
        epochs: the epoch (0-based), ``None`` entries where not recorded.
        cuts: whether it cut the LR (a checkpoint's rows; the traces' ``plateau/reductions`` rising).
        warmup: whether it fell in the warmup (``plateau/warmup``; a run without a warmup logs no such column).
        skipped: whether its non-finite value was left out of the rule (``plateau/skipped``, logged with
            ``on_nonfinite="skip"`` only).
        restores: at a cut that restored the best weights, ``(restored_from, its epoch)``, else ``None``
            (``plateau/restored_from``, logged with ``restore_best_on_cut`` only).
        withheld: the evaluation whose cut ``PlateauEarlyStopping(max_reductions=K)`` withheld (the run stopped
            there), ``None`` if none or not recorded.
        knows_withheld: whether the source records a withheld cut: a checkpoint does, the traces do not.
        traces: whether the record is the run's plateau traces (``plateau/...`` columns), not a checkpoint's rows.
        windows: with windows, the steps of the window each evaluation judged (a checkpoint's rows), else ``None``.
        num_bad: the detector's count after each evaluation (``plateau/num_bad``), ``None`` entries where not recorded.
        smoothed: with ``smoothing``, the moving average judged (``plateau/smoothed``); ``None`` entries where the run
            judged none (no smoothing, or an evaluation not judged).
    """

    where: str
    values: Optional[list[float]]
    steps: list[Optional[int]]
    epochs: list[Optional[int]]
    cuts: list[bool]
    warmup: list[bool]
    skipped: list[bool]
    restores: list[Optional[tuple[int, Optional[int]]]]
    withheld: Optional[int] = None
    knows_withheld: bool = False
    windows: Optional[list[Optional[Span]]] = None
    traces: bool = True
    num_bad: Optional[list[Optional[int]]] = None
    smoothed: Optional[list[Optional[float]]] = None

    def __len__(self) -> int:
        return len(self.warmup)

    def column(self, flag: str) -> str:
        """Where the record holds ``flag`` (``"warmup"``, ``"skipped"``): a trace's column, or a row's field."""
        return f"plateau/{flag}" if self.traces else f"the rows' {flag} field"


@dataclass
class History:
    """The values to replay and their labels.

    Attributes:
        values: the monitored value at each evaluation, oldest first.
        epochs: an epoch label (0-based) per value, ``None`` when the source has none.
        global_steps: a step label per value, ``None`` when the source has none.
        monitor: the column the values come from, ``None`` for a bare list of numbers.
        name: the source, for messages and titles.
        policy: the PlateauConfig fields the run stored with itself (its hparams or W&B config), ``{}`` if none.
        policy_from: where ``policy`` was read, ``None`` if nowhere.
        lrs: the starting LR of each param group, from the run's ``plateau/lr`` trace; ``None`` if none.
        lrs_from: where ``lrs`` was read, ``None`` if nowhere.
        traced_lrs: the LRs the run had after each evaluation (its trace or checkpoint), ``None`` if unknown.
        judged: whether the values are the values the plateau judged (a checkpoint's history, a ``plateau/``
            trace such as ``plateau/value``): one per evaluation already, with windows each a window's mean.
        trainer_steps: the trainer's global step at each evaluation (a checkpoint's history, the
            ``plateau/global_step`` trace), which a warmup counts; ``None`` if unknown. ``global_steps`` holds the
            source's own step labels, which for a logger are Lightning's logging steps.
        recorded: what the run recorded at each evaluation it judged (see :class:`Recorded`), ``None`` without
            plateau traces or a checkpoint's history.
        trainer: the Trainer settings a LightningCLI run stored in its ``config.yaml`` that a window's mean depends
            on (``accumulate_grad_batches``, ``devices``, ``num_nodes``, ``strategy``), ``{}`` if none.
        warnings: what the reader found doubtful but readable (a W&B run not finished), for the command to say.
        warmup_start_step: the global step the run's warmup counted from: the step its fit started at (a reused
            Trainer's fresh fit starts past 0), from the checkpoint's scheduler or the ``plateau/warmup_start_step``
            trace; 0 where neither says otherwise.
        notes: by setting, what the reader took from the run's record in place of the stored setting, and why, for
            the command to say where the setting is not given.
    """

    values: list[float]
    epochs: Optional[list[Optional[int]]]
    global_steps: Optional[list[Optional[int]]]
    monitor: Optional[str]
    name: str
    policy: dict[str, Any] = field(default_factory=dict)
    policy_from: Optional[str] = None
    lrs: Optional[tuple[float, ...]] = None
    lrs_from: Optional[str] = None
    traced_lrs: Optional[list[tuple[float, ...]]] = None
    judged: bool = False
    trainer_steps: Optional[list[Optional[int]]] = None
    recorded: Optional[Recorded] = None
    trainer: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    warmup_start_step: int = 0
    notes: dict[str, str] = field(default_factory=dict)


def read_history(source: str, monitor: Optional[str], stdin: TextIO) -> History:
    """Read SOURCE: ``-`` (stdin), a W&B run (``.wandb`` file or run directory), JSON, CSV, or text.

    Text holds one value per line, or all the values on a single line separated by commas, spaces or tabs
    (``1.0 0.9 0.8``, ``1.0, 0.9, 0.8``). A first line of names is a CSV header. A directory is a CSVLogger
    version directory (its ``metrics.csv``), a logs directory (the latest ``version_N``'s, named in the history's
    name) or a W&B run; a ``.ckpt`` file is a Lightning checkpoint (its plateau history). The plateau settings and
    starting LRs the run stored come along in the history's ``policy`` and ``lrs``.

    Args:
        source: the path given on the command line, or ``-``.
        monitor: the column to read from a CSV or a W&B run; ``None``: ``val_loss``, or the only candidate.
        stdin: where ``-`` reads from.

    Raises:
        SourceError: if the source is missing, of no known kind, lacks the column, or holds a value that is
            not a number (the message gives its line, and on a one-line history the item).
        ImportError: for a W&B run without the ``wandb`` package.
    """
    history = _read(source, monitor, stdin)
    if history.monitor is not None and history.monitor.startswith("plateau/"):
        history.judged = True
    _follow_traced_warmup(history)
    return history


def _follow_traced_warmup(history: History) -> None:
    """Replay no warmup where the run's traces mark none of its evaluations as in one, whatever its settings say.

    A run resumed with a longer ``warmup_steps`` after its warmup was over (or that never had one) does not warm up
    again: it judges every evaluation, and stores the longer setting. Its traces say what it did: no evaluation in
    the warmup, so a replay without one gives its rows exactly (the warmup's ramp, before the first evaluation, is
    in no row).
    """
    recorded = history.recorded
    stored = history.policy.get("warmup_steps")
    steps = history.trainer_steps
    if recorded is None or not recorded.traces or not isinstance(stored, int) or not stored or steps is None:
        return
    if any(recorded.warmup):
        return  # the run had a warmup: check_flags compares it with the setting, row by row
    start = history.warmup_start_step
    inside = [step for step in steps if step is not None and step - start < stored]
    if not inside:
        return
    history.policy["warmup_steps"] = 0
    history.notes["warmup_steps"] = (
        f"{history.name}: the run's settings say warmup_steps {stored} ({history.policy_from}), but its plateau"
        f" traces mark no evaluation as in the warmup, not even the one at global step {inside[0]}: it judged every"
        " evaluation (a run resumed with a longer warmup_steps after its warmup was over, or that never had one, does"
        " not warm up again). Replayed without a warmup, as the run judged; give --warmup-steps for a what-if."
    )


def _read(source: str, monitor: Optional[str], stdin: TextIO) -> History:
    if source == "-":
        return _parse_text(stdin.read(), "<stdin>", monitor, {})
    path = Path(source)
    if not path.exists():
        raise SourceError(f"{source}: no such file or directory")
    if path.name.startswith(_TB_EVENTS):
        return _read_tensorboard(path.parent, monitor)
    if path.is_dir():
        metrics = _csv_logger_metrics(path)
        if metrics is None:
            if any(path.glob(f"{_TB_EVENTS}*")):
                return _read_tensorboard(path, monitor)
            return _read_wandb(path, monitor)
        path = metrics
        source = str(metrics)
    if path.suffix == ".ckpt":
        return _read_checkpoint(path, monitor)
    with path.open("rb") as file:
        if file.read(4) == b":W&B":
            return _read_wandb(path, monitor)
    policy, policy_from = _policy_beside(path)
    trainer = _trainer_settings(path.parent) if path.name == "metrics.csv" else {}
    if policy and monitor is None:
        monitor = policy.get("monitor")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(
            f"{source} is neither text (CSV, JSON, one value per line) nor a W&B run file (.wandb)"
        ) from None
    history = _parse_text(text, source, monitor, policy)
    history.policy, history.policy_from, history.trainer = policy, policy_from, trainer
    return history


def _csv_logger_metrics(directory: Path) -> Optional[Path]:
    """The ``metrics.csv`` of a CSVLogger version directory, or of the latest ``version_N`` in a logs directory."""
    if (directory / "metrics.csv").is_file():
        return directory / "metrics.csv"
    versions = [
        (int(child.name.removeprefix("version_")), child / "metrics.csv")
        for child in directory.glob("version_*")
        if child.name.removeprefix("version_").isdigit() and (child / "metrics.csv").is_file()
    ]
    return max(versions)[1] if versions else None


def _policy_beside(path: Path) -> tuple[dict[str, Any], Optional[str]]:
    """The plateau a CSVLogger run stored beside its ``metrics.csv``; ``{}`` if none."""
    return _policy_in(path.parent) if path.name == "metrics.csv" else ({}, None)


def _policy_in(directory: Path) -> tuple[dict[str, Any], Optional[str]]:
    """The plateau a logger's version directory holds; ``{}`` if none.

    Read from ``hparams.yaml`` (a module's ``plateau`` init argument), else from LightningCLI's ``config.yaml``
    (``model.plateau``, or the ``init_args`` of ``--lr_scheduler lightning_plateau.PlateauScheduler``).
    """
    path = directory / "metrics.csv"
    hparams = path.with_name("hparams.yaml")
    if hparams.is_file():
        policy = _stored_policy(_yaml(hparams))
        if policy:
            return policy, str(hparams)
    cli_config = path.with_name("config.yaml")
    if cli_config.is_file():
        stored = _yaml(cli_config)
        model = stored.get("model") if isinstance(stored, Mapping) else None
        policy = _stored_policy(model if isinstance(model, Mapping) else {})
        scheduler = stored.get("lr_scheduler") if isinstance(stored, Mapping) else None
        if (
            not policy
            and isinstance(scheduler, Mapping)
            and str(scheduler.get("class_path", "")).endswith("PlateauScheduler")
        ):
            policy = _stored_policy({"plateau": scheduler.get("init_args") or {}})
        if policy:
            return policy, str(cli_config)
    return {}, None


def _trainer_settings(directory: Path) -> dict[str, Any]:
    """The Trainer settings of :data:`_TRAINER_SETTINGS` a LightningCLI run stored in its ``config.yaml``."""
    cli_config = directory / "config.yaml"
    stored = _yaml(cli_config) if cli_config.is_file() else None
    trainer = stored.get("trainer") if isinstance(stored, Mapping) else None
    if not isinstance(trainer, Mapping):
        return {}
    return {key: trainer[key] for key in _TRAINER_SETTINGS if key in trainer}


def _read_tensorboard(directory: Path, monitor: Optional[str]) -> History:
    """The monitor's scalars from a TensorBoardLogger version directory's event files, with the policy beside them.

    Read with the ``tensorboard`` package's own reader (no TensorFlow). TensorBoard stores float32: the starting LRs
    of the ``plateau/lr`` trace are rounded to float32's 7 significant digits (``0.00999999977`` is ``0.01``).
    """
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError as err:
        raise ImportError(
            f"{directory} holds TensorBoard event files; reading them needs the tensorboard package: pip install"
            ' "lightning-plateau[tensorboard]"'
        ) from err
    accumulator = EventAccumulator(str(directory), size_guidance={SCALARS: 0})  # 0: every value, not a sample
    accumulator.Reload()
    tags = accumulator.Tags().get("scalars", [])
    policy, policy_from = _policy_in(directory)
    if policy and monitor is None:
        monitor = policy.get("monitor")
    name = str(directory)
    candidates = [tag for tag in tags if not tag.startswith("plateau/") and tag != "hp_metric"]
    column = _pick_column(candidates if monitor is None else tags, monitor, f"The TensorBoard run {name}", ("epoch",))
    events = accumulator.Scalars(column)
    epoch_at = {event.step: int(event.value) for event in accumulator.Scalars("epoch")} if "epoch" in tags else {}
    rows: dict[int, dict[str, Any]] = {}
    for tag in tags:
        if tag.startswith("plateau/lr") or tag in _TRACE_TAGS:
            for event in accumulator.Scalars(tag):
                rows.setdefault(event.step, {})[tag] = event.value
    steps = sorted(rows)
    trace = _read_trace((rows[step] for step in steps), float32=True)
    _refuse_two_fits(trace, name, lambda position: f"step {steps[position]}", "that fit's events")
    lrs = _starting_lrs(trace, policy, name) if trace is not None else None
    return History(
        [float(event.value) for event in events],
        [epoch_at.get(event.step) for event in events] if epoch_at else None,
        [int(event.step) for event in events],
        column,
        name,
        policy=policy,
        policy_from=policy_from,
        lrs=lrs,
        lrs_from=f"the TensorBoard run's plateau/lr trace ({name})" if lrs is not None else None,
        traced_lrs=trace.lrs if trace is not None else None,
        trainer_steps=trace.trainer_steps() if trace is not None else None,
        recorded=trace.recorded(f"the TensorBoard run's plateau traces ({name})") if trace is not None else None,
        trainer=_trainer_settings(directory),
        warmup_start_step=trace.warmup_start_step() if trace is not None else 0,
    )


def _read_checkpoint(path: Path, monitor: Optional[str]) -> History:
    """The plateau history, policy and starting LRs a Lightning checkpoint holds (loaded with ``weights_only``)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a file that is no checkpoint
        raise SourceError(f"{path} is not a checkpoint torch loads with weights_only=True: {error}") from None
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, Mapping) else None
    states = [
        state
        for key, state in (callbacks or {}).items()
        if isinstance(key, str) and key.startswith("PlateauCallback") and isinstance(state, Mapping)
    ]
    if len(states) != 1 or not states[0].get("history"):
        raise SourceError(
            f"{path} holds {'no plateau history' if not states else f'{len(states)} plateau histories'}: explain"
            " reads a checkpoint written by a fit with one PlateauCallback (the PlateauMixin adds one)"
        )
    rows = states[0]["history"]
    scheduler = next(
        (state for state in checkpoint.get("lr_schedulers") or [] if isinstance(state, Mapping) and "cuts" in state),
        {},
    )
    stored = checkpoint.get("hyper_parameters") or {}
    plateau = stored.get("plateau") if isinstance(stored, Mapping) else None
    if isinstance(plateau, PlateauConfig):
        stored = {"plateau": dataclasses.asdict(plateau)}
    policy = _stored_policy(stored) or _scheduler_policy(scheduler)
    notes = _follow_checkpointed_warmup(policy, scheduler, path)
    if "best_state" in states[0]:
        # Kept only by a PlateauCallback with restore_best_on_cut (its hparams may not say, without the mixin).
        policy.setdefault("restore_best_on_cut", True)
    watched = states[0].get("monitor") or policy.get("monitor")
    if monitor is not None and watched is not None and monitor != watched:
        raise SourceError(f"{path} holds the plateau history of {watched!r} only, not of {monitor!r}")
    first = rows[0]
    cuts = scheduler.get("cuts") or []
    lrs = tuple(cuts[0]["lrs_before"]) if first.get("cut") and cuts else tuple(first["lrs"])
    if first.get("warmup") and scheduler.get("warmup_base_lrs"):
        lrs = tuple(scheduler["warmup_base_lrs"])  # the LR the warmup rose to, which the replay starts from
    epochs = [row.get("epoch") for row in rows]
    # Rows written before a feature existed lack its key: the run did not have it.
    restores = [
        None
        if row.get("restored_from") is None
        else (int(row["restored_from"]), _epoch_of(epochs, int(row["restored_from"])))
        for row in rows
    ]
    withheld = next((index + 1 for index, row in enumerate(rows) if row.get("withheld")), None)
    windows = [_span(row.get("window")) for row in rows]
    recorded = Recorded(
        f"the checkpoint's plateau history ({path})",
        [float(row["value"]) for row in rows],
        [row.get("global_step") for row in rows],
        epochs,
        [bool(row.get("cut")) for row in rows],
        [bool(row.get("warmup")) for row in rows],
        [bool(row.get("skipped")) for row in rows],
        restores,
        withheld=withheld,
        knows_withheld=True,
        windows=windows if any(window is not None for window in windows) else None,
        traces=False,
        num_bad=[row.get("num_bad") for row in rows],
        smoothed=[row.get("smoothed") for row in rows],
    )
    return History(
        [float(row["value"]) for row in rows],
        [row.get("epoch") for row in rows],
        [row.get("global_step") for row in rows],
        watched,
        str(path),
        policy=policy,
        policy_from=f"the checkpoint ({path})" if policy else None,
        lrs=lrs,
        lrs_from=f"the checkpoint's plateau history ({path})",
        traced_lrs=[tuple(row["lrs"]) for row in rows],
        judged=True,
        trainer_steps=[row.get("global_step") for row in rows],
        recorded=recorded,
        warmup_start_step=int(scheduler.get("warmup_start_step") or 0),
        notes=notes,
    )


def _follow_checkpointed_warmup(policy: dict[str, Any], scheduler: Mapping[str, Any], path: Path) -> dict[str, str]:
    """Put the warmup the run had in ``policy`` where its stored ``warmup_steps`` says another; return a note on it.

    A warmup that is over, or that a run never had, does not start again when the run is resumed with a longer
    ``warmup_steps``, and the checkpoint stores the longer setting. The scheduler's state says what the run did: the
    step its warmup ended at (``warmup_end_step``, ``None`` for none) and the step it counted from.
    """
    if not scheduler.get("warmup_done") or "warmup_steps" not in policy:
        return {}  # still in its warmup (the setting applies), or a checkpoint from before warmups
    end = scheduler.get("warmup_end_step", _warmup_end_of(scheduler))
    start = int(scheduler.get("warmup_start_step") or 0)
    had = 0 if end is None else int(end) - start
    stored = policy["warmup_steps"]
    if stored == had:
        return {}
    policy["warmup_steps"] = had
    ran = f"its warmup ended at global step {end}, after {had} steps" if end is not None else "it had no warmup"
    return {
        "warmup_steps": f"{path}: the run's settings say warmup_steps {stored}, but {ran} (the checkpoint's scheduler"
        " state): the setting changed at a resume, which does not start again a warmup that is over, or that the run"
        f" never had. Replayed with warmup_steps {had}, as the run judged; give --warmup-steps for a what-if."
    }


def _epoch_of(epochs: list[Optional[int]], evaluation: int) -> Optional[int]:
    """The epoch of a 1-based evaluation, ``None`` when unknown."""
    return epochs[evaluation - 1] if 0 < evaluation <= len(epochs) else None


def _span(window: Any) -> Optional[Span]:
    """A window's (first, last) steps as a checkpoint stores them (a list or tuple), ``None`` for none."""
    if not isinstance(window, (list, tuple)) or len(window) != 2:
        return None
    return int(window[0]), int(window[1])


def optimizer_steps(history: History) -> Optional[list[int]]:
    """The optimizer step (1-based) each value of a per-step training metric belongs to, for windows.

    A logger's step for a value logged per step in ``training_step`` is the count of optimizer steps before it, so
    step ``s`` (0-based) belongs to optimizer step ``s + 1``. A bare list of numbers has none: ``None`` (one value
    per step, from step 1).

    Raises:
        SourceError: if a value has no step, or the steps do not follow each other from 0 (a value logged every
            ``log_every_n_steps``, Lightning's default 50, or a log that continues a resumed run): a window's mean
            needs the value of every step.
    """
    steps = history.global_steps
    if steps is None:
        return None
    previous = -1
    for step in steps:
        if step != previous + 1:
            found = "a value without a step" if step is None else f"step {step} after step {previous}"
            if previous < 0 and step is not None:
                found = f"a first value at step {step}, not 0"
            raise SourceError(
                f"{history.name}: {history.monitor} holds {found}: a window's mean needs the value of every optimizer"
                " step, from the first. Log it at every step (Trainer(log_every_n_steps=1); Lightning's default logs"
                " every 50th), explain the log of the run's start, or replay what the run judged:"
                " --monitor plateau/value, or the run's checkpoint"
            )
        previous = step
    return [step + 1 for step in steps if step is not None]


def _scheduler_policy(state: Mapping[str, Any]) -> dict[str, Any]:
    """The policy a PlateauScheduler's checkpointed state holds (what ``state_dict`` writes), ``{}`` if none."""
    policy = {key: state[key] for key in (*_POLICY, "monitor") if key in state}
    min_lrs = state.get("min_lrs")
    if isinstance(min_lrs, list) and min_lrs:
        policy["min_lr"] = min_lrs[0] if len(set(min_lrs)) == 1 else list(min_lrs)
    return policy


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SourceError(f"{path} is not valid YAML: {error}") from None


def _stored_policy(stored: Any) -> dict[str, Any]:
    """The PlateauConfig fields a run stored under ``plateau`` (hparams, W&B config), as plain values."""
    plateau = stored.get("plateau") if isinstance(stored, Mapping) else None
    if not isinstance(plateau, Mapping):
        return {}
    names = {f.name for f in dataclasses.fields(PlateauConfig)} - {"strict"}
    return {key: value for key, value in plateau.items() if key in names and value is not None}


@dataclass(frozen=True)
class _Trace:
    """The run's ``plateau/lr`` trace: the LRs after each traced evaluation, oldest first, with what else was traced.

    ``steps`` (``plateau/global_step``), ``reductions`` (``plateau/reductions``), ``warmup`` (``plateau/warmup``),
    ``values`` (``plateau/value``), ``skipped`` (``plateau/skipped``), ``restored_from`` (``plateau/restored_from``),
    ``epochs``, ``evaluations`` (``plateau/evaluation``), ``num_bad`` (``plateau/num_bad``), ``smoothed``
    (``plateau/smoothed``), ``warmup_start`` (``plateau/warmup_start_step``) and ``withheld`` (``plateau/withheld``,
    logged under a cut limit) hold one entry per traced
    evaluation, ``None`` where the run did not trace it; ``positions`` the index of its row among the rows read.
    """

    lrs: list[tuple[float, ...]]
    first_evaluation: int
    first_cut: bool
    steps: list[Optional[int]] = field(default_factory=list)
    reductions: list[Optional[int]] = field(default_factory=list)
    warmup: list[Optional[bool]] = field(default_factory=list)
    values: list[Optional[float]] = field(default_factory=list)
    skipped: list[Optional[bool]] = field(default_factory=list)
    restored_from: list[Optional[int]] = field(default_factory=list)
    epochs: list[Optional[int]] = field(default_factory=list)
    evaluations: list[Optional[int]] = field(default_factory=list)
    num_bad: list[Optional[int]] = field(default_factory=list)
    smoothed: list[Optional[float]] = field(default_factory=list)
    warmup_start: list[Optional[int]] = field(default_factory=list)
    withheld: list[Optional[bool]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)

    def trainer_steps(self) -> Optional[list[Optional[int]]]:
        """The trainer's global step of each traced evaluation, ``None`` unless the run traced every one."""
        return self.steps if self.steps and all(step is not None for step in self.steps) else None

    def warmup_start_step(self) -> int:
        """The step the run's warmup counted from: a reused Trainer's fit traces it, 0 otherwise (not traced)."""
        return next((start for start in self.warmup_start if start is not None), 0)

    def second_fit(self) -> Optional[tuple[int, int, int, int]]:
        """Where the evaluations count again from a lower number, as a second fit's do; ``None`` if they never do.

        Returns:
            The index among the rows read of the last row traced before, and of that row; their evaluations.
        """
        previous: Optional[tuple[int, int]] = None
        for evaluation, position in zip(self.evaluations, self.positions, strict=True):
            if evaluation is None:
                continue
            if previous is not None and evaluation <= previous[1]:
                return previous[0], position, previous[1], evaluation
            previous = position, evaluation
        return None

    def recorded(self, where: str) -> Recorded:
        """The trace as a :class:`Recorded`.

        The run logs ``plateau/warmup`` only with a warmup, ``plateau/skipped`` only with ``on_nonfinite="skip"`` and
        ``plateau/restored_from`` only at a cut that restored: an evaluation traced without them had none of these.
        """
        values = [value for value in self.values if value is not None]
        counts = [0, *(count or 0 for count in self.reductions)]
        return Recorded(
            where,
            values if len(values) == len(self.values) else None,
            self.steps,
            self.epochs,
            [after > before for before, after in itertools.pairwise(counts)],
            [bool(flag) for flag in self.warmup],
            [bool(flag) for flag in self.skipped],
            [None if source is None else (source, _epoch_of(self.epochs, source)) for source in self.restored_from],
            num_bad=self.num_bad,
            smoothed=self.smoothed,
            # Traced only under a cut limit (PlateauEarlyStopping(max_reductions=K)): a log without the column
            # cannot tell whether the run had one.
            withheld=next((index + 1 for index, flag in enumerate(self.withheld) if flag), None),
            knows_withheld=any(flag is not None for flag in self.withheld),
        )


def _read_trace(rows: Iterable[Mapping[str, Any]], *, float32: bool = False) -> Optional[_Trace]:
    """The plateau/lr trace of ``rows`` (rows without it are skipped), ``None`` if there is none."""
    lrs: list[tuple[float, ...]] = []
    columns: dict[str, list[Any]] = {name: [] for name in _TRACE_COLUMNS}
    positions: list[int] = []
    first_evaluation, first_cut = 1, False
    for position, row in enumerate(rows):
        # One param group: `plateau/lr`; several: `plateau/lr/pg0`, `plateau/lr/pg1`, ...
        keys = ["plateau/lr"] if _filled(row.get("plateau/lr")) else []
        while keys[:1] != ["plateau/lr"] and _filled(row.get(f"plateau/lr/pg{len(keys)}")):
            keys.append(f"plateau/lr/pg{len(keys)}")
        if not keys:
            continue
        # TensorBoard stores float32: 0.00999999977 is 0.01 (float32 holds 7 significant digits).
        lrs.append(tuple(float(f"{float(row[key]):.7g}") if float32 else float(row[key]) for key in keys))
        for name, (tag, read) in _TRACE_COLUMNS.items():
            columns[name].append(read(row.get(tag)))
        positions.append(position)
        if len(lrs) == 1:
            evaluation = columns["evaluations"][0]
            first_evaluation = evaluation if evaluation is not None else 1
            first_cut = bool(columns["reductions"][0])
    if not lrs:
        return None
    return _Trace(lrs, first_evaluation, first_cut, positions=positions, **columns)


def _filled(cell: Any) -> bool:
    return cell is not None and cell != ""


def _trace_float(cell: Any) -> Optional[float]:
    """A traced value as a float (NaN and infinities included), ``None`` for an empty cell."""
    if not _filled(cell):
        return None
    try:
        return float(str(cell))
    except ValueError:
        return None


def _trace_int(cell: Any) -> Optional[int]:
    """A traced count (a step, a flag) as an int, ``None`` for an empty or non-finite cell."""
    if not _filled(cell):
        return None
    value = float(str(cell))
    return int(value) if math.isfinite(value) else None


def _trace_flag(cell: Any) -> Optional[bool]:
    """A traced flag (1 or 0) as a bool, ``None`` for an empty cell."""
    flag = _trace_int(cell)
    return None if flag is None else flag > 0


# The columns of a _Trace read from each traced row: (the tag, how its cell is read).
_TRACE_COLUMNS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "steps": ("plateau/global_step", _trace_int),
    "reductions": ("plateau/reductions", _trace_int),
    "warmup": ("plateau/warmup", _trace_flag),
    "values": ("plateau/value", _trace_float),
    "skipped": ("plateau/skipped", _trace_flag),
    "restored_from": ("plateau/restored_from", _trace_int),
    "epochs": ("epoch", _trace_int),
    "evaluations": ("plateau/evaluation", _trace_int),
    "num_bad": ("plateau/num_bad", _trace_int),
    "smoothed": ("plateau/smoothed", _trace_float),
    "warmup_start": ("plateau/warmup_start_step", _trace_int),
    "withheld": ("plateau/withheld", _trace_flag),
}


def _refuse_two_fits(trace: Optional[_Trace], name: str, row: Callable[[int], str], rows: str) -> None:
    """Refuse a log that holds more than one fit: a replay of their values as one run would make cuts neither made.

    A reused Trainer's next fit logs to the same logger, and a resume may log into the same version: the plateau's
    evaluations then count again (``plateau/evaluation`` goes back). ``row`` names a row by its index among the rows
    read, ``rows`` what a copy of the log would keep of one fit.
    """
    found = trace.second_fit() if trace is not None else None
    if found is None:
        return
    last, first, previous, evaluation = found
    raise SourceError(
        f"{name} holds more than one fit: its plateau traces count evaluations again at {row(first)}"
        f" (plateau/evaluation {evaluation}, after {previous} at {row(last)}), as the next fit of a reused Trainer, or"
        " a resume that logged into the same version, does. Replayed as one run, their values would make cuts"
        " neither fit made. Explain one fit: a checkpoint it wrote (.ckpt), which holds its plateau history alone, or"
        f" a copy of the log with only {rows} (the first fit's traces end at {row(last)}, the next one's start at"
        f" {row(first)})."
    )


def _starting_lrs(trace: _Trace, policy: Mapping[str, Any], name: str) -> Optional[tuple[float, ...]]:
    """The LRs before the trace's first evaluation; refused for a log that starts in the middle of a run.

    With a warmup, the LRs it rose to, which a replay starts from; ``None`` when they cannot be told.
    """
    if trace.first_evaluation != 1:
        raise SourceError(
            f"{name}: its plateau traces start at evaluation {trace.first_evaluation}, so this log continues a"
            " resumed run: a replay of it would start without the evaluations before it (and their best value)."
            " Explain the run's checkpoint, which holds the whole plateau history, or the log of the run's start."
        )
    if trace.warmup and trace.warmup[0]:
        return _lrs_before_warmup(trace, policy)
    # A cut at the very first evaluation (patience 0) left no row with the LR before it: undo the run's own factor
    # (exact unless min_lr capped that cut).
    factor = float(policy.get("factor", PlateauConfig().factor))
    first = trace.lrs[0]
    return tuple(lr / factor for lr in first) if trace.first_cut else first


def _lrs_before_warmup(trace: _Trace, policy: Mapping[str, Any]) -> Optional[tuple[float, ...]]:
    """The LRs a run's warmup rose to (a replay starts from them), from a trace that starts in the warmup.

    The first evaluation after the warmup holds them exactly, unless it cut already; else the first evaluation's
    LR, divided by the warmup's scale at its step; ``None`` when the run stored neither its warmup_steps nor the
    step (the settings line then says the LR is assumed).
    """
    for lrs, in_warmup, reductions in zip(trace.lrs, trace.warmup, trace.reductions, strict=True):
        if not in_warmup:
            if not reductions:
                return lrs
            break
    steps = int(policy.get("warmup_steps") or 0)
    start = float(policy.get("warmup_start_factor", PlateauConfig().warmup_start_factor))
    step = trace.steps[0] if trace.steps else None
    if not steps or step is None:
        return None
    scale = warmup_lrs([1.0], step - trace.warmup_start_step(), steps, start)[0]
    return tuple(lr / scale for lr in trace.lrs[0])


def _parse_text(text: str, name: str, monitor: Optional[str], policy: Mapping[str, Any]) -> History:
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write first
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")) or name.endswith(".json"):
        return _parse_json(stripped, name)
    lines = text.splitlines()
    filled = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not filled:
        raise SourceError(f"{name} is empty: no values to replay")
    number, first = filled[0]
    if _is_number(first.rstrip(_TRAILING)):
        return _parse_lines(lines, name)
    items = _ONE_LINE_SEPARATOR.split(first)
    if items and not items[-1]:
        items = items[:-1]  # a trailing separator (`1.0,0.9,0.8,`)
    # A lone line with a number among its items is a history written across (`1.0 0.9 0.8`); a line of names alone
    # is a CSV header, as before.
    if any(_is_number(item) for item in items):
        if len(filled) == 1:
            return _parse_one_line(items, name, number)
        # Several lines, the first holding numbers: a header-less table or a history split across lines. Either
        # reading could drop or mix values, so neither is guessed.
        raise SourceError(
            f"{name} line {number} holds {len(items)} items, numbers among them, and more lines follow: give a CSV"
            " whose first line names its columns (e.g. epoch,val_loss), one value per line, or all values on one"
            " line"
        )
    return _parse_csv(lines, name, monitor, policy)


def _parse_one_line(items: list[str], name: str, number: int) -> History:
    values: list[float] = []
    for index, item in enumerate(items, start=1):
        try:
            values.append(float(item))
        except ValueError:
            what = "an empty item" if not item else repr(item)
            raise SourceError(f"{name} line {number}: {what} (item {index} of {len(items)}) is not a number") from None
    return History(values, None, None, None, name)


def _parse_json(text: str, name: str) -> History:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError(f"{name} is not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise SourceError(f"{name} holds a JSON {type(data).__name__}; expected an array of numbers, e.g. [0.9, 0.8]")
    for index, item in enumerate(data):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise SourceError(f"{name}: item {index + 1} of the JSON array is {json.dumps(item)}, not a number")
    return History([float(item) for item in data], None, None, None, name)


def _parse_lines(lines: list[str], name: str) -> History:
    values: list[float] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip().rstrip(_TRAILING)  # one value per line, each maybe followed by a separator (`1.0,`)
        if not text:
            continue
        try:
            values.append(float(text))
        except ValueError:
            raise SourceError(f"{name} line {number}: {text!r} is not a number") from None
    return History(values, None, None, None, name)


def _parse_csv(lines: list[str], name: str, monitor: Optional[str], policy: Mapping[str, Any]) -> History:
    # The header is the first non-blank line (the caller saw one); messages still count the blank lines before it.
    skipped = next(number for number, line in enumerate(lines) if line.strip())
    reader = csv.reader(lines[skipped:])
    header = [column.strip() for column in next(reader)]
    column = _pick_column(header, monitor, name, _CSV_LABELS)
    index = header.index(column)
    epoch_index = header.index("epoch") if "epoch" in header else None
    step_index = header.index("step") if "step" in header else None
    values: list[float] = []
    epochs: list[Optional[int]] = []
    steps: list[Optional[int]] = []
    for row in reader:
        cell = row[index].strip() if index < len(row) else ""
        if not cell:
            continue
        line = skipped + reader.line_num
        values.append(_csv_number(cell, column, name, line))
        epochs.append(_csv_label(row, epoch_index, "epoch", name, line))
        steps.append(_csv_label(row, step_index, "step", name, line))
    trace = None
    if any(column.startswith("plateau/lr") for column in header):
        trace = _read_trace(csv.DictReader(lines[skipped:]))
        # DictReader's rows follow the header line, one line each: row i is on line skipped + i + 2.
        _refuse_two_fits(trace, name, lambda position: f"line {skipped + position + 2}", "that fit's lines")
    lrs = _starting_lrs(trace, policy, name) if trace is not None else None
    return History(
        values,
        epochs if epoch_index is not None else None,
        steps if step_index is not None else None,
        column,
        name,
        lrs=lrs,
        lrs_from=f"{name}'s plateau/lr trace" if lrs is not None else None,
        traced_lrs=trace.lrs if trace is not None else None,
        trainer_steps=trace.trainer_steps() if trace is not None else None,
        recorded=trace.recorded(f"{name}'s plateau traces") if trace is not None else None,
        warmup_start_step=trace.warmup_start_step() if trace is not None else 0,
    )


def _csv_number(cell: str, column: str, name: str, line: int) -> float:
    try:
        return float(cell)
    except ValueError:
        raise SourceError(f"{name} line {line}: {column} is {cell!r}, not a number") from None


def _csv_label(row: list[str], index: Optional[int], column: str, name: str, line: int) -> Optional[int]:
    if index is None or index >= len(row) or not row[index].strip():
        return None
    value = _csv_number(row[index].strip(), column, name, line)
    if not value.is_integer():
        raise SourceError(f"{name} line {line}: {column} is {row[index].strip()!r}, not a whole number")
    return int(value)


def _read_wandb(path: Path, monitor: Optional[str]) -> History:
    from lightning_plateau._wandb_file import read_run

    run = read_run(path)
    name = str(path)
    policy = _stored_policy(run.config)
    if policy and monitor is None:
        monitor = policy.get("monitor")
    columns = [column for column in run.columns() if not column.startswith("_")]
    if not run.finished and (monitor or _DEFAULT_MONITOR) not in columns:
        # Not written yet, most likely: asking for another column would not help.
        wanted = monitor or _DEFAULT_MONITOR
        raise SourceError(f"{_unfinished(run.path)}. It holds no column {wanted!r} yet (its columns: {columns}).")
    column = _pick_column(columns, monitor, f"The W&B run {name}", _WANDB_LABELS)
    values: list[float] = []
    epochs: list[Optional[int]] = []
    steps: list[Optional[int]] = []
    for number, row in enumerate(run.history, start=1):
        value = row.get(column)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SourceError(
                f"The W&B run {name}, history row {number} (_step {row.get('_step')}): {column} is"
                f" {json.dumps(value)[:60]}, not a number"
            )
        values.append(float(value))
        epochs.append(_wandb_label(row.get("epoch")))
        steps.append(_wandb_label(row.get("trainer/global_step")))
    trace = _read_trace(run.history)
    _refuse_two_fits(
        trace,
        name,
        lambda position: f"history row {position + 1} (_step {run.history[position].get('_step')})",
        "that fit's rows",
    )
    lrs = _starting_lrs(trace, policy, name) if trace is not None else None
    return History(
        values,
        epochs if any(epoch is not None for epoch in epochs) else None,
        steps if any(step is not None for step in steps) else None,
        column,
        name,
        policy=policy,
        policy_from=f"the W&B run's config ({name})" if policy else None,
        lrs=lrs,
        lrs_from=f"the W&B run's plateau/lr trace ({name})" if lrs is not None else None,
        traced_lrs=trace.lrs if trace is not None else None,
        trainer_steps=trace.trainer_steps() if trace is not None else None,
        recorded=trace.recorded(f"the W&B run's plateau traces ({name})") if trace is not None else None,
        warnings=[] if run.finished else [f"{_unfinished(run.path)} What it holds so far is replayed."],
        warmup_start_step=trace.warmup_start_step() if trace is not None else 0,
    )


def _unfinished(path: Path) -> str:
    """Why an offline W&B run without its exit record may lack what it logged, and what to do."""
    return (
        f"The W&B run {path} is not finished (its file has no exit record): it is still open, and W&B may not have"
        " written all it logged yet, or its process died. Finish the run (wandb.finish(), or let the process that"
        " logs it end), then explain it"
    )


def _wandb_label(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _pick_column(columns: list[str], monitor: Optional[str], name: str, labels: tuple[str, ...]) -> str:
    if monitor is not None:
        if monitor not in columns:
            raise SourceError(f"{name} has no column {monitor!r}; the columns are {columns}")
        return monitor
    if _DEFAULT_MONITOR in columns:
        return _DEFAULT_MONITOR
    candidates = [column for column in columns if column not in labels]
    if len(candidates) == 1:
        return candidates[0]
    raise SourceError(f"{name} has no column {_DEFAULT_MONITOR!r}; the columns are {columns}: pick one with --monitor")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
