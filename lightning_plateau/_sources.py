"""Read a metric history from what users already have: a metrics.csv, a W&B run, a JSON array, a list of numbers."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

from lightning_plateau.config import PlateauConfig

_DEFAULT_MONITOR = PlateauConfig().monitor
# Columns that label evaluations rather than being candidates for the monitor.
# Separators a value may be followed by at the end of its line.
_TRAILING = ",; \t"
_CSV_LABELS = ("epoch", "step")
_WANDB_LABELS = ("epoch", "trainer/global_step")
# Between the values of a history given on one line: a comma (spaces or tabs around it allowed), or blanks alone.
_ONE_LINE_SEPARATOR = re.compile(r"\s*,\s*|\s+")


class SourceError(ValueError):
    """A SOURCE that cannot be read as a metric history; the message says where and why."""


@dataclass
class History:
    """The values to replay and their labels.

    Attributes:
        values: the monitored value at each evaluation, oldest first.
        epochs: an epoch label (0-based) per value, ``None`` when the source has none.
        global_steps: a step label per value, ``None`` when the source has none.
        monitor: the column the values come from, ``None`` for a bare list of numbers.
        name: the source, for messages and titles.
    """

    values: list[float]
    epochs: Optional[list[Optional[int]]]
    global_steps: Optional[list[Optional[int]]]
    monitor: Optional[str]
    name: str


def read_history(source: str, monitor: Optional[str], stdin: TextIO) -> History:
    """Read SOURCE: ``-`` (stdin), a W&B run (``.wandb`` file or run directory), JSON, CSV, or text.

    Text holds one value per line, or all the values on a single line separated by commas, spaces or tabs
    (``1.0 0.9 0.8``, ``1.0, 0.9, 0.8``). A first line of names is a CSV header.

    Args:
        source: the path given on the command line, or ``-``.
        monitor: the column to read from a CSV or a W&B run; ``None``: ``val_loss``, or the only candidate.
        stdin: where ``-`` reads from.

    Raises:
        SourceError: if the source is missing, of no known kind, lacks the column, or holds a value that is
            not a number (the message gives its line, and on a one-line history the item).
        ImportError: for a W&B run without the ``wandb`` package.
    """
    if source == "-":
        return _parse_text(stdin.read(), "<stdin>", monitor)
    path = Path(source)
    if not path.exists():
        raise SourceError(f"{source}: no such file or directory")
    if path.is_dir():
        return _read_wandb(path, monitor)
    with path.open("rb") as file:
        if file.read(4) == b":W&B":
            return _read_wandb(path, monitor)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(
            f"{source} is neither text (CSV, JSON, one value per line) nor a W&B run file (.wandb)"
        ) from None
    return _parse_text(text, source, monitor)


def _parse_text(text: str, name: str, monitor: Optional[str]) -> History:
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
    return _parse_csv(lines, name, monitor)


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


def _parse_csv(lines: list[str], name: str, monitor: Optional[str]) -> History:
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
    return History(
        values,
        epochs if epoch_index is not None else None,
        steps if step_index is not None else None,
        column,
        name,
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
    columns = [column for column in run.columns() if not column.startswith("_")]
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
    return History(
        values,
        epochs if any(epoch is not None for epoch in epochs) else None,
        steps if any(step is not None for step in steps) else None,
        column,
        name,
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
