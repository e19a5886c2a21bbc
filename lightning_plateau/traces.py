"""Plateau traces: every decision logged to the Trainer's loggers at the evaluation that made it, plus W&B extras.

At each evaluation the scheduler judges, :class:`~lightning_plateau.PlateauCallback` logs ``plateau/value`` (with
``smoothing`` also ``plateau/smoothed``, the moving average judged), ``plateau/best``, ``plateau/num_bad``,
``plateau/cooldown``, ``plateau/reductions``, ``plateau/evaluation``, ``plateau/global_step`` (the trainer's,
which a warmup counts) and the LR after the decision (``plateau/lr``, or
``plateau/lr/pg0``, ``plateau/lr/pg1``, ... for several param groups) to every logger, on Lightning's own step axis;
``plateau/warmup`` (1 during the warmup, else 0) with a warmup, ``plateau/skipped`` (1 for a non-finite value left
out of the rule, else 0) with ``on_nonfinite="skip"``; with ``restore_best_on_cut`` also ``plateau/restores``
(restores so far) and, at an evaluation that restored, ``plateau/restored_from``. With a ``WandbLogger`` the keys
are also plotted against ``plateau/evaluation``, and at the end of fit the run gets a summary, a table of cuts and
the chart. wandb and matplotlib are imported only when a ``WandbLogger`` is present or the chart is drawn.

The chart takes a tenth of a second or more to draw (matplotlib's layout and PNG encoding), more than everything
else the package does in a fit together. Without a ``WandbLogger`` it is drawn on a background thread, so
``trainer.fit`` returns at once; ``PlateauCallback.chart_path`` (and the interpreter's exit) waits for it. With one,
it is drawn before ``fit`` returns, since the W&B run it goes into may be finished right after.
"""

from __future__ import annotations

import math
import pathlib
import threading
from collections.abc import Sequence
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from lightning_plateau._format import (
    cuts_in_evaluations,
    format_bytes,
    format_cut,
    format_lrs,
    format_steps,
    format_value,
    plural,
)
from lightning_plateau._lightning import logging_step
from lightning_plateau._rule import warmup_lrs
from lightning_plateau.config import PlateauConfig
from lightning_plateau.scheduler import PlateauEvaluation, PlateauScheduler

_CHART_NAME = "plateau.png"
_PREFIX = "plateau/"
# The x-axis W&B plots the plateau keys against: one point per evaluation, however many per epoch.
_STEP_METRIC = "plateau/evaluation"
_TABLE_KEY = "plateau/cuts"
_IMAGE_KEY = "plateau/chart"


def _trace_metrics(
    row: PlateauEvaluation,
    reductions: int,
    restores: Optional[int] = None,
    *,
    warmup: bool = False,
    skip: bool = False,
    warmup_start: int = 0,
    limit: bool = False,
) -> dict[str, float]:
    """The metrics logged for one evaluation: the scheduler's state right after its decision, cuts so far.

    With ``restore_best_on_cut`` (``restores`` given), also the restores so far and the evaluation restored from here.
    ``warmup`` and ``skip`` (whether the plateau has a warmup, whether it skips non-finite values) add the flags
    ``plateau/warmup`` and ``plateau/skipped``, so a run with neither logs no column that is always 0. With a warmup
    that counts from a step other than 0 (``warmup_start``: a reused Trainer's fresh fit), ``plateau/warmup_start_step``
    says where, so a replay of the log places the warmup as the run did. Under a cut limit (``limit``:
    ``PlateauEarlyStopping(max_reductions=K)``), ``plateau/withheld`` is 1 at the evaluation whose cut it withheld.
    """
    metrics: dict[str, float] = {"plateau/value": row.value}
    if row.smoothed is not None:
        # The average the rule judged, beside the value it averages: the best and the counts follow the average.
        metrics["plateau/smoothed"] = row.smoothed
    metrics |= {
        "plateau/best": row.best,
        "plateau/num_bad": row.num_bad,
        "plateau/cooldown": row.cooldown,
        "plateau/reductions": reductions,
        "plateau/evaluation": row.evaluation,
    }
    if row.global_step is not None:
        # The trainer's step, which a warmup counts; Lightning's logging step (the x axis) can lag it by one.
        metrics["plateau/global_step"] = row.global_step
    if warmup:
        metrics["plateau/warmup"] = int(row.warmup)
        if warmup_start:
            metrics["plateau/warmup_start_step"] = warmup_start
    if skip:
        metrics["plateau/skipped"] = int(row.skipped)
    if limit:
        metrics["plateau/withheld"] = int(row.withheld)
    metrics.update(_lr_metrics(row.lrs))
    if restores is not None:
        metrics["plateau/restores"] = restores
        if row.restored_from is not None:
            metrics["plateau/restored_from"] = row.restored_from
    if row.epoch is not None:
        # Lightning adds `epoch` to every row it logs; W&B users pick it as an x-axis.
        metrics["epoch"] = row.epoch
    return metrics


def wandb_run_dir(trainer: pl.Trainer) -> Optional[pathlib.Path]:
    """The local directory of the W&B run of the trainer's first ``WandbLogger``, ``None`` without one.

    An offline run is uploaded later with ``wandb sync <this directory>``. Call it on rank zero (other ranks
    have no run); it starts the run if the logger has not yet.

    Example::

        run_dir = wandb_run_dir(trainer)
        if run_dir is not None:
            print(f"W&B run: {run_dir}; upload it with: wandb sync {run_dir}")
    """
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return _run_dir(logger.experiment)
    return None


def _run_dir(experiment: Any) -> Optional[pathlib.Path]:
    # A disabled run (WANDB_MODE=disabled) names a directory it never writes; the stand-in on other ranks has none.
    if getattr(experiment, "disabled", False) is True:
        return None
    sync_dir = getattr(experiment, "sync_dir", None)
    return pathlib.Path(sync_dir) if isinstance(sync_dir, str) and sync_dir else None


def _wandb_name(logger: WandbLogger, key: str) -> str:
    # WandbLogger(prefix=...) renames every key it logs; definitions and media must use the same names.
    prefix = getattr(logger, "_prefix", "")
    return f"{prefix}{logger.LOGGER_JOIN_CHAR}{key}" if prefix else key


def _chart_dir(trainer: pl.Trainer) -> Optional[pathlib.Path]:
    """Where the chart goes: beside the first logger's files; ``None`` without a logger.

    A logger without a directory of its own gets ``default_root_dir``; without any logger Lightning writes no
    file of a run, and neither does the plateau.

    This is ``trainer.log_dir`` without its broadcast, so rank zero can call it alone.
    """
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    directory = logger.log_dir or logger.save_dir
    return pathlib.Path(directory or trainer.default_root_dir)


class _Traces:
    """The tracing state of one :class:`~lightning_plateau.PlateauCallback`: what was set up, what was said."""

    def __init__(self) -> None:
        # W&B metric definitions already sent, per run (id of the run object)
        self._defined: dict[int, set[str]] = {}
        self._warned: set[str] = set()
        self._last_step: Optional[int] = None
        self._chart_path: Optional[pathlib.Path] = None
        self._chart_thread: Optional[threading.Thread] = None

    @property
    def chart_path(self) -> Optional[pathlib.Path]:
        """The chart written at the end of the last fit, ``None`` without one; waits for one still being drawn."""
        self.wait_for_chart()
        return self._chart_path

    def wait_for_chart(self) -> None:
        """Wait until the chart drawn on the background thread is written (or has failed, with its warning)."""
        thread = self._chart_thread
        if thread is not None:
            thread.join()
            self._chart_thread = None

    def log_evaluation(self, trainer: pl.Trainer, scheduler: PlateauScheduler, row: PlateauEvaluation) -> None:
        """Log ``row`` to every logger of ``trainer``, on rank zero only."""
        if not trainer.loggers or not trainer.is_global_zero:
            return
        restores = _num_restores(scheduler) if scheduler.config.restore_best_on_cut else None
        metrics = _trace_metrics(
            row,
            scheduler.num_reductions,
            restores,
            warmup=scheduler.warmup_steps > 0,
            skip=scheduler.on_nonfinite == "skip",
            warmup_start=scheduler.warmup_start_step,
            limit=scheduler._cut_limit is not None,
        )
        # A window is judged at its last training batch's end: the step its last per-step value is logged at.
        step = self._last_step = logging_step(trainer, batch_end=row.window is not None)
        for logger in trainer.loggers:
            try:
                if isinstance(logger, WandbLogger):
                    self._define_wandb_metrics(logger, metrics)
                logger.log_metrics(metrics, step=step)
                logger.save()
            except Exception as err:
                # The traces are a report on the fit, not part of it: a logger that refuses them costs a warning.
                self._warn_once(
                    f"log:{id(logger)}",
                    f"PlateauCallback could not log its traces to {type(logger).__name__} at evaluation"
                    f" {row.evaluation}: {_describe(err)}; later failures of this logger are not reported.",
                )

    def finish(
        self,
        trainer: pl.Trainer,
        scheduler: PlateauScheduler,
        history: Sequence[PlateauEvaluation],
        config: PlateauConfig,
    ) -> list[str]:
        """Write the chart and the W&B extras at the end of fit; return lines naming what was written.

        The chart is drawn on a background thread unless a ``WandbLogger`` takes it (see the module's docstring).
        """
        self.wait_for_chart()
        self._chart_path = None
        if not trainer.is_global_zero or getattr(trainer, "fast_dev_run", False) or not history:
            return []
        lines: list[str] = []
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        job = self._chart_job(trainer, scheduler, history, config)
        chart: Optional[pathlib.Path] = None
        if job is not None and wandb_loggers:
            chart = self._chart_path = self._draw_chart(*job)
        elif job is not None:
            chart = job[0]
            self._chart_thread = threading.Thread(target=self._draw_in_background, args=job, name="plateau-chart")
            self._chart_thread.start()
        if chart is not None:
            lines.append(f"chart: {chart}")
        for logger in wandb_loggers:
            try:
                lines += self._finish_wandb(trainer, logger, scheduler, config, chart)
            except Exception as err:
                # Training has ended: nothing the W&B extras do may fail it now.
                self._warn_once(
                    "wandb-finish", f"PlateauCallback skipped its W&B summary, table and chart: {_describe(err)}"
                )
        return lines

    def _chart_job(
        self,
        trainer: pl.Trainer,
        scheduler: PlateauScheduler,
        history: Sequence[PlateauEvaluation],
        config: PlateauConfig,
    ) -> Optional[tuple[pathlib.Path, list[PlateauEvaluation], PlateauConfig, dict[str, Any]]]:
        """What the chart needs, read from the Trainer now: the path, the rows, the config and the drawing options."""
        try:
            # Inside the guard: a logger's own log_dir can fail too.
            directory = _chart_dir(trainer)
        except Exception as err:
            self._warn_once("chart", f"PlateauCallback could not find where to write its chart: {_describe(err)}")
            return None
        if directory is None:
            return None  # logger=False: no file unless asked (plot_plateau(callback.history, ...))
        options = {"initial_lrs": _initial_lrs(history, scheduler), "stop": _early_stop(trainer, history)}
        return directory / _CHART_NAME, list(history), config, options

    def _draw_in_background(
        self, path: pathlib.Path, rows: list[PlateauEvaluation], config: PlateauConfig, options: dict[str, Any]
    ) -> None:
        self._chart_path = self._draw_chart(path, rows, config, options)

    def _draw_chart(
        self, path: pathlib.Path, rows: list[PlateauEvaluation], config: PlateauConfig, options: dict[str, Any]
    ) -> Optional[pathlib.Path]:
        try:
            from lightning_plateau.chart import plot_plateau

            return plot_plateau(rows, config, path, **options)
        except ImportError as err:
            self._warn_once("chart", f"PlateauCallback wrote no chart: {err}")
        except OSError as err:
            # A full disk or a read-only log directory must not fail a finished fit.
            self._warn_once("chart", f"PlateauCallback could not write its chart to {path}: {err}")
        except Exception as err:
            # Nor may a history, or a monitor name, that the drawing did not foresee.
            self._warn_once("chart", f"PlateauCallback could not draw its chart {path}: {_describe(err)}")
        return None

    def _define_wandb_metrics(self, logger: WandbLogger, metrics: dict[str, float]) -> None:
        experiment = logger.experiment
        defined = self._defined.setdefault(id(experiment), set())
        new = [key for key in metrics if key.startswith(_PREFIX) and key != _STEP_METRIC and key not in defined]
        if not new or not callable(getattr(experiment, "define_metric", None)):
            return
        # WandbLogger defines the glob `*` against trainer/global_step, and the first matching pattern wins
        # over any later glob: only exact names take another step metric.
        for key in new:
            experiment.define_metric(_wandb_name(logger, key), step_metric=_wandb_name(logger, _STEP_METRIC))
        defined.update(new)

    def _finish_wandb(
        self,
        trainer: pl.Trainer,
        logger: WandbLogger,
        scheduler: PlateauScheduler,
        config: PlateauConfig,
        chart: Optional[pathlib.Path],
    ) -> list[str]:
        try:
            import wandb
        except ImportError as err:
            self._warn_once(
                "wandb",
                f"PlateauCallback skipped its W&B summary, table and chart ({err});"
                ' pip install "lightning-plateau[wandb]" to get them.',
            )
            return []
        experiment = logger.experiment
        experiment.summary.update({_wandb_name(logger, key): value for key, value in _wandb_summary(scheduler).items()})
        media: dict[str, Any] = {_wandb_name(logger, _TABLE_KEY): _cuts_table(wandb, scheduler, config)}
        if chart is not None:
            image = self._wandb_image(wandb, chart)
            if image is not None:
                media[_wandb_name(logger, _IMAGE_KEY)] = image
        # At the last evaluation's step: the end-of-fit step would lie past every other point of the run.
        media["trainer/global_step"] = self._last_step if self._last_step is not None else logging_step(trainer)
        experiment.log(media)
        lines = []
        run_dir = _run_dir(experiment)
        if run_dir is not None:
            if getattr(experiment, "offline", False):
                lines.append(f"W&B offline run: {run_dir}")
                lines.append(f"upload it with: wandb sync {run_dir}")
            else:
                lines.append(f"W&B run: {getattr(experiment, 'url', None) or run_dir}")
        return lines

    def _wandb_image(self, wandb: Any, chart: pathlib.Path) -> Any:
        try:
            import PIL.Image  # noqa: F401
        except ImportError:
            self._warn_once(
                "pillow",
                "PlateauCallback did not attach the chart to the W&B run: wandb.Image needs Pillow"
                ' (pip install "lightning-plateau[wandb]" or pip install pillow).',
            )
            return None
        return wandb.Image(str(chart), caption="plateau: value, best, LR and cuts")

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            rank_zero_warn(message, category=UserWarning)


def _describe(error: Exception) -> str:
    """An exception on one line, with its type: ``ValueError: Axis limits cannot be NaN or Inf``."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _early_stop(trainer: pl.Trainer, history: Sequence[PlateauEvaluation]) -> Optional[tuple[int, str]]:
    """``(evaluation, rule)`` where a callback following the plateau (PlateauEarlyStopping) stopped the run."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        rule = getattr(callback, "stop_rule", None)
        if hasattr(callback, "on_plateau_evaluation") and isinstance(rule, str) and history:
            return history[-1].evaluation, rule
    return None


def _initial_lrs(history: Sequence[PlateauEvaluation], scheduler: PlateauScheduler) -> Optional[tuple[float, ...]]:
    """The LR of each param group before the first evaluation of ``history``, ``None`` when unknown."""
    if not history:
        return None
    first = history[0]
    if first.warmup:
        # The warmup's first LR: where the LR line starts.
        return _warmup_start_lrs(scheduler)
    if not first.cut:
        return first.lrs
    cut = next((c for c in scheduler.cuts if c.evaluation == first.evaluation), None)
    return cut.lrs_before if cut is not None else None


def _summary_message(
    config: PlateauConfig,
    scheduler: PlateauScheduler,
    history: Sequence[PlateauEvaluation],
    lines: Sequence[str],
    unjudged: Optional[tuple[int, int]] = None,
) -> str:
    """The end-of-fit message: cuts, LR before and after, best value, then what was written (chart, W&B run).

    LR changes made outside the plateau are named, so the cuts and the LRs never seem to contradict each other.
    With windows, ``unjudged`` is the window the fit ended inside: named, as it was not judged.
    """
    parts = [f"PlateauCallback ({config.describe()}): {cuts_in_evaluations(scheduler.num_reductions, len(history))}"]
    set_aside = _set_aside(history)
    if set_aside:
        parts[0] += f" ({set_aside})"
    warmed_up = _had_warmup(scheduler)
    if history and warmed_up:
        parts.append(_warmup_summary(scheduler, history))
    if config.restore_best_on_cut and scheduler.cuts:
        parts[0] += f", {_restores_text(scheduler)}"
    if history:
        first = _initial_lrs(history, scheduler) or history[0].lrs
        if warmed_up:
            first = scheduler.warmup_base_lrs  # the plateau's LRs start where the warmup ends
        # A fit that ended inside its warmup made no cut: the warmup's part says where its LR got to.
        ended_in_warmup = not scheduler.warmup_done
        # The LRs the fit ended with, not those of the last evaluation: a warmup may end after it.
        final = tuple(float(group["lr"]) for group in scheduler.optimizer.param_groups)
        lr = [] if ended_in_warmup else [f"lr {format_lrs(first)} -> {format_lrs(final[: len(first)])}"]
        if scheduler.outside_changes:
            changes = "; ".join(
                f"{format_lrs(before)} -> {format_lrs(after)} "
                + (
                    "after the last evaluation"
                    if evaluation > scheduler.num_evaluations
                    else f"before evaluation {evaluation}"
                )
                for evaluation, before, after in scheduler.outside_changes
            )
            lr.append(f"(changed outside the plateau: {changes})")
        if lr:
            parts.append(" ".join(lr))
        best = float(scheduler.best)
        if math.isfinite(best):
            where = "" if scheduler.best_epoch is None else f" at epoch {scheduler.best_epoch}"
            if scheduler.best_window is not None:
                where = f" in {format_steps(scheduler.best_window)}"
            average = f" (moving average {config.smoothing:g})" if config.smoothing else ""
            parts.append(f"best {config.monitor}{average} {format_value(best)}{where}")
    if unjudged is not None:
        parts.append(
            f"{format_steps(unjudged)} not judged (the fit ended inside that window of {config.window_steps} steps)"
        )
    return "\n  ".join([", ".join(parts), *lines])


def _num_restores(scheduler: PlateauScheduler) -> int:
    return sum(cut.restored_from is not None for cut in scheduler.cuts)


def _restores_text(scheduler: PlateauScheduler) -> str:
    """How the cuts restored the best weights.

    Example: ``weights restored at 2 of 2 cuts (from evaluations 5, 9), best state kept on CPU: 1.2 MiB``.
    """
    sources = [str(cut.restored_from) for cut in scheduler.cuts if cut.restored_from is not None]
    text = f"weights restored at {len(sources)} of {plural(len(scheduler.cuts), 'cut')}"
    if sources:
        text += f" (from evaluation{'s' if len(sources) > 1 else ''} {', '.join(sources)})"
    best_state = scheduler._best_state
    if best_state is not None and best_state.held:
        text += f", best state kept on CPU: {format_bytes(best_state.nbytes)}"
    return text


def _set_aside(history: Sequence[PlateauEvaluation]) -> str:
    """The evaluations recorded but not judged: ``3 during warmup, 1 skipped (not finite)``; ``""`` if none."""
    in_warmup = sum(row.warmup for row in history)
    skipped = sum(row.skipped for row in history)
    parts = [f"{in_warmup} during warmup"] if in_warmup else []
    parts += [f"{skipped} skipped (not finite)"] if skipped else []
    return ", ".join(parts)


def _warmup_start_lrs(scheduler: PlateauScheduler) -> tuple[float, ...]:
    """The warmup's first LRs (of step 0 of a warmup of any length)."""
    return warmup_lrs(scheduler.warmup_base_lrs, 0, 1, scheduler.warmup_start_factor)


def _had_warmup(scheduler: PlateauScheduler) -> bool:
    """Whether this run had a warmup: one running, or one that ended (a resume keeps what the run had)."""
    return not scheduler.warmup_done or scheduler.warmup_end_step is not None


def _warmup_summary(scheduler: PlateauScheduler, history: Sequence[PlateauEvaluation]) -> str:
    """``warmup lr 1e-3 -> 0.01 over 40 steps, ended at step 40``, or where the fit ended inside it.

    The steps are the trainer's: a reused Trainer's fresh fit warms up from the step it started at.
    """
    start = _warmup_start_lrs(scheduler)
    end = scheduler.warmup_end_step
    # The warmup the run had, which a resume with another warmup_steps does not change.
    steps = scheduler.warmup_steps if end is None else end - scheduler.warmup_start_step
    ramp = f"warmup lr {format_lrs(start)} -> {format_lrs(scheduler.warmup_base_lrs)} over {steps} steps"
    if end is not None:
        return f"{ramp}, ended at step {end}"
    last = history[-1].global_step
    return f"{ramp}, not over when the fit ended" + ("" if last is None else f" (last evaluation at step {last})")


def _lr_metrics(lrs: Sequence[float]) -> dict[str, float]:
    if len(lrs) == 1:
        return {"plateau/lr": lrs[0]}
    return {f"plateau/lr/pg{index}": lr for index, lr in enumerate(lrs)}


def _wandb_summary(scheduler: PlateauScheduler) -> dict[str, Any]:
    summary: dict[str, Any] = {"plateau/reductions": scheduler.num_reductions}
    if scheduler.warmup_steps:
        summary["plateau/warmup_done"] = scheduler.warmup_done
    if scheduler.config.restore_best_on_cut:
        summary["plateau/restores"] = _num_restores(scheduler)
    if scheduler.outside_changes:
        # The LR also moved by other means: say so beside the cuts, so the two never seem to contradict each other.
        summary["plateau/lr_changes_outside"] = len(scheduler.outside_changes)
    summary.update(_lr_metrics([float(group["lr"]) for group in scheduler.optimizer.param_groups]))
    best = float(scheduler.best)
    if math.isfinite(best):
        summary["plateau/best"] = best
        if scheduler.best_epoch is not None:
            summary["plateau/best_epoch"] = scheduler.best_epoch
        if scheduler.best_evaluation is not None:
            summary["plateau/best_evaluation"] = scheduler.best_evaluation
        if scheduler.best_window is not None:
            summary["plateau/best_steps"] = format_steps(scheduler.best_window).removeprefix("steps ")
    return summary


def _cuts_table(wandb: Any, scheduler: PlateauScheduler, config: PlateauConfig) -> Any:
    groups = max((len(cut.lrs_after) for cut in scheduler.cuts), default=1)
    suffixes = [""] if groups == 1 else [f"/pg{index}" for index in range(groups)]
    smoothing = config.smoothing > 0
    columns = ["cut", "evaluation", "epoch", "global_step", "value", *(["smoothed"] if smoothing else []), "best"]
    columns += [f"lr_before{s}" for s in suffixes] + [f"lr_after{s}" for s in suffixes]
    restoring = config.restore_best_on_cut
    columns += ["restored_from", "reason"] if restoring else ["reason"]
    rows = []
    for number, cut in enumerate(scheduler.cuts, start=1):
        before = [_at(cut.lrs_before, index) for index in range(groups)]
        after = [_at(cut.lrs_after, index) for index in range(groups)]
        head = [number, cut.evaluation, cut.epoch, cut.global_step, cut.value, *([cut.smoothed] if smoothing else [])]
        head.append(cut.best)
        restored = [cut.restored_from] if restoring else []
        rows.append([*head, *before, *after, *restored, format_cut(cut, config)])
    return wandb.Table(columns=columns, data=rows)


def _at(lrs: Sequence[float], index: int) -> Optional[float]:
    return lrs[index] if index < len(lrs) else None
