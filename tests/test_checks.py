"""Setup checks: contradicting callbacks raise, short patience and suspicious modes warn, agreement is silent."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import pytest
from helpers import ScriptedPlateauModel, trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_plateau import PlateauCallback, PlateauConfig, PlateauEarlyStopping
from lightning_plateau._checks import likely_mode

LOSS = PlateauConfig(patience=2, factor=0.1)
ACC = PlateauConfig(monitor="val_acc", mode="max", patience=2, factor=0.1)


def _fit(
    tmp_path: Any,
    plateau: PlateauConfig,
    callbacks: list[Callback],
    *,
    values: Optional[list[float]] = None,
    where: str = "validation",
    max_epochs: int = 1,
) -> tuple[ScriptedPlateauModel, PlateauCallback]:
    model = ScriptedPlateauModel(
        values or [1.0], plateau=plateau, monitor=plateau.monitor, where=where, train_batches=1
    )
    # An explicit callback, so no chart is drawn at the end of each fit.
    plateau_callback = PlateauCallback(plateau, verbose=False, log_traces=False)
    checkpointing = any(isinstance(cb, ModelCheckpoint) for cb in callbacks)
    fitted = trainer(
        tmp_path,
        max_epochs=max_epochs,
        limit_val_batches=1,
        callbacks=[*callbacks, plateau_callback],
        enable_checkpointing=checkpointing,
    )
    fitted.fit(model)
    return model, plateau_callback


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        ("val_acc", "max"),
        ("val/f1", "max"),
        ("val-accuracy", "max"),
        ("test.auc", "max"),
        ("val_map_50", "max"),
        ("val/map50", "max"),
        ("Val_IoU", "max"),
        ("r2", "max"),
        ("bleu", "max"),
        ("train_loss", "min"),
        ("val_loss", "min"),
        ("val/rmse", "min"),
        ("valid.perplexity", "min"),
        ("error_rate", "min"),
        ("mapping", None),
        ("lossless", None),
        ("accumulated", None),
        ("val_score", None),
        ("loss_acc", None),  # both kinds: the name does not say
        ("neg_loss", "max"),  # negated: higher is better
        ("val/negative_mse", "max"),
        ("neg_acc", "min"),
    ],
)
def test_checks_likely_mode_from_name(monitor: str, expected: Optional[str]) -> None:
    """Whole name tokens, split on / _ - . , decide; substrings of other words do not."""
    assert likely_mode(monitor) == expected


@pytest.mark.parametrize(
    ("plateau", "callback", "match"),
    [
        pytest.param(
            LOSS,
            EarlyStopping(monitor="val_loss", mode="max", patience=10),
            r"EarlyStopping\(monitor='val_loss', mode='max', patience=10\) and PlateauCallback\(val_loss \(min\),"
            r" patience 2, factor 0.1\) judge the same metric in opposite directions.*EarlyStopping\(mode='min'\).*"
            r"PlateauEarlyStopping\(\)",
            id="early-stopping",
        ),
        pytest.param(
            ACC,
            EarlyStopping(monitor="val_acc", mode="min", patience=10),
            r"EarlyStopping\(monitor='val_acc', mode='min', patience=10\) and PlateauCallback\(val_acc \(max\).*"
            r"Use EarlyStopping\(mode='max'\)",
            id="early-stopping-val_acc",
        ),
        pytest.param(
            LOSS,
            ModelCheckpoint(monitor="val_loss", mode="max"),
            r"ModelCheckpoint\(monitor='val_loss', mode='max'\) and PlateauCallback\(val_loss \(min\).*"
            r"Use ModelCheckpoint\(mode='min'\)",
            id="checkpoint",
        ),
    ],
)
def test_checks_opposite_mode_raises(tmp_path: Any, plateau: PlateauConfig, callback: Callback, match: str) -> None:
    """EarlyStopping or ModelCheckpoint on the plateau's monitor with the other mode: an error naming both."""
    with pytest.raises(MisconfigurationException, match=match):
        _fit(tmp_path, plateau, [callback])


@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize(
    ("patience", "cooldown", "es_patience", "warns"),
    [
        (5, 0, 3, True),  # the classic trap: stops before any cut is possible
        (2, 0, 2, True),  # equal patience: stops one evaluation before the cut
        (2, 0, 3, True),  # stops at the evaluation that cuts: the reduced LR is never used
        (2, 0, 4, False),  # one evaluation at the reduced LR
        (2, 2, 5, True),  # stops during the cooldown after the first cut
        (2, 2, 6, False),
    ],
)
def test_checks_early_stopping_patience_too_short(
    tmp_path: Any, patience: int, cooldown: int, es_patience: int, warns: bool
) -> None:
    """Warn exactly when Lightning's EarlyStopping stops before the scheduler has judged a reduced LR."""
    plateau = PlateauConfig(patience=patience, cooldown=cooldown, factor=0.1)
    early_stopping = EarlyStopping(monitor="val_loss", patience=es_patience)
    values = [1.0] * 20
    if warns:
        match = (
            rf"EarlyStopping\(monitor='val_loss', mode='min', patience={es_patience}\) stops after {es_patience}"
            rf" evaluations without improvement, but PlateauCallback\(.*\) cuts the LR only after {patience + 1}.*"
            rf"Replace it with PlateauEarlyStopping\(\).*or give EarlyStopping patience={patience + 2 + cooldown}"
        )
        with pytest.warns(UserWarning, match=match):
            _, plateau_callback = _fit(tmp_path, plateau, [early_stopping], values=values, max_epochs=12)
    else:
        _, plateau_callback = _fit(tmp_path, plateau, [early_stopping], values=values, max_epochs=12)
    # What the warning claims, on a flat metric: no evaluation after a cut was counted against the reduced LR.
    cuts = [row.evaluation for row in plateau_callback.history if row.cut]
    judged = bool(cuts) and any(row.num_bad > 0 for row in plateau_callback.history if row.evaluation > cuts[0])
    assert early_stopping.stopped_epoch > 0
    assert judged is not warns


@pytest.mark.parametrize(("es_patience", "warns"), [(3, True), (4, False)])
def test_checks_early_stopping_patience_too_short_for_the_slope(tmp_path: Any, es_patience: int, warns: bool) -> None:
    """With the slope detector and patience 1 the first cut needs 3 evaluations (a line needs 3 values), not 2."""
    plateau = PlateauConfig(patience=1, detector="slope")
    early_stopping = EarlyStopping(monitor="val_loss", patience=es_patience)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, plateau, [early_stopping], values=[1.0] * 12, max_epochs=8)
    messages = [str(w.message) for w in caught if "EarlyStopping(monitor='val_loss'" in str(w.message)]
    if warns:
        (message,) = messages
        assert "cuts the LR only after 3:" in message
        assert "or give EarlyStopping patience=4 or more" in message
    else:
        assert messages == []


@pytest.mark.parametrize(
    ("plateau", "where", "match"),
    [
        (PlateauConfig(monitor="val_acc", mode="min"), "validation", r"watches 'val_acc' with mode='min'.*mode='max'"),
        (PlateauConfig(monitor="val/f1", mode="min"), "validation", r"'val/f1' with mode='min'.*mode='max'\)\?"),
        (PlateauConfig(monitor="train_loss", mode="max"), "training", r"'train_loss' with mode='max'.*mode='min'\)\?"),
    ],
)
def test_checks_mode_contradicts_name_warns(tmp_path: Any, plateau: PlateauConfig, where: str, match: str) -> None:
    """A name that reads as higher-is-better watched with "min" (or the reverse): a warning naming the likely mode."""
    with pytest.warns(UserWarning, match=match):
        _fit(tmp_path, plateau, [], where=where)


@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize(
    ("plateau", "make_callbacks"),
    [
        pytest.param(LOSS, lambda: [], id="plateau-alone"),
        pytest.param(
            ACC,
            lambda: [
                PlateauEarlyStopping(),
                EarlyStopping(monitor="val_acc", mode="max", patience=4),
                ModelCheckpoint(monitor="val_acc", mode="max"),
            ],
            id="val_acc-all-agree",
        ),
        pytest.param(
            LOSS,
            lambda: [PlateauEarlyStopping(monitor="val_loss", mode="min"), ModelCheckpoint(monitor="val_loss")],
            id="val_loss-stated-twice",
        ),
        # Other metrics are not the plateau's business.
        pytest.param(
            LOSS,
            lambda: [EarlyStopping(monitor="val_mse", mode="max", patience=1), ModelCheckpoint(monitor="val_mse")],
            id="other-monitor",
        ),
        pytest.param(PlateauConfig(monitor="val_mapping", mode="min"), lambda: [], id="mapping-is-not-map"),
    ],
)
def test_checks_agreeing_setup_is_silent(tmp_path: Any, plateau: PlateauConfig, make_callbacks: Any) -> None:
    """Callbacks that agree with the plateau raise nothing and warn nothing (warnings are errors here)."""
    _fit(tmp_path, plateau, make_callbacks(), max_epochs=2)
