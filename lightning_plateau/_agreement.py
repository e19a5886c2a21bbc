"""Where a replay parts from what the run recorded, and why: ``explain`` never shows a replay as the run it is not.

A run records at each evaluation what it did (its plateau traces, or a checkpoint's history): its LR, whether the
evaluation fell in the warmup, was skipped as non-finite, restored weights at its cut, withheld a cut. A replay of the
run's values under the run's settings agrees with all of it. Where it does not, a setting is not the run's: one the
run did not store, which the replay assumed (refused, naming the option that gives it), or one given for a what-if, or
changed at a resume (said, with the evaluation where they part). Restores change no decision: the run's own are shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

from lightning_plateau._format import format_lrs, format_steps, format_value
from lightning_plateau._sources import History, Recorded
from lightning_plateau.config import PlateauConfig
from lightning_plateau.replay import Replay, ReplayRow

#: How a setting of the replay was chosen: given as an option, stored with the run, or assumed (PlateauConfig's).
GIVEN, STORED, ASSUMED = "given", "stored", "assumed"
# A traced value is the float the run judged, written as text (or float32 by TensorBoard): equal to this much.
_SAME_VALUE = 1e-5


def aligned(history: History, result: Replay) -> Optional[Recorded]:
    """The run's record when its evaluations are the replay's, one for one; ``None`` otherwise.

    A replay that withheld a cut and stopped is compared with the record up to there.
    """
    recorded = history.recorded
    if recorded is None:
        return None
    if len(recorded) == len(result) or (result.withheld is not None and len(recorded) > len(result)):
        return recorded
    return None


def check_flags(history: History, result: Replay, origins: Mapping[str, str]) -> list[str]:
    """Refuse a replay that contradicts the run's record of its warmup or its skips on a setting it assumed.

    Returns a warning where a setting given or stored with the run contradicts it (a what-if, or a setting changed
    at a resume), ``[]`` where they agree or the source recorded nothing.

    Raises:
        ValueError: where the setting was assumed (not stored with the run), or is a stored ``warmup_steps`` (changed
            at a resume): the message names the evaluation, what the run recorded and the option that gives the
            run's setting.
    """
    recorded = aligned(history, result)
    if recorded is None:
        return []
    flagged = result.warmup_evaluations or result.skipped_evaluations
    if not flagged and not any(recorded.warmup) and not any(recorded.skipped):
        return []  # neither has a warmup or a skip: nothing to compare, row by row
    config = result.config
    for row, warmup, skipped in zip(result, recorded.warmup, recorded.skipped, strict=False):
        if row.warmup != warmup:
            origin = origins["warmup_steps"]
            problem = _warmup_problem(history, recorded, row, config, origin)
            advice = _warmup_advice(recorded, result.warmup_start_step)
            if origin == STORED:
                # A warmup setting changed at a resume leaves rows that no one setting replays exactly: the run's
                # rows are what it did, so the setting of its last fit is not shown as the run.
                raise ValueError(
                    f"{problem} The run stores its last fit's setting: it changed at a resume (one that came after the"
                    f" warmup was over does not start it again). {advice}"
                )
            return _refuse_or_warn(problem, advice, origin)
        if row.skipped != skipped:
            problem = _skip_problem(history, recorded, row, config, origins["on_nonfinite"])
            advice = f"Pass --on-nonfinite {'skip' if skipped else 'bad'}, the run's setting."
            return _refuse_or_warn(problem, advice, origins["on_nonfinite"])
    return []


def _refuse_or_warn(problem: str, advice: str, origin: str) -> list[str]:
    if origin == ASSUMED:
        raise ValueError(f"{problem} {advice}")
    changed = " Was the setting changed at a resume? The run stores its last fit's." if origin == STORED else ""
    return [f"{problem}{changed} The rows from there on show what these settings would do, not what the run did."]


def _label(recorded: Recorded, row: ReplayRow) -> str:
    """Where an evaluation lies, as the record says: ``evaluation 3 (epoch 2, global step 24)``."""
    index = row.evaluation - 1
    labels = []
    epoch = recorded.epochs[index] if index < len(recorded.epochs) else None
    step = recorded.steps[index] if index < len(recorded.steps) else None
    if epoch is not None:
        labels.append(f"epoch {epoch}")
    if step is not None:
        labels.append(f"global step {step}")
    return f"evaluation {row.evaluation}" + (f" ({', '.join(labels)})" if labels else "")


def origin_text(origin: str, history: History) -> str:
    """How a setting was chosen, for messages: ``given``, ``from hparams.yaml``, ``assumed: not stored ...``."""
    if origin == GIVEN:
        return "given"
    if origin == STORED:
        return f"from {history.policy_from}"
    return "assumed: not stored with the run"


def _warmup_problem(history: History, recorded: Recorded, row: ReplayRow, config: PlateauConfig, origin: str) -> str:
    where = f"{history.name}: {_label(recorded, row)}"
    column = recorded.column("warmup")
    setting = f"warmup_steps {config.warmup_steps} ({origin_text(origin, history)})"
    if row.warmup:
        return (
            f"{where} was judged after the run's warmup ({column} of {recorded.where}), but this replay's {setting}"
            " puts it in the warmup."
        )
    warmup = "has no warmup" if not config.warmup_steps else "has its warmup over by then"
    return (
        f"{where} was in the run's warmup, not judged ({column} of {recorded.where}), but this replay {warmup}:"
        f" {setting}."
    )


def _warmup_advice(recorded: Recorded, start: int) -> str:
    """The option that gives the run's warmup, with the bounds its record puts on ``warmup_steps``.

    ``start`` is the step the warmup counted from.
    """
    steps = [None if step is None else step - start for step in recorded.steps]
    in_warmup = [step for step, flag in zip(steps, recorded.warmup, strict=True) if flag and step is not None]
    after = [step for step, flag in zip(steps, recorded.warmup, strict=True) if not flag and step is not None]
    bounds = ""
    if in_warmup and after:
        # An evaluation is in the warmup at global_step - start < warmup_steps.
        low, high = max(in_warmup) + 1, min(after)
        bounds = f" (by its record, from {low} to {high})" if low < high else f" ({high}, by its record)"
    elif in_warmup:
        bounds = f" (by its record, above {max(in_warmup)})"
    return (
        f"Pass --warmup-steps with the run's warmup_steps{bounds}, and --warmup-start-factor with its"
        " warmup_start_factor."
    )


def _skip_problem(history: History, recorded: Recorded, row: ReplayRow, config: PlateauConfig, origin: str) -> str:
    where = f"{history.name}: {_label(recorded, row)}"
    column = recorded.column("skipped")
    setting = f"on_nonfinite {config.on_nonfinite!r} ({origin_text(origin, history)})"
    if row.skipped:
        return (
            f"{where} was judged by the run ({column} of {recorded.where}), but this replay's {setting} skips its"
            f" value, {format_value(row.value)}."
        )
    return (
        f"{where} was skipped by the run ({column} of {recorded.where}): its value, {format_value(row.value)}, was"
        f" left out of the rule, as on_nonfinite='skip' does; this replay's {setting} counts it as an evaluation"
        " without improvement."
    )


def restores_as_recorded(history: History, result: Replay, origin: str) -> tuple[Replay, list[str]]:
    """``result`` with the weight restores the run recorded at its cuts, and a warning where the setting says else.

    ``origin`` is how ``restore_best_on_cut`` was chosen. A run whose setting changed at a resume restored at some
    cuts and not at others, which no one setting replays; a resume from a checkpoint without best weights restored
    nothing until the next best. The record says what happened: it is shown, never a restore that did not happen.
    A cut the run did not make keeps the replay's restore (the departure of the LRs says the rows are not the run's).
    """
    recorded = aligned(history, result)
    if recorded is None or not result.cuts:
        return result, []
    restores = [
        recorded.restores[index] if index < len(recorded) and recorded.cuts[index] else None
        for index in range(len(result))
    ]
    made = {cut.evaluation for cut in result.cuts if recorded.cuts[cut.evaluation - 1]}
    for cut in result.cuts:
        if cut.evaluation not in made and cut.restored_from is not None:
            restores[cut.evaluation - 1] = (cut.restored_from, cut.restored_epoch)
    shown = result._as_recorded(restores)
    fewer: list[str] = []
    more: list[str] = []
    for replayed, actual in zip(result.cuts, shown.cuts, strict=True):
        if replayed.evaluation not in made or replayed.restored_from == actual.restored_from:
            continue
        run = "no weights" if actual.restored_from is None else f"the weights of evaluation {actual.restored_from}"
        setting = "none" if replayed.restored_from is None else f"those of evaluation {replayed.restored_from}"
        text = f"at the cut of evaluation {replayed.evaluation} it restored {run} (the setting: {setting})"
        (fewer if actual.restored_from is None else more).append(text)
    if not fewer and not more:
        return shown, []
    why = []
    if more and origin == ASSUMED:
        why.append("the run had the setting on then, and did not store it (give --restore-best-on-cut)")
    elif more:
        why.append("the setting was on when the run made those cuts (turned off at a resume)")
    if fewer:
        why.append(
            "the setting was off when the run made those cuts (turned on at a resume), or the run resumed from a"
            " checkpoint that held no best weights"
        )
    setting = f"restore_best_on_cut {'on' if result.config.restore_best_on_cut else 'off'}"
    reason = "; or ".join(why)
    return shown, [
        f"the run's weight restores are not what {setting} ({origin_text(origin, history)}) makes:"
        f" {'; '.join(more + fewer)}. {reason[0].upper()}{reason[1:]}. The cuts show the restores the run recorded."
    ]


def check_withheld(history: History, result: Replay, origin: Optional[str]) -> list[str]:
    """A warning where the run's record of a withheld cut and the replay's part, ``[]`` where they agree."""
    recorded = aligned(history, result) or history.recorded
    if recorded is None:
        return []
    run = recorded.withheld
    replayed = result.withheld
    if replayed is not None and len(recorded) > len(result) and run != replayed.evaluation:
        return [
            f"this replay stops at evaluation {replayed.evaluation}, where PlateauEarlyStopping(max_reductions="
            f"{result.max_reductions}) ({origin}) withholds its cut {len(result.cuts) + 1}, but the run went on to"
            f" evaluation {len(recorded)}: the run did not stop there, so its settings are not these."
        ]
    if run is not None and (replayed is None or replayed.evaluation != run):
        instead = (
            "does not withhold a cut there"
            if replayed is None
            else f"withholds the cut of evaluation {replayed.evaluation} instead"
        )
        return [
            f"{recorded.where} record that PlateauEarlyStopping(max_reductions=...) withheld the cut called for at"
            f" evaluation {run} and stopped the run there; this replay {instead}: its settings are not the run's."
        ]
    return []


def departure(history: History, result: Replay, origins: Mapping[str, str]) -> Optional[str]:
    """Where the run's own LRs (its trace) part from this replay's, ``None`` when they agree or are unknown.

    Raises:
        ValueError: where they part inside the warmup and its ``warmup_start_factor`` was assumed: the message
            gives the factor the run's LR there says it had.
    """
    traced = history.traced_lrs
    if traced is None:
        return None
    if len(traced) != len(result) and not (result.withheld is not None and len(traced) > len(result)):
        return None
    for row, lrs in zip(result, traced, strict=False):
        if _same_lrs(lrs, row.lrs):
            continue
        if row.warmup and origins["warmup_start_factor"] == ASSUMED:
            raise ValueError(_start_factor_problem(history, result, row, lrs))
        if row.cut and row.evaluation == len(traced) and _same_lrs(lrs, result.cuts[-1].lrs_before):
            # The run's last evaluation: its LR stayed where this replay cuts. A cut withheld at the cut limit of
            # PlateauEarlyStopping leaves exactly this, and a log does not record it (a checkpoint does).
            limit = len(result.cuts) - 1
            return (
                f"at evaluation {row.evaluation}, the run's last, this replay cuts the lr {format_lrs(lrs)} ->"
                f" {format_lrs(row.lrs)}, but the run's LR stayed {format_lrs(lrs)}."
                f" PlateauEarlyStopping(max_reductions={limit}) withholds that cut and stops the run there, which a"
                " log does not record (the run's"
                f" checkpoint does): if the run had it, pass --max-reductions {limit}. Otherwise the LR was changed"
                " outside the plateau, or the run used other settings than these."
            )
        return (
            f"from evaluation {row.evaluation} on, the run's LR ({format_lrs(lrs)}) is not this replay's"
            f" ({format_lrs(row.lrs)}): the LR was changed outside the plateau, or the run used other settings"
            " than these. The rows from there on show what these settings would do, not what the run did."
        )
    return None


def _start_factor_problem(history: History, result: Replay, row: ReplayRow, lrs: Sequence[float]) -> str:
    """The run's LR inside its warmup is not this replay's: the start factor, which the run did not store."""
    config = result.config
    step = row.global_step or 0
    share = (step - result.warmup_start_step) / config.warmup_steps
    # lr = base * (start + (1 - start) * share), solved for start
    start = (lrs[0] / result.initial_lrs[0] - share) / (1.0 - share)
    hint = f" (its LR there says {start:.6g})" if 0.0 < start <= 1.0 + 1e-9 else ""
    return (
        f"{history.name}: at evaluation {row.evaluation} (global step {step}), in the warmup, the run's LR was"
        f" {format_lrs(lrs)}, this replay's is {format_lrs(row.lrs)} with warmup_start_factor"
        f" {config.warmup_start_factor:g} (assumed: not stored with the run). Pass --warmup-start-factor with the"
        f" run's{hint}."
    )


def _same_lrs(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(a, b, strict=True))


def judged_windows(history: History, config: PlateauConfig) -> Optional[list[tuple[int, int]]]:
    """The window each of the run's judged values is the mean of, for reasons that name steps as the live run's.

    From a checkpoint's rows; else from the trainer's step at each evaluation (``plateau/global_step``): a window
    ends at its evaluation's step and starts after the previous one's (exact unless a window logged no value,
    which the run warned of: it then starts later than shown). ``None`` when they cannot be told.
    """
    if not config.window_steps or not history.judged:
        return None
    recorded = history.recorded
    if recorded is not None and recorded.windows is not None and len(recorded.windows) == len(history.values):
        windows = recorded.windows
        return [window for window in windows if window is not None] if None not in windows else None
    steps = history.trainer_steps
    if steps is None or len(steps) != len(history.values):
        return None
    spans: list[tuple[int, int]] = []
    previous = 0
    for step in steps:
        if step is None or step <= previous:
            return None
        spans.append((previous + 1, step))
        previous = step
    return spans


def check_means(history: History, result: Replay) -> int:
    """Refuse windows of a per-step column whose means are not the values the run judged in the same windows.

    The logger keeps one value per optimizer step: under gradient accumulation one micro-batch's, under DDP rank
    zero's alone, where the run judged the mean of every micro-batch on every rank. Only the windows that are the
    run's (the same steps) are compared: other windows (another ``window_steps``) hold other values.

    Returns:
        How many windows were compared (0: none could be, the means are unchecked).

    Raises:
        ValueError: at the first window whose mean here is not the run's ``plateau/value`` there.
    """
    recorded = history.recorded
    if recorded is None or recorded.values is None:
        return 0
    judged: dict[tuple[int, int], float] = {}
    previous = 0
    for step, value in zip(recorded.steps, recorded.values, strict=True):
        if step is None or step <= previous:
            return 0
        judged[(previous + 1, step)] = value  # a window ends at its evaluation's step, after the previous one's
        previous = step
    compared = 0
    for row in result:
        run = judged.get(row.window) if row.window is not None else None
        if run is None or row.window is None:
            continue
        compared += 1
        if _same_value(run, row.value):
            continue
        raise ValueError(
            f"{history.name}: the mean of {history.monitor}'s values in the window of {format_steps(row.window)}"
            f" (evaluation {row.evaluation}) is {format_value(row.value)}, but the run judged"
            f" {format_value(run)} there ({recorded.where}, plateau/value): {history.monitor} holds one value per"
            " optimizer step as the logger kept it (under gradient accumulation one micro-batch's, under DDP rank"
            " zero's alone), where the run judged the mean of every value it logged. Replay the values the run"
            " judged: leave --monitor out, or give --monitor plateau/value, or explain the run's checkpoint."
        )
    return compared


def _same_value(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=_SAME_VALUE, abs_tol=1e-12)


def check_trainer(history: History, monitor: str) -> Optional[str]:
    """Refuse windows of a per-step column the run's stored Trainer settings say are not its judged means.

    Returns what is assumed where the settings are not stored (a note to print), ``None`` where they say the
    column is exact.

    Raises:
        ValueError: with ``accumulate_grad_batches`` above 1, or several devices or nodes.
    """
    trainer = history.trainer
    accumulate = trainer.get("accumulate_grad_batches")
    fix = (
        "Replay the values the run judged: a log with the plateau/value trace (--monitor plateau/value), or the"
        " run's checkpoint."
    )
    if isinstance(accumulate, int) and accumulate > 1:
        raise ValueError(
            f"{history.name}: the run accumulated gradients over {accumulate} batches (accumulate_grad_batches in"
            f" its config.yaml): {monitor} holds one micro-batch's value per optimizer step, as the logger keeps it,"
            f" where the run judged the mean of all {accumulate}, so its windows cannot be rebuilt from it. {fix}"
        )
    processes = _processes(trainer)
    if processes is not None and processes > 1:
        raise ValueError(
            f"{history.name}: the run trained on {processes} processes (devices and num_nodes in its"
            f" config.yaml): {monitor} holds rank zero's values alone, where the run judged the mean over every"
            f" rank, so its windows cannot be rebuilt from it. {fix}"
        )
    if accumulate is not None and processes == 1:
        return None
    return (
        f"{monitor} is windowed from its per-step values, assuming they are every value the run judged: one per"
        " optimizer step, from one process (no gradient accumulation, no DDP); the run's Trainer settings are not"
        " stored with it."
    )


def _processes(trainer: Mapping[str, object]) -> Optional[int]:
    """How many processes a LightningCLI run's stored ``devices`` and ``num_nodes`` make, ``None`` if unknown."""
    devices = trainer.get("devices")
    nodes = trainer.get("num_nodes", 1)
    if not isinstance(nodes, int):
        return None
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, list):
        devices = len(devices)
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    return None  # "auto", -1: as many as the machine had
