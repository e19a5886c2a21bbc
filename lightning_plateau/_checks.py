"""Setup checks: the plateau, early stopping and checkpointing must agree on what "better" means."""

from __future__ import annotations

import re
from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # type: ignore[attr-defined]

from lightning_plateau.config import PlateauConfig

# Strategies that shard the module's parameters or optimizer state across ranks: no rank holds a whole state to keep
# and load. ModelParallelStrategy (Lightning >= 2.4, torch's FSDP2 and tensor parallelism) where Lightning has it.
_MODEL_PARALLEL = getattr(pl.strategies, "ModelParallelStrategy", None)
_SHARDED_STRATEGIES: tuple[type[Strategy], ...] = (
    FSDPStrategy,
    DeepSpeedStrategy,
    *([_MODEL_PARALLEL] if isinstance(_MODEL_PARALLEL, type) else []),
)

# Name tokens that say which way a metric improves. Tokens are the lower-cased name split on / _ - . , so
# "val_acc" and "val/f1" match and "mapping" or "lossless" do not; a trailing number is dropped ("map50").
_HIGHER_IS_BETTER = frozenset(
    {
        "acc",
        "accuracy",
        "auc",
        "auroc",
        "auprc",
        "ap",
        "map",
        "f1",
        "fbeta",
        "precision",
        "recall",
        "r2",
        "iou",
        "miou",
        "jaccard",
        "dice",
        "bleu",
        "rouge",
        "meteor",
        "psnr",
        "ssim",
        "ndcg",
        "mrr",
        "top1",
        "top5",
        "reward",
    }
)
_LOWER_IS_BETTER = frozenset(
    {"loss", "error", "err", "mae", "mse", "rmse", "nll", "perplexity", "ppl", "wer", "cer", "fid", "regret"}
)
_NEGATED = frozenset({"neg", "negative", "minus"})
_TOKEN_SPLIT = re.compile(r"[/_\-.]+")
_TRAILING_NUMBER = re.compile(r"(?<=[a-z])\d+$")


def likely_mode(monitor: str) -> Optional[str]:
    """The mode a metric's name suggests: ``"max"`` for ``val_acc``, ``"min"`` for ``val_loss``, else ``None``.

    ``None`` as well when the name has tokens of both kinds (``loss_acc``): it does not say.
    """
    tokens = set()
    for token in _TOKEN_SPLIT.split(monitor.lower()):
        tokens.add(token)
        tokens.add(_TRAILING_NUMBER.sub("", token))
    higher = bool(tokens & _HIGHER_IS_BETTER)
    lower = bool(tokens & _LOWER_IS_BETTER)
    if higher == lower:
        return None
    if tokens & _NEGATED:  # `neg_loss`, `negative_mse`: the sign flips which way is better
        higher = not higher
    return "max" if higher else "min"


def check_setup(trainer: pl.Trainer, config: PlateauConfig) -> None:
    """Check every callback that judges the plateau's monitor against the plateau; called at fit start.

    Raises:
        MisconfigurationException: if a Lightning ``EarlyStopping`` or ``ModelCheckpoint`` on the plateau's
            monitor uses the other mode.
    """
    plateau = f"PlateauCallback({config.describe()})"
    _check_mode_name(config, plateau)
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if hasattr(callback, "on_plateau_evaluation"):
            continue  # it follows the plateau (PlateauEarlyStopping): nothing of its own to contradict it
        if isinstance(callback, EarlyStopping) and callback.monitor == config.monitor:
            _check_early_stopping(callback, config, plateau)
        elif isinstance(callback, ModelCheckpoint) and callback.monitor == config.monitor:
            _check_checkpoint(callback, config, plateau)


def check_restore(strategy: Strategy, config: PlateauConfig) -> None:
    """Refuse ``restore_best_on_cut`` under a strategy that shards the module's state; called before it is set up.

    Raises:
        MisconfigurationException: if ``config.restore_best_on_cut`` and ``strategy`` is FSDP, DeepSpeed or
            ModelParallel (or a subclass of one).
    """
    if not config.restore_best_on_cut or not isinstance(strategy, _SHARDED_STRATEGIES):
        return
    name = type(strategy).__name__
    base = next(cls.__name__ for cls in _SHARDED_STRATEGIES if isinstance(strategy, cls))
    if base != name:
        name += f" (a {base})"
    raise MisconfigurationException(
        f"PlateauConfig(restore_best_on_cut=True) is not supported with {name}: it shards the module's weights and"
        " optimizer state across ranks, and the plateau keeps and loads a whole copy of them on each rank. Use"
        " restore_best_on_cut=False with this strategy (keep the best weights with ModelCheckpoint instead), or a"
        " strategy that replicates the module (ddp, single device)."
    )


def _check_mode_name(config: PlateauConfig, plateau: str) -> None:
    suggested = likely_mode(config.monitor)
    if suggested is None or suggested == config.mode:
        return
    direction = "higher" if suggested == "max" else "lower"
    rank_zero_warn(
        f"{plateau} watches '{config.monitor}' with mode='{config.mode}', but its name reads as {direction} is"
        f" better: the LR would be cut while it improves. Did you mean PlateauConfig(mode='{suggested}')?",
        category=UserWarning,
    )


def _check_early_stopping(callback: EarlyStopping, config: PlateauConfig, plateau: str) -> None:
    es = f"EarlyStopping(monitor='{callback.monitor}', mode='{callback.mode}', patience={callback.patience})"
    if callback.mode != config.mode:
        raise MisconfigurationException(
            f"{es} and {plateau} judge the same metric in opposite directions: one counts as an improvement what"
            f" the other counts as a plateau. Use EarlyStopping(mode='{config.mode}'), or better replace it with"
            " PlateauEarlyStopping(), which takes monitor, mode and the improvement rule from the plateau."
        )
    if config.window_steps:
        # Lightning's EarlyStopping reads callback_metrics once per epoch or validation: not the plateau's windows.
        rank_zero_warn(
            f"{es} judges '{callback.monitor}' once per epoch (or validation run), on the last value logged, while"
            f" {plateau} judges the mean of each window of {config.window_steps} optimizer steps: their patiences"
            " count different things. Replace it with PlateauEarlyStopping(), which decides on the plateau's windows.",
            category=UserWarning,
        )
        return
    # Both count fresh values of the monitor (EarlyStopping checks once per validation run, or once per epoch
    # when validation runs once per epoch). EarlyStopping stops at its `patience`-th bad check; the scheduler
    # cuts at the (patience+1)-th (the slope detector at the max(patience+1, 3)-th) and then waits `cooldown`
    # evaluations before judging the new LR.
    needed = config.cut_period + 1
    if callback.patience < needed:
        rank_zero_warn(
            f"{es} stops after {callback.patience} evaluations without improvement, but {plateau} cuts the LR"
            f" only after {config.cut_period - config.cooldown}"
            + (f", then waits {config.cooldown} evaluations of cooldown" if config.cooldown else "")
            + ": training stops before the scheduler has judged a reduced LR. Replace it with"
            " PlateauEarlyStopping(), which stops once the LR cannot be cut any more, or give EarlyStopping"
            f" patience={needed} or more.",
            category=UserWarning,
        )


def _check_checkpoint(callback: ModelCheckpoint, config: PlateauConfig, plateau: str) -> None:
    if callback.mode != config.mode:
        raise MisconfigurationException(
            f"ModelCheckpoint(monitor='{callback.monitor}', mode='{callback.mode}') and {plateau} judge the same"
            f" metric in opposite directions: the checkpoint kept as best would be the one the plateau judges"
            f" worst. Use ModelCheckpoint(mode='{config.mode}')."
        )
