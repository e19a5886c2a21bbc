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


# The settings that decide the count after each evaluation (torch's bad count, or the slope's), besides smoothing.
_COUNT_SETTINGS = ("mode", "threshold", "threshold_mode", "patience", "cooldown", "detector")
_SLOPE_SETTINGS = ("slope_window", "slope_confidence", "slope_robust")


def check_counts(
    history: History, result: Replay, origins: Mapping[str, str], *, proofs_only: bool = False
) -> list[str]:
    """Compare the replay's moving averages and counts with the run's record: refuse an assumed setting it disproves.

    Compared only where the replay judges the run's own values (its ``plateau/value``): another metric's counts are
    not the run's to compare with. The record proves some settings outright: a ``plateau/smoothed`` value means
    smoothing was on (and the averages give its weight); a count that jumps by more than one, or falls to another
    count but 0, is the slope detector's (torch's count only adds one or restarts at 0). Where the averages or the
    counts part otherwise, a setting deciding them is not the run's: refused where they were assumed and none was
    given, else a warning. With ``proofs_only`` (a what-if table, whose policies differ by design) only an assumed
    setting the record proves wrong is refused.

    Returns:
        Warnings, ``[]`` where the replay agrees with the record or there is nothing to compare.

    Raises:
        ValueError: where an assumed setting (not stored with the run, not given) is proved wrong, or the counts part
            where settings deciding them were assumed and none given: the message names the evaluation, what the run
            recorded, what the record proves and the options to pass.
    """
    recorded = aligned(history, result)
    if recorded is None or recorded.values is None or recorded.num_bad is None:
        return []
    if not all(_same_value(run, row.value) for row, run in zip(result, recorded.values, strict=False)):
        return []  # other values than the run judged (another column): its record says nothing of them
    config = result.config
    smoothed = recorded.smoothed or [None] * len(recorded)
    _refuse_disproved(history, recorded, result, origins, smoothed)
    for row, run_average, run_count in zip(result, smoothed, recorded.num_bad, strict=False):
        if row.warmup or row.skipped:
            continue  # nothing judged: the flags are checked by check_flags
        where = f"{history.name}: {_label(recorded, row)}"
        if (run_average is None) != (row.smoothed is None) or (
            run_average is not None and row.smoothed is not None and not _same_value(run_average, row.smoothed)
        ):
            problem = _averages_part(where, recorded, row, run_average, config.smoothing, origins["smoothing"], history)
            return _part(problem, _weight_hint(recorded), ["smoothing"], origins, proofs_only=proofs_only)
        if proofs_only or run_count is None or run_count == row.num_bad:
            continue
        problem = (
            f"{where}: the run's count after it was {run_count} ({_column(recorded, 'num_bad')} of {recorded.where}),"
            f" this replay's is {row.num_bad}."
        )
        names = [*_COUNT_SETTINGS, *(_SLOPE_SETTINGS if config.detector == "slope" else ())]
        hint = _patience_hint(recorded) if config.detector == "best" and _slope_evidence(recorded) is None else ""
        return _part(problem, hint, names, origins, config=config)
    return []


def _refuse_disproved(
    history: History,
    recorded: Recorded,
    result: Replay,
    origins: Mapping[str, str],
    smoothed: Sequence[Optional[float]],
) -> None:
    """Refuse the assumed settings the record proves wrong, all of them at once: smoothing off, the best detector."""
    proofs = []
    options = []
    if origins["smoothing"] == ASSUMED and not result.config.smoothing:
        found = next(
            (
                (row, average)
                for row, average in zip(result, smoothed, strict=False)
                if average is not None and not (row.warmup or row.skipped)
            ),
            None,
        )
        if found is not None:
            row, average = found
            weight = _weight_of(recorded)
            proofs.append(
                f"at {_label(recorded, row)} it judged a moving average of the values, {format_value(average)}"
                f" ({_column(recorded, 'smoothed')}): its smoothing was on"
                + (f" (its averages say {weight:.3g})" if weight is not None else "")
                + ", where this replay assumed smoothing 0"
            )
            options.append("--smoothing")
    slope = _slope_evidence(recorded)
    if slope is not None and origins["detector"] == ASSUMED and result.config.detector != "slope":
        evaluation, before, after = slope
        proofs.append(
            f"its count ({_column(recorded, 'num_bad')}) goes from {before} to {after} at evaluation {evaluation},"
            " which torch's rule never does (it adds one, or starts again at 0): it used the slope detector, where"
            " this replay assumed detector best"
        )
        options += ["--detector slope", "--slope-window", "--slope-confidence", "--slope-robust"]
    if proofs:
        raise ValueError(
            f"{history.name}: the run's record ({recorded.where}) says what its settings, not stored with it, were:"
            f" {'; '.join(proofs)}. Pass {', '.join(options)} with the run's (and its --patience)."
        )


def _averages_part(
    where: str,
    recorded: Recorded,
    row: ReplayRow,
    run_average: Optional[float],
    weight: float,
    origin: str,
    history: History,
) -> str:
    """Where the run's moving average is not this replay's: one judged none, or they differ."""
    setting = f"smoothing {weight:g} ({origin_text(origin, history)})"
    column = _column(recorded, "smoothed")
    if run_average is None:
        return (
            f"{where}: the run judged the value as it was ({column} is empty there, in {recorded.where}): its"
            f" smoothing was off, and this replay's {setting} judges a moving average."
        )
    if row.smoothed is None:
        return (
            f"{where}: the run judged a moving average of the values, {format_value(run_average)} ({column} of"
            f" {recorded.where}): its smoothing was on, and this replay's {setting} judges the values as they are."
        )
    return (
        f"{where}: the run judged the moving average {format_value(run_average)} ({column} of {recorded.where}), this"
        f" replay {format_value(row.smoothed)} with {setting}."
    )


def _part(
    problem: str,
    hint: str,
    names: Sequence[str],
    origins: Mapping[str, str],
    *,
    proofs_only: bool = False,
    config: Optional[PlateauConfig] = None,
) -> list[str]:
    """Refuse where the settings deciding what parts were assumed and none given; else a warning saying why."""
    assumed = [name for name in names if origins[name] == ASSUMED]
    given = [name for name in names if origins[name] == GIVEN]
    options = ", ".join(f"--{name.replace('_', '-')}" for name in assumed)
    if assumed and not given:
        listed = ", ".join(_setting(config, name) for name in assumed) if config is not None else ", ".join(assumed)
        raise ValueError(
            f"{problem}{hint} The settings that decide it were assumed (not stored with the run): {listed}."
            f" Pass {options} with the run's."
        )
    if proofs_only:
        return []  # a what-if table's policies differ from the run's by design
    if given:
        why = f" The {', '.join(given)} given {'is' if len(given) == 1 else 'are'} not the run's"
        if assumed:
            why += f", or an assumed setting is not ({', '.join(assumed)})."
        else:
            why += ", or another setting is not." if len(given) < len(names) else "."
    else:
        why = " Was a setting changed at a resume? The run stores its last fit's."
    return [f"{problem}{hint}{why} The rows from there on show what these settings would do, not what the run did."]


def _setting(config: PlateauConfig, name: str) -> str:
    value = getattr(config, name)
    text = ("on" if value else "off") if isinstance(value, bool) else value if isinstance(value, str) else f"{value:g}"
    return f"{name} {text}"


def _column(recorded: Recorded, name: str) -> str:
    """Where the record holds ``name`` (``"num_bad"``, ``"smoothed"``): a trace's column, or a row's field."""
    return f"plateau/{name}" if recorded.traces else f"the rows' {name} field"


def _slope_evidence(recorded: Recorded) -> Optional[tuple[int, int, int]]:
    """The first evaluation whose count only the slope detector makes: (evaluation, count before, count there).

    torch's count adds one at a time (a skipped value leaves it, a warmup keeps it 0) or starts again at 0.
    """
    before: Optional[int] = None
    for evaluation, count in enumerate(recorded.num_bad or [], start=1):
        if count is None:
            before = None
            continue
        if before is not None and count not in (0, before, before + 1):
            return evaluation, before, count
        before = count
    return None


def _weight_hint(recorded: Recorded) -> str:
    """The smoothing weight the run's averages say it had, as a hint for a message; ``""`` when they do not say."""
    weight = _weight_of(recorded)
    return "" if weight is None else f" Its averages say smoothing {weight:.3g}."


def _weight_of(recorded: Recorded) -> Optional[float]:
    """The weight ``w`` of the run's averages, ``s = w * s_before + (1 - w) * value``; ``None`` when they do not say.

    Solved at the evaluation whose value lies farthest from the average before it, where rounding matters least.
    """
    best: Optional[tuple[float, float]] = None
    previous: Optional[float] = None
    for value, average in zip(recorded.values or [], recorded.smoothed or [], strict=False):
        if average is None or not (math.isfinite(value) and math.isfinite(average)):
            continue
        if previous is not None and value != previous:
            spread = abs(value - previous)
            if best is None or spread > best[0]:
                best = spread, (value - average) / (value - previous)
        previous = average
    if best is None or not 0.0 <= best[1] < 1.0 + 1e-9:
        return None
    return best[1]


def _patience_hint(recorded: Recorded) -> str:
    """The patience torch's rule cut at, from the count just before the run's first cut, as a hint.

    torch's count reaches ``patience + 1`` one at a time, so the evaluation before a cut counted ``patience``. A slope
    count jumps, and may cut from 0: the hint holds for torch's rule only, and says so.
    """
    counts = recorded.num_bad or []
    for index, cut in enumerate(recorded.cuts):
        if cut and index > 0 and counts[index - 1] is not None:
            return (
                f" Under torch's rule (detector best), its count before the cut of evaluation {index + 1} says patience"
                f" {counts[index - 1]}."
            )
    return ""


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
