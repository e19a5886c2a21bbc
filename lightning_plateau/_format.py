"""Human-readable numbers and sentences shared by the callback's messages, replay and the command line."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the detectors word their cuts with these helpers, and the rule imports the detectors
    from lightning_plateau._rule import PlateauCut
    from lightning_plateau.config import PlateauConfig


def format_lr(lr: float) -> str:
    """An LR the way people write it: ``1e-3``, ``5e-4``, ``0.1``, ``0``."""
    if lr == 0.0 or not math.isfinite(lr):
        return f"{lr:g}"
    if 1e-2 <= abs(lr) < 1e3:
        return f"{lr:.4g}"
    mantissa, exponent = f"{lr:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def format_lrs(lrs: Sequence[float]) -> str:
    """One LR as :func:`format_lr`, several as a bracketed list."""
    if len(lrs) == 1:
        return format_lr(lrs[0])
    return "[" + ", ".join(format_lr(lr) for lr in lrs) + "]"


def format_value(value: float) -> str:
    """A metric value with four decimals where that is readable, else four significant digits."""
    if math.isfinite(value) and (value == 0.0 or 1e-3 <= abs(value) < 1e5):
        return f"{value:.4f}"
    return f"{value:.4g}"


def format_bytes(count: int) -> str:
    """A size the way people read it: ``512 B``, ``1.5 KiB``, ``12.3 MiB``, ``2.0 GiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def plural(count: int, noun: str) -> str:
    """A count and its noun: ``1 cut``, ``2 cuts``, ``0 evaluations``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def cuts_in_evaluations(num_cuts: int, num_evaluations: int) -> str:
    """How many cuts a history got: ``2 cuts in 9 evaluations``, ``1 cut in 1 evaluation``."""
    return f"{plural(num_cuts, 'cut')} in {plural(num_evaluations, 'evaluation')}"


def format_steps(span: tuple[int, int]) -> str:
    """A window of optimizer steps (1-based, both ends included): ``steps 4001-5000``, ``step 7``."""
    first, last = span
    return f"step {last}" if first == last else f"steps {first}-{last}"


def judged_subject(config: PlateauConfig) -> str:
    """What the rule judges, as the subject of a sentence about the best: ``val_loss (moving average 0.6)``."""
    return config.monitor + (f" (moving average {config.smoothing:g})" if config.smoothing else "")


def format_cut(cut: PlateauCut, config: PlateauConfig) -> str:
    """Why a cut happened, in one line, in the words of the config's detector.

    Epochs are Lightning's (counted from 0, as its progress bar, checkpoint names and ``epoch`` column count
    them); evaluations are counted from 1. Example, the 16th epoch cutting after a best in the 5th:
    ``epoch 15, eval 16: val_loss has not improved on 0.4120 (epoch 4) for 11 evaluations (> patience 10):
    lr 1e-3 -> 1e-4``, followed with ``restore_best_on_cut`` by ``; weights restored from eval 5 (epoch 4)``. With
    windows (``window_steps``) the steps of the window replace the epoch:
    ``steps 4001-5000, eval 5: train_loss has not improved on 0.4120 (steps 1001-2000) for 4 evaluations ...``.
    With ``smoothing`` the subject is the average judged: ``val_loss (moving average 0.6) has not improved ...``;
    with ``detector="slope"``: ``val_loss has not decreased over its last 11 evaluations (least-squares slope:
    P(decrease) < 0.51; 11 > patience 10): ...``.
    """
    # Imported here: the detectors word their reasons with this module's helpers.
    from lightning_plateau._detectors import make_detector

    if cut.window is not None:
        where = f"{format_steps(cut.window)}, eval {cut.evaluation}"
    elif cut.epoch is None:
        where = f"eval {cut.evaluation}"
    else:
        where = f"epoch {cut.epoch}, eval {cut.evaluation}"
    return (
        f"{where}: {judged_subject(config)} {make_detector(config).cut_phrase(cut, config)}:"
        f" lr {format_lrs(cut.lrs_before)} -> {format_lrs(cut.lrs_after)}{format_restore(cut, config)}"
    )


def format_restore(cut: PlateauCut, config: PlateauConfig) -> str:
    """What ``restore_best_on_cut`` did at a cut, as the end of its line; ``""`` without the setting.

    Example: ``; weights restored from eval 5 (epoch 4)``; with windows ``; weights restored from eval 5 (steps
    41-50)``, the window of the best evaluation, whose weights are the ones restored.
    """
    if not config.restore_best_on_cut:
        return ""
    if cut.restored_from is None:
        return "; no weights restored (no best weights were kept)"
    where = "" if cut.restored_epoch is None else f" (epoch {cut.restored_epoch})"
    if cut.window is not None:
        # Windows are named by their steps, never by the epoch (one epoch may hold many windows).
        best_window = cut.best_window if cut.restored_from == cut.best_evaluation else None
        where = "" if best_window is None else f" ({format_steps(best_window)})"
    return f"; weights restored from eval {cut.restored_from}{where}"
