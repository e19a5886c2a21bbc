"""Training-metric windows: the values logged during N optimizer steps, judged once as their mean.

Torch-only, so the live callback and ``replay`` (and ``lightning-plateau explain``) cut windows by the same rule.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

#: (first, last) optimizer step of a window, 1-based, as ``trainer.global_step`` reads after each step
Span = tuple[int, int]


class _StepWindow:
    """The running window of a ``PlateauConfig(window_steps=N)`` plateau: a partial sum, a count, where it started.

    A window closes at the first batch after which the optimizer-step count has reached the next multiple of N
    (with automatic optimization, exactly at steps N, 2N, ...), and covers the steps since the previous one
    closed. Epochs do not end a window. The sum stays wherever the values are (a tensor on their device, or a
    float in ``replay``): adding a value is one add, with no host-device sync.

    Args:
        steps: N, the optimizer steps per window (> 0).
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.total: Union[float, torch.Tensor] = 0.0
        self.count = 0
        #: the optimizer step the previous window closed at (0 before the first)
        self.closed_at = 0

    def add(self, value: Union[float, torch.Tensor]) -> None:
        """Add one logged value to the window."""
        self.total = self.total + value
        self.count += 1

    def is_due(self, step: int) -> bool:
        """Whether the window closes once the optimizer-step count is ``step``."""
        return step // self.steps > self.closed_at // self.steps

    def close(self, step: int) -> Span:
        """Start the next window after ``step``; return the closed window's span of steps."""
        span = (self.closed_at + 1, step)
        self.closed_at = step
        self.total, self.count = 0.0, 0
        return span

    def pending(self, step: int) -> Optional[Span]:
        """The steps of the window still open when the count is ``step``, ``None`` when none is open."""
        return (self.closed_at + 1, step) if step > self.closed_at else None

    def state_dict(self, total: float, count: int) -> dict[str, Any]:
        """The partial window as plain data, with the ``total`` and ``count`` to save (summed over ranks)."""
        return {"steps": self.steps, "total": total, "count": count, "closed_at": self.closed_at}

    def load_state_dict(self, state: dict[str, Any], *, keep_partial: bool = True) -> None:
        """Restore :meth:`state_dict`'s window; ``keep_partial=False`` restores where it started, with no values."""
        self.closed_at = int(state.get("closed_at", 0))
        self.total = float(state.get("total", 0.0)) if keep_partial else 0.0
        self.count = int(state.get("count", 0)) if keep_partial else 0


def window_means(
    values: list[float], steps: Optional[list[int]], window_steps: int
) -> tuple[list[float], list[int], list[Span]]:
    """Cut a per-step series into windows as the live callback does: (mean, index of its last value, span) each.

    Args:
        values: every value logged, oldest first.
        steps: the optimizer step (1-based) each value belongs to, non-decreasing; the micro-batches of one step
            under gradient accumulation share it. ``None``: one value per step, from step 1. Every step is assumed
            to have logged a value: a step that logged none cannot close a window here, where it does in a fit.
        window_steps: N.

    Raises:
        ValueError: if ``steps`` has another length than ``values``, a step below 1, or goes back.

    A window the series ends inside is not judged, as a fit that ends inside a window does not judge it.
    """
    if steps is None:
        steps = list(range(1, len(values) + 1))
    elif len(steps) != len(values):
        raise ValueError(f"`global_steps` must give one step per value: {len(values)} values, got {len(steps)} steps")
    window = _StepWindow(window_steps)
    means: list[float] = []
    lasts: list[int] = []
    spans: list[Span] = []
    previous = 1
    for index, (value, step) in enumerate(zip(values, steps, strict=True)):
        if step < previous:
            where = "below 1" if step < 1 else f"after step {previous}"
            raise ValueError(
                f"with window_steps, `global_steps` are the optimizer steps (1-based) the values were logged at, in"
                f" order; value {index + 1} is at step {step}, {where}"
            )
        previous = step
        window.add(value)
        next_step = steps[index + 1] if index + 1 < len(steps) else None
        # The window closes after the last value of the step that reaches the next multiple of N (the micro-batches
        # of one optimizer step share its step).
        if next_step != step and window.is_due(step):
            count = window.count
            total = float(window.total)
            spans.append(window.close(step))
            means.append(total / count)
            lasts.append(index)
    return means, lasts, spans
