"""The ``lightning-plateau`` command: ``explain`` says when the plateau rule cuts the LR for a history you have.

Example::

    lightning-plateau explain lightning_logs/version_0/metrics.csv --patience 10 --lr 1e-3
    lightning-plateau explain wandb/latest-run --monitor val_acc --mode max --only-cuts
    echo '[1.0, 0.9, 0.8, 0.7, 0.6, 0.65, 0.65, 0.65]' | lightning-plateau explain - --patience 2 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, Optional, TextIO, Union

from lightning_plateau import __version__
from lightning_plateau._agreement import (
    ASSUMED,
    GIVEN,
    STORED,
    check_counts,
    check_flags,
    check_means,
    check_trainer,
    check_withheld,
    departure,
    judged_windows,
    restores_as_recorded,
)
from lightning_plateau._detectors import make_detector
from lightning_plateau._format import cuts_in_evaluations, format_lr, format_lrs, format_steps, format_value, plural
from lightning_plateau._rule import warmup_lrs
from lightning_plateau._sources import History, optimizer_steps, read_history
from lightning_plateau.config import PlateauConfig
from lightning_plateau.replay import Replay, ReplayRow, replay

_PROG = "lightning-plateau"
# The trace of the moving averages a run with smoothing judged.
_SMOOTHED = "plateau/smoothed"
_DEFAULT_LR = 1e-3
_BOLD_RED = "\033[1;31m"
_RESET = "\033[0m"
_JSON_CHUNK = 10_000
# The fields of a ReplayRow and of a PlateauCut that can be NaN or infinite.
_NON_FINITE_FIELDS = ("value", "best", "smoothed")
# The options that take several values, to compare the policies they make.
_GRID_OPTIONS = ("factor", "patience", "threshold", "cooldown", "detector", "smoothing")
# The PlateauConfig fields that are options (`--threshold-mode` sets threshold_mode); `strict` means nothing here.
_CONFIG_OPTIONS = tuple(field.name for field in dataclasses.fields(PlateauConfig) if field.name != "strict")
# The settings of the slope detector, named only with it.
_SLOPE_OPTIONS = ("slope_window", "slope_confidence", "slope_robust")
# Settings named on the settings line only where given or stored with the run: off, they change nothing a replay shows.
_NAMED_WHEN_SET = ("restore_best_on_cut",)
# Settings of features that are off, left out of the `settings:` line whatever their source: (field, its "off" value).
_OFF = (("warmup_steps", 0), ("on_nonfinite", "bad"), ("smoothing", 0.0), ("detector", "best"))
# The settings of features that change what a replay shows, named as assumed where a run's values come without them.
_FEATURES = ("warmup_steps", "on_nonfinite", "restore_best_on_cut", "smoothing", "detector")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2), like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit code (0 done, 2 bad input).

    Args:
        argv: the arguments after the program name; ``None``: ``sys.argv[1:]``.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        # --help exits 0, a usage error 2: the code is the result, in process as from the shell.
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _explain(args, sys.stdout)
    except BrokenPipeError:
        # `... | head`: the reader left. Stop quietly; the flush at exit goes to /dev/null instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"{_PROG} explain: error: {message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=_PROG,
        description="Tools for lightning-plateau's reduce-LR-on-plateau.",
        epilog=f"example:\n  {_PROG} explain lightning_logs/version_0/metrics.csv --patience 2 --lr 0.01",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    explain = commands.add_parser(
        "explain",
        help="replay a metric history and say when the LR is cut, and why",
        description=(
            "Replay a history of the monitored metric through the same PlateauScheduler that training uses and"
            " show every evaluation: its value, the best so far, the bad count, the cooldown, the LR, and each"
            " cut with its reason. Epochs are Lightning's, counted from 0; evaluations are counted from 1."
        ),
        epilog=(
            "examples:\n"
            f"  {_PROG} explain lightning_logs/version_0/metrics.csv --patience 2 --factor 0.5 --lr 0.01\n"
            f"  {_PROG} explain wandb/latest-run --monitor val_acc --mode max --only-cuts\n"
            f"  echo '1.0 0.9 0.8 0.8 0.8 0.8' | {_PROG} explain - --patience 2 --plot plateau.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument(
        "source",
        metavar="SOURCE",
        help=(
            "a Lightning CSVLogger metrics.csv (or its version directory, or a logs directory: the latest"
            " version), a W&B run (.wandb file or offline run directory), a Lightning checkpoint (.ckpt), a JSON"
            " array, text with one value per line or all on one line (1.0 0.9 0.8, or 1.0,0.9,0.8), or - for"
            " stdin. A run's stored plateau settings and starting LR are used unless given below"
        ),
    )
    policy = explain.add_argument_group(
        "plateau policy (the PlateauConfig fields; defaults as in the library). Give several values to --patience,"
        " --factor, --threshold, --cooldown, --smoothing or --detector to compare the policies: one table, a row per"
        " combination"
    )
    defaults = {field.name: field.default for field in dataclasses.fields(PlateauConfig)}
    policy.add_argument(
        "--monitor",
        help=f"the metric: the column read from a CSV or W&B run (default: {defaults['monitor']}, or the only one)",
    )
    policy.add_argument(
        "--mode",
        choices=("min", "max"),
        help=f"min: lower is better; max: higher is better (default: {defaults['mode']})",
    )
    policy.add_argument(
        "--factor",
        type=_number,
        nargs="+",
        metavar="FACTOR",
        help=f"LR multiplier at each cut, a float in (0, 1) (default: {defaults['factor']})",
    )
    policy.add_argument(
        "--patience",
        type=_number,
        nargs="+",
        metavar="PATIENCE",
        help=f"bad evaluations tolerated, an int >= 0; the next one cuts (default: {defaults['patience']})",
    )
    policy.add_argument(
        "--threshold",
        type=_number,
        nargs="+",
        metavar="THRESHOLD",
        help=f"improvement needed, a float >= 0 (default: {defaults['threshold']})",
    )
    policy.add_argument(
        "--threshold-mode",
        choices=("rel", "abs"),
        help=f"rel: a fraction of |best|; abs: an amount (default: {defaults['threshold_mode']})",
    )
    policy.add_argument(
        "--cooldown",
        type=_number,
        nargs="+",
        metavar="COOLDOWN",
        help=f"evaluations not counted after a cut, an int >= 0 (default: {defaults['cooldown']})",
    )
    policy.add_argument(
        "--min-lr",
        type=_number,
        nargs="+",
        metavar="MIN_LR",
        help="LR floor, a float >= 0: one for all groups or one per group (default: 0)",
    )
    policy.add_argument("--eps", type=_number, help=f"smallest cut applied, a float >= 0 (default: {defaults['eps']})")
    policy.add_argument(
        "--warmup-steps",
        type=_number,
        metavar="STEPS",
        help="optimizer steps of a linear LR warmup before the plateau, an int >= 0; evaluations at a global step"
        " below it are not judged. Needs each value's global step: a checkpoint, or a log with the"
        f" plateau/global_step trace (default: {defaults['warmup_steps']}, no warmup)",
    )
    policy.add_argument(
        "--warmup-start-factor",
        type=_number,
        metavar="FACTOR",
        help="LR multiplier at the warmup's first step, a float in (0, 1]"
        f" (default: {defaults['warmup_start_factor']})",
    )
    policy.add_argument(
        "--on-nonfinite",
        choices=("bad", "skip", "raise"),
        help="a NaN or infinite value: bad counts it as without improvement (torch), skip leaves it out, raise"
        f" stops with an error (default: {defaults['on_nonfinite']})",
    )
    policy.add_argument(
        "--window-steps",
        type=_number,
        metavar="N",
        help=(
            "judge a per-step training metric on the mean of each window of N optimizer steps, as training with"
            " PlateauConfig(window_steps=N) does: SOURCE must hold every step's value (log_every_n_steps=1); the"
            " run's judged values (plateau/value, a checkpoint) are replayed as they are. 0: one value per"
            f" evaluation (default: {defaults['window_steps']}, or the run's)"
        ),
    )
    policy.add_argument(
        "--restore-best-on-cut",
        action="store_true",
        default=None,
        help=(
            "the run restored the best evaluation's weights at each cut (PlateauConfig(restore_best_on_cut=True)):"
            " the cuts and LRs are the same; each cut names the evaluation the run went on from, and the values"
            " after it depend on that (default: read from the run, else off)"
        ),
    )
    policy.add_argument(
        "--smoothing",
        type=_number,
        nargs="+",
        metavar="WEIGHT",
        help="judge an exponential moving average of the values, s = w * s + (1 - w) * value, w a float in [0, 1);"
        f" 0: the values as they are (default: {defaults['smoothing']:g})",
    )
    policy.add_argument(
        "--detector",
        choices=("best", "slope"),
        nargs="+",
        help="best: a value better than the best so far by the threshold (torch's rule); slope: dlib's count of"
        " evaluations over which a least-squares line shows no confident decrease (default:"
        f" {defaults['detector']})",
    )
    policy.add_argument(
        "--slope-window",
        type=_number,
        metavar="N",
        help="with --detector slope: the latest evaluations the count looks at, an int > patience and >= 3; 0:"
        f" patience + 1 (default: {defaults['slope_window']})",
    )
    policy.add_argument(
        "--slope-confidence",
        type=_number,
        metavar="P",
        help="with --detector slope: the probability of a decrease below which a stretch counts as without one,"
        f" a float in (0.5, 1) (default: {defaults['slope_confidence']:g})",
    )
    policy.add_argument(
        "--slope-robust",
        action="store_true",
        default=None,
        help="with --detector slope: cut only when the count with the largest 10%% of the values left out also"
        " exceeds patience, as dlib's trainer does (default: read from the run, else off)",
    )
    policy.add_argument(
        "--max-reductions",
        type=_number,
        metavar="K",
        help=(
            "the run had PlateauEarlyStopping(max_reductions=K): the evaluation that calls for cut K+1 withholds it"
            " and the run stops there, an int >= 0 (default: read from a checkpoint that withheld a cut, else none;"
            " a log does not record it)"
        ),
    )
    policy.add_argument(
        "--lr",
        type=_number,
        nargs="+",
        metavar="LR",
        help=f"starting LR, a float > 0, or one per param group (default: {format_lr(_DEFAULT_LR)})",
    )
    output = explain.add_argument_group("output")
    output.add_argument("--only-cuts", action="store_true", help="show only the evaluations that cut the LR")
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--plot", metavar="PATH", help="also draw the plateau chart to this PNG file (needs matplotlib)"
    )
    return parser


def _number(text: str) -> Union[int, float, str]:
    # Unparsable text goes through as is, for PlateauConfig to reject with the library's own message.
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    _config(args, {})  # the options given are checked before anything is read
    if args.max_reductions is not None and (not isinstance(args.max_reductions, int) or args.max_reductions < 0):
        raise ValueError(f"`max_reductions` must be an int >= 0, got {args.max_reductions!r}")
    history = read_history(args.source, args.monitor, sys.stdin)
    for warning in history.warnings:
        print(f"{_PROG} explain: warning: {warning}", file=sys.stderr)
    for name, told in history.notes.items():
        if getattr(args, name) is None:
            print(f"{_PROG} explain: {told}", file=sys.stderr)
    config = _run_config(args, history)
    history, config = _judged_averages(args, history, config)
    history, swapped = _judged_series(args, history, config)
    if history.monitor is not None:
        monitor = history.monitor
        stored_monitor = history.policy.get("monitor")
        if monitor == "plateau/value" and isinstance(stored_monitor, str):
            monitor = stored_monitor  # the values the run judged, named as the run named them in its reasons
        config = dataclasses.replace(config, monitor=monitor)
    lr: Any
    if args.lr is not None:
        lr, lr_from = (args.lr[0] if len(args.lr) == 1 else args.lr), "given"
    elif history.lrs is not None:
        lr, lr_from = list(history.lrs), f"from {history.lrs_from}"
    else:
        lr, lr_from = _DEFAULT_LR, "assumed: give --lr"
    if not history.values:
        what = f": column {history.monitor!r}" if history.monitor else ""
        raise ValueError(f"{history.name}{what} holds no values to replay")
    # Each value once, in the order given: `--patience 1 1` is one policy.
    grid = {name: list(dict.fromkeys(getattr(args, name) or [])) for name in _GRID_OPTIONS}
    grid = {name: values for name, values in grid.items() if len(values) > 1}
    _check_policies(args, history, grid)
    if not (config.window_steps and not history.judged):
        # A per-step series is windowed on its own optimizer steps; other values need the trainer's, for a warmup.
        history = _with_trainer_steps(history, config)
    windowing = _windowing(history, config, quiet=swapped)
    limit = _max_reductions(args, history)
    if grid:
        return _compare(args, history, config, lr, lr_from, grid, out, windowing, limit)
    replayed, global_steps, windows = windowing
    result = replay(
        history.values,
        replayed,
        lr=lr,
        epochs=history.epochs,
        global_steps=global_steps,
        windows=windows,
        max_reductions=limit[0],
        warmup_start_step=history.warmup_start_step,
    )
    _check_windows(history, result)
    if replayed.window_steps and windows is None:
        # A per-step column windowed here: its means must be what the run judged, or what is assumed is said.
        note = check_trainer(history, history.monitor or "the metric")
        if not check_means(history, result) and note is not None:
            print(f"{_PROG} explain: {note}", file=sys.stderr)
    origins = _origins(args, history)
    warnings = check_flags(history, result, origins)
    warnings += check_counts(history, result, origins)
    result, restores = restores_as_recorded(history, result, origins["restore_best_on_cut"])
    warnings += restores + check_withheld(history, result, limit[1])
    departed = departure(history, result, origins)
    if departed:
        warnings.append(departed)
    settings = _settings(args, history, config, f"lr {format_lrs(result.initial_lrs)} ({lr_from})", limit)
    for warning in warnings:
        print(f"{_PROG} explain: warning: {warning}", file=sys.stderr)
    rows: Iterable[ReplayRow] = result
    if args.only_cuts:
        rows = result.cut_rows() + ([result[-1]] if result.withheld is not None else [])
    note = _restore_note(result.config, compared=False)
    if args.json:
        out.writelines(_json(result, rows, history, settings, " ".join(warnings) or None, note))
    else:
        colour = out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        out.writelines(_table(result, rows, history, settings, colour=colour, note=note))
    if args.plot:
        from lightning_plateau.chart import plot_plateau

        first = result.initial_lrs
        if result.warmup_evaluations:
            first = warmup_lrs(first, 0, config.warmup_steps, config.warmup_start_factor)
        stop = None if result.withheld is None else (result.withheld.evaluation, "max_reductions")
        path = plot_plateau(result.evaluations(), result.config, args.plot, initial_lrs=first, stop=stop)
        print(f"{_PROG} explain: chart written to {path}", file=sys.stderr)
    return 0


def _judged_averages(
    args: argparse.Namespace, history: History, config: PlateauConfig
) -> tuple[History, PlateauConfig]:
    """``plateau/smoothed`` replayed as the run judged it: its moving averages, not averaged again.

    Each evaluation the run judged has its average there; one it did not judge (in the warmup, or skipped) has none,
    and takes its ``plateau/value``, as the run recorded it. The replay then judges the averages with smoothing 0,
    as ``plateau/value`` of a windows run is not windowed again.

    Raises:
        ValueError: where ``--smoothing`` above 0 is given: it averages the raw values, which plateau/smoothed is not.
    """
    if history.monitor != _SMOOTHED:
        return history, config
    if any(weight for weight in args.smoothing or []):
        raise ValueError(
            f"{history.name}: {_SMOOTHED} holds the moving averages the run judged; --smoothing averages the values"
            " the run was given. For a what-if on the smoothing, leave --monitor out (or give --monitor plateau/value),"
            " or leave --smoothing out to replay the averages as the run judged them."
        )
    print(
        f"{_PROG} explain: {_SMOOTHED} from {history.name} holds the moving averages the run judged: replayed as they"
        " are, not smoothed again",
        file=sys.stderr,
    )
    config = dataclasses.replace(config, smoothing=0.0)
    recorded = history.recorded
    if recorded is None or recorded.values is None or recorded.smoothed is None:
        return history, config
    judged = [
        value if average is None else average for value, average in zip(recorded.values, recorded.smoothed, strict=True)
    ]
    epochs = recorded.epochs if any(epoch is not None for epoch in recorded.epochs) else None
    # The record as this replay sees it: the averages are its values now, and none of them is averaged again.
    as_judged = dataclasses.replace(recorded, values=judged, smoothed=[None] * len(judged))
    steps = recorded.steps if any(step is not None for step in recorded.steps) else history.global_steps
    history = dataclasses.replace(
        history, values=judged, epochs=epochs, global_steps=steps, recorded=as_judged, judged=True
    )
    return history, config


def _judged_series(args: argparse.Namespace, history: History, config: PlateauConfig) -> tuple[History, bool]:
    """The run's judged window means (its ``plateau/value`` trace) in place of a per-step column it was not given.

    A per-step column is what the logger kept: one micro-batch's value per optimizer step under gradient
    accumulation, rank zero's alone under DDP, where the run judged the mean of every value logged. Its windows
    rebuilt here would judge other means, and cut elsewhere. ``--monitor COLUMN`` asks for them all the same.
    Returns the history to replay and whether it is the traced one.
    """
    recorded = history.recorded
    # Another window_steps than the run's is a what-if on the per-step values: the run's means are no answer to it.
    own_windows = args.window_steps is None or args.window_steps == history.policy.get("window_steps")
    if (
        not config.window_steps
        or history.judged
        or args.monitor is not None
        or not own_windows
        or recorded is None
        or recorded.values is None
        or not recorded.values
    ):
        return history, False
    print(
        f"{_PROG} explain: replaying plateau/value, the window means the run judged ({recorded.where}), not"
        f" {history.monitor}'s per-step values: their windows give the run's means only where the logger kept every"
        " value the run judged (not under gradient accumulation, which logs one micro-batch per step, nor under"
        f" DDP, which logs rank zero's alone). --monitor {history.monitor} rebuilds the windows from them instead.",
        file=sys.stderr,
    )
    epochs = recorded.epochs if any(epoch is not None for epoch in recorded.epochs) else None
    traced = dataclasses.replace(
        history, values=list(recorded.values), epochs=epochs, global_steps=list(recorded.steps), judged=True
    )
    return traced, True


def _windowing(
    history: History, config: PlateauConfig, *, quiet: bool = False
) -> tuple[PlateauConfig, Optional[list[Any]], Optional[list[tuple[int, int]]]]:
    """The policy, step labels and windows to replay ``history`` with: windowed when it is a per-step series.

    The values a run judged (a checkpoint's history, the ``plateau/value`` trace) are window means already: they
    are replayed one per evaluation, labelled with their windows where the source tells them. A per-step series
    is windowed on the optimizer step of each value.
    """
    if not config.window_steps:
        return config, history.global_steps, None
    if history.judged:
        if not quiet:
            print(
                f"{_PROG} explain: {history.monitor or 'the values'} from {history.name} are the values the run"
                " judged (window means): replayed one per evaluation, not windowed again",
                file=sys.stderr,
            )
        windows = judged_windows(history, config)
        if windows is not None:
            return config, None if not config.warmup_steps else history.global_steps, windows
        return dataclasses.replace(config, window_steps=0), history.global_steps, None
    check_trainer(history, history.monitor or "the metric")  # refused before anything is replayed
    return config, optimizer_steps(history), None


def _max_reductions(args: argparse.Namespace, history: History) -> tuple[Optional[int], Optional[str]]:
    """The cut limit of PlateauEarlyStopping(max_reductions=K) to replay, and where it comes from."""
    if args.max_reductions is not None:
        return args.max_reductions, "given"
    recorded = history.recorded
    if recorded is None or recorded.withheld is None:
        return None, None
    # The cut limit is reached when the cuts applied reach it: the withheld cut is the first one beyond.
    limit = sum(recorded.cuts[: recorded.withheld - 1])
    return limit, f"from {recorded.where}, where the cut of evaluation {recorded.withheld} was withheld"


def _origins(args: argparse.Namespace, history: History) -> dict[str, str]:
    """How each setting of the replay was chosen: given, stored with the run, or assumed."""
    return {
        name: GIVEN if getattr(args, name) is not None else STORED if name in history.policy else ASSUMED
        for name in _CONFIG_OPTIONS
    }


def _check_windows(history: History, result: Replay) -> None:
    if not len(result):
        raise ValueError(
            f"{history.name}: {plural(len(history.values), 'per-step value')} of {history.monitor or 'the metric'}"
            f" hold no complete window of {result.config.window_steps} optimizer steps: nothing was judged"
        )


def _with_trainer_steps(history: History, config: PlateauConfig) -> History:
    """``history`` labelled with the trainer's global steps where a warmup needs them; refused where unknown.

    A logger's step labels are Lightning's logging steps, one behind the trainer's global step after a batch that
    stepped the optimizer: the warmup's end would be guessed from them. The plateau's own traces and checkpoints
    hold the trainer's step.
    """
    if not config.warmup_steps:
        return history
    steps = history.trainer_steps
    if steps is None or len(steps) != len(history.values) or any(step is None for step in steps):
        logged = " (its step labels are Lightning's logging steps, which lag it by one)" if history.global_steps else ""
        raise ValueError(
            f"--warmup-steps {config.warmup_steps} needs the trainer's global step of every evaluation, and"
            f" {history.name} does not hold it{logged}. Explain the run's checkpoint (.ckpt), or a log with the"
            " plateau/global_step trace that PlateauCallback writes; without them the warmup's end would be a guess."
        )
    return dataclasses.replace(history, global_steps=steps)


def _compare(
    args: argparse.Namespace,
    history: History,
    config: PlateauConfig,
    lr: Any,
    lr_from: str,
    grid: dict[str, list[Any]],
    out: TextIO,
    windowing: tuple[PlateauConfig, Optional[list[Any]], Optional[list[tuple[int, int]]]],
    limit: tuple[Optional[int], Optional[str]],
) -> int:
    """What if? One row per combination of the several values given: cuts, first cut, final LR, LR spans, stop.

    ``windowing`` is the policy, step labels and windows of :func:`_windowing`; ``limit`` the cut limit of
    :func:`_max_reductions`.
    """
    from lightning_plateau.compare import compare

    if args.only_cuts:
        raise ValueError("--only-cuts shows one policy's cuts; with several values per option the table compares them")
    replayed, global_steps, windows = windowing
    outcomes = compare(
        history.values,
        replayed,
        lr=lr,
        epochs=history.epochs,
        global_steps=global_steps,
        windows=windows,
        max_reductions=limit[0],
        warmup_start_step=history.warmup_start_step,
        **grid,
    )
    _check_windows(history, outcomes[0].replay)
    # The policies differ in settings no warmup or skip depends on: the first one's stand for all.
    origins = _origins(args, history)
    for warning in check_flags(history, outcomes[0].replay, origins):
        print(f"{_PROG} explain: warning: {warning}", file=sys.stderr)
    # The factor decides no count: a table that varies it alone is checked as one replay is.
    counted = any(name != "factor" for name in grid)
    for warning in check_counts(history, outcomes[0].replay, origins, proofs_only=counted):
        print(f"{_PROG} explain: warning: {warning}", file=sys.stderr)
    settings = _settings(args, history, config, f"lr {format_lrs(outcomes[0].replay.initial_lrs)} ({lr_from})", limit)
    note = _restore_note(config, compared=True)
    varied = " x ".join(grid)
    if args.json:
        policies = [
            {
                "varied": outcome.varied,
                "config": dataclasses.asdict(outcome.config),
                "cuts": [_finite_floats(cut.as_dict()) for cut in outcome.cuts],
                "final_lrs": list(outcome.final_lrs),
                "evaluations_per_lr": [[list(lrs), count] for lrs, count in outcome.evaluations_per_lr],
                "early_stop": outcome.early_stop,
                "early_stop_reason": outcome.early_stop_reason,
            }
            for outcome in outcomes
        ]
        report = {"source": history.name, "settings": settings, "varied": list(grid), "policies": policies}
        if note is not None:
            report["note"] = note
        out.write(json.dumps(report, allow_nan=False) + "\n")
    else:
        judged = len(outcomes[0].replay)
        out.write(f"{history.name}: {plural(judged, 'evaluation')} of {config.monitor} ({config.mode}),")
        out.write(f" {len(outcomes)} {'policy' if len(outcomes) == 1 else 'policies'} ({varied})\n{settings}\n")
        out.write(f"note: {note}\n\n" if note is not None else "\n")
        out.writelines(_comparison_table(outcomes))
    if args.plot:
        from lightning_plateau.chart import plot_comparison

        path = plot_comparison([row.value for row in outcomes[0].replay], outcomes, args.plot)
        print(f"{_PROG} explain: chart written to {path}", file=sys.stderr)
    return 0


def _comparison_table(outcomes: Sequence[Any]) -> Iterator[str]:
    names = [", ".join(f"{key} {_text(value)}" for key, value in outcome.varied.items()) for outcome in outcomes]
    width = max(len("policy"), *(len(name) for name in names))
    yield f"{'policy':<{width}}  cuts  first cut  final lr  early stop  evaluations at each lr\n"
    for name, outcome in zip(names, outcomes, strict=True):
        first = outcome.first_cut
        first_text = "-" if first is None else _where(first.evaluation, first.epoch)
        stop = (
            "-"
            if outcome.early_stop is None
            else _where(outcome.early_stop, outcome.replay[outcome.early_stop - 1].epoch)
        )
        spans = ", ".join(f"{format_lrs(lrs)} x{count}" for lrs, count in outcome.evaluations_per_lr)
        yield (
            f"{name:<{width}}  {len(outcome.cuts):>4}  {first_text:>9}  {format_lrs(outcome.final_lrs):>8}"
            f"  {stop:>10}  {spans}\n"
        )
    yield (
        "\nfirst cut, early stop: the evaluation (and epoch); early stop: where PlateauEarlyStopping() would end"
        " the run\n"
    )


def _text(value: Any) -> str:
    """A setting's value in a table or the settings line: a number as ``%g``, a name as it is."""
    return value if isinstance(value, str) else f"{value:g}"


def _where(evaluation: int, epoch: Optional[int]) -> str:
    return f"{evaluation}" if epoch is None else f"{evaluation} (ep {epoch})"


def _config(args: argparse.Namespace, stored: Mapping[str, Any]) -> PlateauConfig:
    """The policy to replay: the options given, else what the run stored (``stored``), else the defaults."""
    fields: dict[str, Any] = {name: value for name, value in stored.items() if name in _CONFIG_OPTIONS}
    for name in _CONFIG_OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        if name == "detector":
            # The slope detector when it is among several: the policy then holds the slope settings, which
            # compare() applies to the slope rows only.
            value = ["slope"] if "slope" in value else value
        if name in _GRID_OPTIONS:
            value = value[0]  # the first of several values: each is checked; compare() tries them all
        fields[name] = value[0] if name == "min_lr" and len(value) == 1 else value
    if fields.get("detector", "best") == "best":
        # A run that used the slope detector stored its settings; `--detector best` replays it without them.
        for name in _SLOPE_OPTIONS:
            if getattr(args, name) is None:
                fields.pop(name, None)
    return PlateauConfig(**fields)


def _run_config(args: argparse.Namespace, history: History, policy: Optional[str] = None) -> PlateauConfig:
    """The policy to replay on the run (:func:`_config`), or an error that says which of its settings came from the run.

    A stored setting may not fit an option given for a what-if (the run's slope_window 6 with ``--patience 8``): the
    config's own message would blame a value the user never gave. ``policy`` names the policy of a what-if table.
    """
    try:
        return _config(args, history.policy)
    except ValueError as error:
        culprits = [name for name in history.policy if _fits_without(args, history.policy, name)]
        if len(culprits) > 1 and "detector" in culprits:
            culprits.remove("detector")  # another rule altogether: a what-if of its own, not the way out
        where = f"the policy {policy}" if policy is not None else "the options given"
        if not culprits:
            raise ValueError(f"{where}: {error}" if policy is not None else str(error)) from None
        stored = ", ".join(f"{name} {_stored_text(history.policy[name])}" for name in culprits)
        ways = " or ".join(f"--{name.replace('_', '-')} {_default_text(name)}" for name in culprits)
        every = " (for every policy compared)" if policy is not None else ""
        raise ValueError(
            f"{history.name}: {where} cannot be replayed with the run's {stored} (from {history.policy_from}):"
            f" {str(error).rstrip('.')}."
            f" Give {ways} in its place{every}, or another value that fits."
        ) from None


def _fits_without(args: argparse.Namespace, stored: Mapping[str, Any], name: str) -> bool:
    """Whether the policy is valid once the stored setting ``name`` (not given as an option) is left out."""
    if name not in _CONFIG_OPTIONS or getattr(args, name) is not None or isinstance(stored[name], bool):
        return False  # given, or a switch no option turns off
    try:
        _config(args, {key: value for key, value in stored.items() if key != name})
    except ValueError:
        return False
    return True


def _stored_text(value: Any) -> str:
    return _text(value) if isinstance(value, (str, int, float)) else str(value)


def _default_text(name: str) -> str:
    """The option's default, as given on the command line, with what it means where that is not plain."""
    default = next(field.default for field in dataclasses.fields(PlateauConfig) if field.name == name)
    if name == "slope_window":
        return "0 (patience + 1)"
    return f"{_text(default)} (the default)"


def _check_policies(args: argparse.Namespace, history: History, grid: Mapping[str, Sequence[Any]]) -> None:
    """Refuse a what-if table one of whose policies the settings cannot make, naming the policy and the culprit.

    Each policy is made as :func:`~lightning_plateau.compare.compare` makes it: a row of the best detector in a grid
    of detectors takes no slope setting.
    """
    for combination in itertools.product(*grid.values()):
        varied = dict(zip(grid, combination, strict=True))
        options: dict[str, Optional[list[Any]]] = {name: [value] for name, value in varied.items()}
        if varied.get("detector") == "best":
            options |= {name: None for name in _SLOPE_OPTIONS}
        one = argparse.Namespace(**{**vars(args), **options})
        _run_config(one, history, ", ".join(f"{name} {_text(value)}" for name, value in varied.items()))


def _settings(
    args: argparse.Namespace,
    history: History,
    config: PlateauConfig,
    lr_text: str,
    limit: tuple[Optional[int], Optional[str]] = (None, None),
) -> str:
    """Where each setting of the replay came from: given, stored with the run, or PlateauConfig's default.

    The settings of features that are off are left out, except where the run's values come from a run that did
    not store them: a warmup, a non-finite policy or restores the run may have had are named as assumed.
    """
    origins = _origins(args, history)
    compared = [name for name in _GRID_OPTIONS if len(getattr(args, name) or []) > 1]
    # A run that stored no setting of a feature may have had it all the same (a PlateauCallback given to the
    # Trainer stores nothing): the replay assumes it off, and says so.
    assumed = [name for name in _FEATURES if history.monitor is not None and origins[name] == ASSUMED]
    if history.monitor == _SMOOTHED:
        # The averages are replayed as judged: the run's smoothing made them, and none is applied again.
        assumed = [name for name in assumed if name != "smoothing"]
    names = [
        name
        for name in _CONFIG_OPTIONS
        if name != "monitor" and (_shown(config, name) or name in compared) and name not in assumed
    ]
    given = [name for name in names if origins[name] == GIVEN]
    stored = [name for name in names if origins[name] == STORED]
    defaults = [name for name in names if origins[name] == ASSUMED and name not in _NAMED_WHEN_SET]
    parts = []
    if given:
        several = [name for name in given if name in _GRID_OPTIONS and len(getattr(args, name)) > 1]
        texts = [_fields(config, [name]) for name in given if name not in several]
        texts += [f"{name} " + "/".join(_text(value) for value in getattr(args, name)) for name in several]
        parts.append(f"{', '.join(texts)} (given)")
    if stored:
        parts.append(f"{_fields(config, stored)} (from {history.policy_from})")
    if defaults:
        where = "" if history.policy else f", none stored in {history.name}"
        parts.append(f"{_fields(config, defaults)} (PlateauConfig's defaults assumed{where})")
    if assumed:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in assumed)
        parts.append(f"{_fields(config, assumed)} (assumed: not stored with the run; give {options} if it had others)")
    if history.warmup_start_step and config.warmup_steps:
        # A reused Trainer's fresh fit starts past step 0, and its warmup with it.
        parts.append(f"warmup counted from global step {history.warmup_start_step}, where the run's fit started")
    if limit[0] is not None:
        parts.append(f"PlateauEarlyStopping(max_reductions={limit[0]}) ({limit[1]})")
    return "settings: " + "; ".join([*parts, lr_text])


def _shown(config: PlateauConfig, name: str) -> bool:
    """Whether the ``settings:`` line names ``name``: not the settings of a feature that is off."""
    if name == "warmup_start_factor":
        return config.warmup_steps > 0
    if name in _SLOPE_OPTIONS:
        return config.detector == "slope"
    return all(getattr(config, field) != off for field, off in _OFF if field == name)


def _fields(config: PlateauConfig, names: Sequence[str]) -> str:
    texts = []
    for name in names:
        value = getattr(config, name)
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "on" if value else "off"
        elif name == "min_lr":
            text = format_lrs(value if isinstance(value, list) else [value])
        elif name == "slope_window" and not value:
            text = f"0 (patience + 1: {config.effective_slope_window})"
        else:
            text = f"{value:g}"
        texts.append(f"{name} {text}")
    return ", ".join(texts)


def _restore_note(config: PlateauConfig, *, compared: bool) -> Optional[str]:
    """What a replay cannot redo when the run restored the best weights at its cuts; ``None`` without the setting."""
    if not config.restore_best_on_cut:
        return None
    note = (
        "restore_best_on_cut: after each cut the run went on from the weights of the best evaluation before it"
        " (named in the cut's reason), not from the weights it had. The values after a cut were measured from those"
        " weights: they are this run's, and depend on where it restored."
    )
    if compared:
        note += (
            " A policy that cuts elsewhere would have restored elsewhere and logged other values, so only the row of"
            " the run's own settings replays what happened."
        )
    return note


def _table(
    result: Replay,
    rows: Iterable[ReplayRow],
    history: History,
    settings: str,
    *,
    colour: bool,
    note: Optional[str] = None,
) -> Iterator[str]:
    config = result.config
    yield (
        f"{history.name}: {plural(len(result), 'evaluation')} of {config.describe()}, threshold {config.threshold:g}"
        f" {config.threshold_mode}, lr {format_lrs(result.initial_lrs)}\n"
        f"{settings}\n" + (f"note: {note}\n" if note is not None else "") + "\n"
    )
    windows = config.window_steps > 0
    # A window's steps say where it lies; its last value's epoch and step would only repeat them.
    with_epoch = history.epochs is not None and not windows
    with_step = history.global_steps is not None and not windows
    last_window = result[-1].window if windows else None
    span_width = 2 * len(str(last_window[1])) + 1 if last_window is not None else 0
    width = max(len(config.monitor), 10)
    header = "     eval" + ("  epoch" if with_epoch else "") + ("      step" if with_step else "")
    header += f"  {'steps':>{span_width}}" if windows else ""
    smoothing = config.smoothing > 0
    header += f"  {config.monitor:>{width}}" + (f"  {'smoothed':>{width}}" if smoothing else "")
    yield f"{header}  {'best':>{width}}   bad  cooldown  lr\n"
    # The LR and the best change rarely: their text is made once per change, which keeps a million rows quick.
    lr_texts: dict[tuple[float, ...], str] = {}
    last_best, best_text = math.nan, ""
    for row in rows:
        evaluation, epoch, step, value, best, num_bad, cooldown, lrs, cut, reason, window, warmup, skip = row[:13]
        held = row.withheld
        lr_text = lr_texts.get(lrs)
        if lr_text is None:
            lr_text = lr_texts[lrs] = format_lrs(lrs)
        if best != last_best:
            last_best, best_text = best, format_value(best)
        labels = ""
        if with_epoch:
            labels += f"  {'-' if epoch is None else epoch:>5}"
        if with_step:
            labels += f"  {'-' if step is None else step:>8}"
        if windows:
            labels += f"  {'-' if window is None else f'{window[0]}-{window[1]}':>{span_width}}"
        if smoothing:
            judged = "-" if row.smoothed is None else format_value(row.smoothed)
            labels += f"  {format_value(value):>{width}}  {judged:>{width}}"
        else:
            labels += f"  {format_value(value):>{width}}"
        line = (
            f"{'CUT' if cut else '   '}{evaluation:>6}{labels}  {best_text:>{width}}  {num_bad:>4}  {cooldown:>8}"
            f"  {lr_text}"
        )
        if warmup or skip or held:
            notes = (["warmup: not judged"] if warmup else []) + (["skipped: not finite"] if skip else [])
            notes += ["cut withheld: the run stopped"] if held else []
            line += f"  ({', '.join(notes)})"
        if reason is None:
            yield line + "\n"
        elif colour:
            yield f"{_BOLD_RED}{line}{_RESET}\n{_BOLD_RED}     -> {reason}{_RESET}\n"
        else:
            yield f"{line}\n     -> {reason}\n"
    yield "\n" + _summary(result) + "\n"


def _summary(result: Replay) -> str:
    config = result.config
    if not result.cuts and len(result) and result.warmup_evaluations == len(result):
        # The history ends inside the warmup: the LR it names is the one the warmup was rising to, never reached.
        last = result[-1]
        start = warmup_lrs(result.initial_lrs, 0, config.warmup_steps, config.warmup_start_factor)
        end = result.warmup_start_step + config.warmup_steps
        return (
            f"No evaluation judged: {'the' if len(result) == 1 else 'all'} {plural(len(result), 'evaluation')} fall"
            f" in the warmup (global step < {end}). The lr rose from {format_lrs(start)} to"
            f" {format_lrs(last.lrs)} by the last (global step {last.global_step}); the warmup ends at"
            f" {format_lrs(result.initial_lrs)} at step {end}, after this history."
        )
    if result.cuts:
        if all(cut.window is not None for cut in result.cuts):
            where = ", ".join(format_steps(cut.window) for cut in result.cuts if cut.window is not None)
        else:
            if all(cut.epoch is not None for cut in result.cuts):
                noun, labels = "epoch", [cut.epoch for cut in result.cuts if cut.epoch is not None]
            else:
                noun, labels = "evaluation", [cut.evaluation for cut in result.cuts]
            where = f"{noun}{'s' if len(labels) > 1 else ''} {', '.join(map(str, labels))}"
        text = f"{cuts_in_evaluations(len(result.cuts), len(result))}, at {where}: lr {format_lrs(result.initial_lrs)}"
        text += f" -> {format_lrs(result.final_lrs)}."
        restored = [str(cut.restored_from) for cut in result.cuts if cut.restored_from is not None]
        if len(restored) == 1:
            text += f" After the cut the run went on from the weights of evaluation {restored[0]}."
        elif restored:
            text += f" After the cuts the run went on from the weights of evaluations {', '.join(restored)}, in turn."
    else:
        text = f"No cut in {plural(len(result), 'evaluation')}: the lr stays {format_lrs(result.initial_lrs)}."
    if result.warmup_evaluations:
        text += (
            f" {plural(result.warmup_evaluations, 'evaluation')} in the warmup (global step <"
            f" {result.warmup_start_step + config.warmup_steps}) not judged."
        )
    if result.skipped_evaluations:
        text += f" {plural(len(result.skipped_evaluations), 'evaluation')} skipped (not finite)."
    last = result[-1]
    withheld = result.withheld
    if withheld is not None:
        where = f" (epoch {withheld.epoch})" if withheld.epoch is not None and withheld.window is None else ""
        where = f" ({format_steps(withheld.window)})" if withheld.window is not None else where
        text += (
            f" At evaluation {withheld.evaluation}{where} cut {len(result.cuts) + 1} was withheld, as"
            f" PlateauEarlyStopping(max_reductions={result.max_reductions}) allows {plural(len(result.cuts), 'cut')},"
            f" and the run stopped there at lr {format_lrs(withheld.lrs_before)}."
        )
    elif last.cooldown:
        text += f" It ends in cooldown ({plural(last.cooldown, 'evaluation')} left)."
    elif not last.cut:
        text += f" It ends with {plural(last.num_bad, 'evaluation')} {make_detector(config).lacking(config.mode)}"
        if _exhausted(config, result.final_lrs):
            # A cut would change no LR any more: how many evaluations it needs says nothing about the LR.
            text += f"; the lr {format_lrs(result.final_lrs)} is at its floor (min_lr, eps): no cut can lower it."
        else:
            text += f"; a cut needs {config.cut_period - config.cooldown} (patience {config.patience})."
    return text


def _exhausted(config: PlateauConfig, lrs: Sequence[float]) -> bool:
    """Whether a cut would change no LR: torch's own test for applying one, ``lr - max(lr * factor, min_lr) <= eps``."""
    floors = config.min_lr if isinstance(config.min_lr, list) else [config.min_lr] * len(lrs)
    return all(lr - max(lr * config.factor, floor) <= config.eps for lr, floor in zip(lrs, floors, strict=False))


def _json(
    result: Replay,
    rows: Iterable[ReplayRow],
    history: History,
    settings: str,
    warning: Optional[str] = None,
    note: Optional[str] = None,
) -> Iterator[str]:
    """One JSON object, written in pieces: a long history is encoded a chunk of rows at a time, never held whole."""
    head: dict[str, Any] = {
        "source": history.name,
        "config": dataclasses.asdict(result.config),
        "settings": settings,
        "warning": warning,
        "num_evaluations": len(result),
        "initial_lrs": list(result.initial_lrs),
        "final_lrs": list(result.final_lrs),
        "cuts": [
            {**_finite_floats(cut.as_dict()), "reason": reason}
            for cut, reason in zip(result.cuts, result.reasons(), strict=True)
        ],
    }
    if result.warmup_start_step and result.config.warmup_steps:
        head["warmup_start_step"] = result.warmup_start_step
    if result.withheld is not None:
        head["withheld"] = {**_finite_floats(result.withheld.as_dict()), "reason": result.withheld_reason()}
        head["max_reductions"] = result.max_reductions
    if note is not None:
        head["note"] = note
    yield json.dumps(head, allow_nan=False)[:-1] + ', "evaluations": ['
    rows = iter(rows)
    separator = ""
    while chunk := list(itertools.islice(_rows_json(rows), _JSON_CHUNK)):
        yield separator + ", ".join(chunk)
        separator = ", "
    yield "]}\n"


# `"evaluation": `, `"epoch": `, ...: each row is written field by field, in the order of ReplayRow's fields.
_ROW_KEYS = tuple(json.dumps(name) + ": " for name in ReplayRow._fields)


def _rows_json(rows: Iterable[ReplayRow]) -> Iterator[str]:
    """Each row as the JSON object ``json.dumps`` writes for its fields, with null for NaN and infinities.

    Written by hand: a dict per row for json.dumps made most of ``explain --json``'s time on a long history, half of
    it in garbage collections of those dicts. A field holding the same object as in the row before (the LRs between
    cuts, the best between improvements: immutable values) reuses its text.
    """
    last: list[Any] = [object()] * len(_ROW_KEYS)
    texts = [""] * len(_ROW_KEYS)
    for row in rows:
        for index, value in enumerate(row):
            if value is not last[index]:
                last[index] = value
                texts[index] = _ROW_KEYS[index] + _json_value(value)
        yield "{" + ", ".join(texts) + "}"


def _json_value(value: Any) -> str:
    kind = type(value)
    if kind is float:
        # json.dumps writes a float as float.__repr__ does; JSON has no NaN or infinity (a NaN value, or a best
        # before any finite one): null
        return repr(value) if math.isfinite(value) else "null"
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return repr(value)
    if kind is tuple or kind is list:
        return "[" + ", ".join([_json_value(item) for item in value]) + "]"
    return json.dumps(value, allow_nan=False)


def _finite_floats(data: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN or infinity: a NaN value, or a best before any finite one, becomes null.
    for key in _NON_FINITE_FIELDS:
        if data.get(key) is not None and not math.isfinite(data[key]):
            data[key] = None
    return data


if __name__ == "__main__":
    sys.exit(main())
