"""One distributed fit on CPU over gloo, run by tests/test_distributed.py in subprocesses.

Each rank logs its own scripted ``val_loss`` (``--values``: one list per global rank, ``null`` for "not logged")
*without* ``sync_dist`` (with ``--window-steps N``: its own ``train_loss`` per training batch, judged in windows of N
optimizer steps) and writes ``rank<global_rank>.json`` under ``--out``: the LR at each epoch start, the plateau
history and cuts, the weights at each evaluation, at each epoch start and at the end, every collective issued from
inside ``lightning_plateau``, and the error, if the fit raised one. Collectives are counted by wrapping
``torch.distributed``'s functions with a function that calls the original (instrumentation: the real collective
still runs).

Example::

    python tests/ddp_script.py --out /tmp/run --strategy ddp --values '[[4, 3], [2, 3]]' --max-epochs 2
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from helpers import loader, plateau_of
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

import lightning_plateau
from lightning_plateau import PlateauConfig, PlateauEarlyStopping, PlateauMixin

_PACKAGE_DIR = str(Path(lightning_plateau.__file__).resolve().parent)
_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "barrier",
    "reduce",
    "gather",
    "scatter",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
)


class RankScriptedModel(PlateauMixin, pl.LightningModule):
    """A tiny regression model; global rank ``r`` logs ``values[r][epoch]`` as ``val_loss`` without ``sync_dist``.

    With windows (``plateau.window_steps``), rank ``r`` logs ``values[r][k]`` as ``train_loss`` in its k-th training
    batch of the fit instead (Lightning's count, which a checkpoint restores), and no ``val_loss``.
    """

    def __init__(self, values: list[list[Optional[float]]], plateau: PlateauConfig, loaders: int = 1) -> None:
        super().__init__()
        self.values = values
        self.plateau = plateau
        self.loaders = loaders
        self.layer = torch.nn.Linear(4, 1)

    def _value(self) -> Optional[float]:
        if self.plateau.window_steps:
            return None
        mine = self.values[self.global_rank]
        return mine[min(self.current_epoch, len(mine) - 1)]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.plateau.window_steps:
            mine = self.values[self.global_rank]
            position = self.trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1
            value = mine[min(position, len(mine) - 1)]
            if value is not None:
                self.log("train_loss", value)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        # A synced metric beside the monitor: reading the monitor must not run its collective again.
        self.log("val_mse", torch.nn.functional.mse_loss(self.layer(x), y), sync_dist=True)
        # With several loaders the last one logs the monitor, as `val_loss/dataloader_idx_<last>`.
        value = self._value()
        if self.loaders > 1 and dataloader_idx == self.loaders - 1 and value is not None:
            self.log("val_loss", value)

    def on_validation_epoch_end(self) -> None:
        value = self._value()
        if not self.trainer.sanity_checking and self.loaders == 1 and value is not None:
            self.log("val_loss", value)

    def train_dataloader(self) -> Any:
        return loader(8)

    def val_dataloader(self) -> Any:
        return [loader(4) for _ in range(self.loaders)] if self.loaders > 1 else loader(4)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _CollectiveCounter:
    """Wraps ``torch.distributed``'s collectives; records the outermost calls made from ``lightning_plateau``."""

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer
        self.calls: list[dict[str, Any]] = []
        self._depth = 0

    def install(self) -> None:
        namespaces = (torch.distributed, torch.distributed.distributed_c10d)
        for name in _COLLECTIVES:
            original = getattr(torch.distributed.distributed_c10d, name, None)
            if original is None or getattr(original, "_counted", False):
                continue
            wrapper = self._wrap(name, original)
            for namespace in namespaces:
                if getattr(namespace, name, None) is original:
                    setattr(namespace, name, wrapper)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0:
                caller = _package_caller()
                if caller is not None:
                    self.calls.append(
                        {
                            "op": name,
                            "caller": caller,
                            "epoch": self.trainer.current_epoch,
                            "global_step": self.trainer.global_step,
                        }
                    )
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1

        counted._counted = True  # type: ignore[attr-defined]
        return counted


def _package_caller() -> Optional[str]:
    """``file:function`` of the innermost ``lightning_plateau`` frame on the stack, ``None`` if there is none."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_PACKAGE_DIR):
            return f"{Path(filename).name}:{frame.f_code.co_name}"
        frame = frame.f_back
    return None


class _Recorder(pl.Callback):
    """Writes what this rank saw to ``<out>/rank<global_rank>.json`` at fit end or on an exception."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.lrs: list[float] = []
        self.batch_lrs: list[tuple[int, float]] = []
        self.counter: Optional[_CollectiveCounter] = None
        self.evaluated_weights: list[dict[str, list[float]]] = []
        self.epoch_start_weights: list[dict[str, list[float]]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.counter = _CollectiveCounter(trainer)
        self.counter.install()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.epoch_start_weights.append(_weights(pl_module))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.evaluated_weights.append(_weights(pl_module))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.batch_lrs.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, error=None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write(trainer, pl_module, error=f"{type(exception).__name__}: {exception}")

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, error: Optional[str]) -> None:
        plateau = plateau_of(trainer)
        scheduler = plateau.scheduler
        stopper = trainer.early_stopping_callback
        result = {
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "start_epoch": trainer.current_epoch - len(self.lrs),
            "lrs": self.lrs,
            "batch_lrs": self.batch_lrs,
            "final_lr": trainer.optimizers[0].param_groups[0]["lr"],
            "history": [
                {"epoch": row.epoch, "value": row.value, "lr": row.lrs[0], "cut": row.cut, "num_bad": row.num_bad}
                | ({} if row.smoothed is None else {"smoothed": row.smoothed})
                | ({} if row.window is None else {"window": list(row.window), "global_step": row.global_step})
                | ({"warmup": row.warmup, "skipped": row.skipped} if row.warmup or row.skipped else {})
                for row in plateau.history
            ],
            "cut_epochs": [] if scheduler is None else [cut.epoch for cut in scheduler.cuts],
            "restored_from": [] if scheduler is None else [cut.restored_from for cut in scheduler.cuts],
            "weights": _weights(pl_module),
            "evaluated_weights": self.evaluated_weights,
            "epoch_start_weights": self.epoch_start_weights,
            "collectives": [] if self.counter is None else self.counter.calls,
            "stopped_epoch": None if stopper is None else stopper.stopped_epoch,
            "stop_rule": None if stopper is None else stopper.stop_rule,
            "error": error,
        }
        path = Path(self.out) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(result, indent=1))


def _weights(module: torch.nn.Module) -> dict[str, list[float]]:
    return {name: p.detach().double().flatten().tolist() for name, p in module.named_parameters()}


def _parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for rank<r>.json")
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "ddp_spawn"])
    parser.add_argument("--devices", type=int, default=2, help="processes per node")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--values", required=True, help="JSON: one list of values per global rank, null = not logged")
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--max-reductions", type=int, help="add PlateauEarlyStopping(max_reductions=...)")
    parser.add_argument("--checkpoint-dir", help="save last.ckpt there after every validation")
    parser.add_argument("--resume", help="checkpoint to resume from")
    parser.add_argument("--loaders", type=int, default=1, help="validation dataloaders; the last one logs the monitor")
    parser.add_argument("--warmup-steps", type=int, default=0, help="PlateauConfig(warmup_steps=...)")
    parser.add_argument("--warmup-start-factor", type=float, default=0.1, help="PlateauConfig(warmup_start_factor=...)")
    parser.add_argument("--on-nonfinite", default="bad", help="PlateauConfig(on_nonfinite=...)")
    parser.add_argument("--restore-best-on-cut", action="store_true", help="PlateauConfig(restore_best_on_cut=True)")
    parser.add_argument("--window-steps", type=int, default=0, help="judge train_loss in windows of N optimizer steps")
    parser.add_argument("--every-n-train-steps", type=int, help="with --checkpoint-dir: save every N steps, all kept")
    parser.add_argument("--detector", default="best", help="PlateauConfig(detector=...)")
    parser.add_argument("--slope-robust", action="store_true", help="PlateauConfig(slope_robust=True)")
    parser.add_argument("--smoothing", type=float, default=0.0, help="PlateauConfig(smoothing=...)")
    parser.add_argument("--log-dir", help="log every step with a CSVLogger there (run/version_0), rank 0 writing")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = _parse(argv)
    values = [[None if v is None else float(v) for v in rank] for rank in json.loads(args.values)]
    assert len(values) == args.devices * args.num_nodes, "give one list of values per rank"
    pl.seed_everything(0, workers=True)
    monitor = "val_loss" if args.loaders == 1 else f"val_loss/dataloader_idx_{args.loaders - 1}"
    if args.window_steps:
        monitor = "train_loss"
    config = PlateauConfig(
        monitor=monitor,
        patience=args.patience,
        factor=0.5,
        warmup_steps=args.warmup_steps,
        warmup_start_factor=args.warmup_start_factor,
        on_nonfinite=args.on_nonfinite,
        window_steps=args.window_steps,
        restore_best_on_cut=args.restore_best_on_cut,
        smoothing=args.smoothing,
        detector=args.detector,
        slope_robust=args.slope_robust,
    )
    model = RankScriptedModel(values, config, args.loaders)
    callbacks: list[pl.Callback] = [_Recorder(args.out)]
    if args.max_reductions is not None:
        callbacks.append(PlateauEarlyStopping(max_reductions=args.max_reductions))
    if args.checkpoint_dir and args.every_n_train_steps:
        callbacks.append(
            ModelCheckpoint(dirpath=args.checkpoint_dir, every_n_train_steps=args.every_n_train_steps, save_top_k=-1)
        )
    elif args.checkpoint_dir:
        callbacks.append(ModelCheckpoint(dirpath=args.checkpoint_dir, save_last=True, save_top_k=0))
    trainer = pl.Trainer(
        default_root_dir=args.out,
        accelerator="cpu",
        strategy=args.strategy,
        devices=args.devices,
        num_nodes=args.num_nodes,
        max_epochs=args.max_epochs,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(args.checkpoint_dir),
        logger=CSVLogger(args.log_dir, name="run", version=0) if args.log_dir else False,
        log_every_n_steps=1,
        callbacks=callbacks,
    )
    try:
        trainer.fit(model, ckpt_path=args.resume)
    finally:
        # Lightning leaves the process group to interpreter exit, where gloo's threads are sometimes torn down in
        # an order that aborts the process ("terminate called without an active exception") after a clean fit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
