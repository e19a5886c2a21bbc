"""Read an offline W&B run (the ``.wandb`` transaction log) without a server or a network.

In offline mode the ``.wandb`` file is the only record of a run's history, summary and config. Its format:
a 7-byte header (``:W&B``, magic ``0xBEE1`` little-endian, version 0), then LevelDB-log framing in 32 KiB
blocks. Each chunk has a 7-byte header (crc32 uint32 LE, length uint16 LE, type uint8: 1 FULL, 2 FIRST,
3 MIDDLE, 4 LAST); a block's last < 7 bytes are zero padding. The crc is zlib's crc32 of the payload seeded
with the crc32 of the type byte. Each assembled payload is a protobuf ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_IDENT = b":W&B"
_MAGIC = 0xBEE1
_VERSION = 0
_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# crc32 of each chunk type byte, the seed of that chunk's payload crc
_TYPE_CRC = {kind: zlib.crc32(bytes([kind])) for kind in (_FULL, _FIRST, _MIDDLE, _LAST)}
# A run's file ends inside a record while W&B still writes it: the usual cause, and what to do.
_OPEN = (
    ". The run is likely still open: W&B writes this file as the run goes and completes it when the run finishes."
    " Finish the run (wandb.finish(), or let the process that logs it end), then read it again (if that process"
    " died instead, the file stays incomplete)"
)


class WandbFileError(ValueError):
    """A ``.wandb`` file that cannot be read: not a W&B file, truncated, or corrupt."""


@dataclass
class WandbRun:
    """What an offline W&B run logged.

    Attributes:
        path: the ``.wandb`` file read.
        history: one dict per history record (one ``log`` call), oldest first. Keys are as logged
            (``"val_loss"``, ``"trainer/global_step"``, ``"epoch"``, ``"_step"``); a nested dict logged as a
            value gives dotted keys (``{"a": {"b": 1}}`` -> ``"a.b"``), as W&B's own tables show them.
        summary: the run's final summary, nested as logged.
        config: the run's config, nested as logged.
        finished: whether the file holds the run's exit record, which W&B writes when the run finishes
            (``wandb.finish()``, or its process ending). Without it the run is still open, and what it logged may
            not all be written yet, or its process died.
    """

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def columns(self) -> list[str]:
        """Every history key, in order of first appearance."""
        seen: dict[str, None] = {}
        for row in self.history:
            seen.update(dict.fromkeys(row))
        return list(seen)


def read_run(path: str | Path) -> WandbRun:
    """Read an offline W&B run's history, summary and config from disk.

    Args:
        path: a ``.wandb`` file; an offline run directory (``offline-run-*/`` holding ``run-*.wandb``); a
            ``wandb/`` directory (its ``latest-run``, or its only run); or the ``save_dir`` that holds ``wandb/``.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no W&B run.
        WandbFileError: if the file is not a W&B transaction log, is truncated (the message says the run may still
            be open), or fails its checksums; or if a directory holds several runs and none is marked ``latest-run``.
        ImportError: if the ``wandb`` package (the ``wandb`` extra) is not installed.

    Example::

        run = read_run("lightning_logs/wandb/latest-run")
        losses = [row["val_loss"] for row in run.history if "val_loss" in row]
    """
    try:
        import wandb.proto.wandb_internal_pb2 as wandb_internal_pb2
    except ImportError as error:
        raise ImportError(
            "Reading a W&B run needs the `wandb` package: pip install 'lightning-plateau[wandb]'"
        ) from error

    file = _find_run_file(Path(path))
    run = WandbRun(path=file)
    for payload in _payloads(file):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
        try:
            record.ParseFromString(payload)
        except Exception as error:  # protobuf raises its own DecodeError, not importable in a stable place
            raise WandbFileError(f"{file}: a record fails to decode as a W&B record ({error})") from error
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append(_history_row(record.history))
        elif kind == "summary":
            _apply(run.summary, record.summary.update, record.summary.remove)
        elif kind == "config":
            _apply(run.config, record.config.update, record.config.remove)
        elif kind == "run":
            _apply(run.config, record.run.config.update, record.run.config.remove)
        elif kind == "exit":
            run.finished = True
    run.config.pop("_wandb", None)
    run.summary.pop("_wandb", None)
    return run


def _find_run_file(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"No such file or directory: '{path}'")
    if path.is_file():
        return path
    files = sorted(path.glob("run-*.wandb"))
    if len(files) == 1:
        return files[0]
    if len(files) > 1:
        raise WandbFileError(f"{path} holds {len(files)} .wandb files; pass one of them: {[f.name for f in files]}")
    if (path / "latest-run").exists():
        return _find_run_file(path / "latest-run")
    runs = sorted(p for p in path.glob("*run-*") if p.is_dir() and any(p.glob("run-*.wandb")))
    if len(runs) == 1:
        return _find_run_file(runs[0])
    if len(runs) > 1:
        raise WandbFileError(
            f"{path} holds {len(runs)} W&B runs and no latest-run link; pass one of them: {[r.name for r in runs]}"
        )
    if (path / "wandb").is_dir():
        return _find_run_file(path / "wandb")
    raise FileNotFoundError(
        f"No W&B run in '{path}': expected a run-*.wandb file, an offline-run-* directory, a wandb/ directory,"
        " or the save_dir that holds wandb/"
    )


def _payloads(file: Path) -> Iterator[bytes]:
    """Each record's payload, reassembled from its chunks, with every chunk's crc checked."""
    data = file.read_bytes()
    if len(data) < _FILE_HEADER.size:
        raise WandbFileError(f"{file} is not a W&B run file: {len(data)} bytes, shorter than the 7-byte header")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise WandbFileError(f"{file} is not a W&B run file: it starts with {data[:7]!r}, not b':W&B' + 0xBEE1")
    if version != _VERSION:
        raise WandbFileError(f"{file} is W&B file format version {version}; this reader knows version {_VERSION}")
    position = _FILE_HEADER.size
    end = len(data)
    pending: list[bytes] | None = None
    while position < end:
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:
            position += left_in_block
            continue
        if end - position < _CHUNK_HEADER.size:
            raise WandbFileError(f"{file} is truncated: it ends inside a chunk header at byte {position}{_OPEN}")
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:
            # zero-filled space a writer leaves before the next block
            position += left_in_block
            continue
        start = position + _CHUNK_HEADER.size
        stop = start + length
        if kind not in _TYPE_CRC or stop > position + left_in_block:
            raise WandbFileError(
                f"{file} is corrupt: bad chunk header at byte {position} (type {kind}, {length} bytes)"
            )
        if stop > end:
            raise WandbFileError(
                f"{file} is truncated: a chunk of {length} bytes starts at byte {start} but the file ends at byte"
                f" {end}{_OPEN}"
            )
        payload = data[start:stop]
        if zlib.crc32(payload, _TYPE_CRC[kind]) != crc:
            raise WandbFileError(f"{file} is corrupt: checksum mismatch in the chunk at byte {position}")
        position = stop
        if kind == _FULL:
            if pending is not None:
                raise WandbFileError(f"{file} is corrupt: a record at byte {position} interrupts an unfinished one")
            yield payload
        elif kind == _FIRST:
            if pending is not None:
                raise WandbFileError(f"{file} is corrupt: a record at byte {position} interrupts an unfinished one")
            pending = [payload]
        else:
            if pending is None:
                raise WandbFileError(f"{file} is corrupt: a record continues at byte {position} without a start")
            pending.append(payload)
            if kind == _LAST:
                yield b"".join(pending)
                pending = None
    if pending is not None:
        raise WandbFileError(f"{file} is truncated: its last record is incomplete{_OPEN}")


def _history_row(history: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in history.item:
        key = ".".join(item.nested_key) if item.nested_key else item.key
        row[key] = _item_value(item)
    if "_step" not in row and history.HasField("step"):
        row["_step"] = history.step.num
    return row


def _item_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    case = item.WhichOneof("value")
    if case is None or case == "none":
        return None
    if case == "json":
        return json.loads(item.json)
    return getattr(item, case)


def _apply(target: dict[str, Any], updates: Any, removes: Any) -> None:
    for item in updates:
        keys = list(item.nested_key) or [item.key]
        node = target
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = json.loads(item.value_json) if item.value_json else None
    for item in removes:
        keys = list(item.nested_key) or [item.key]
        node = target
        for key in keys[:-1]:
            node = node.get(key, {})
            if not isinstance(node, dict):
                break
        else:
            node.pop(keys[-1], None)
