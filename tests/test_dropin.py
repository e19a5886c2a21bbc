"""Drop-in: the lines users already have (torch's keywords, EarlyStopping-style callbacks) keep working."""

from __future__ import annotations

from typing import Any

import pytest

from lightning_plateau import PlateauCallback, PlateauConfig
from tests.helpers import ScriptedModel, trainer

ACC = [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]


@pytest.mark.parametrize(
    ("keywords", "config"),
    [
        (
            {"monitor": "val_acc", "mode": "max", "patience": 1},
            PlateauConfig(monitor="val_acc", mode="max", patience=1),
        ),
        ({"patience": 3, "factor": 0.5, "cooldown": 1}, PlateauConfig(patience=3, factor=0.5, cooldown=1)),
        (
            {"min_lr": [1e-3], "threshold": 0.1, "threshold_mode": "abs"},
            PlateauConfig(min_lr=[1e-3], threshold=0.1, threshold_mode="abs"),
        ),
        ({"eps": 0.0, "strict": False}, PlateauConfig(eps=0.0, strict=False)),
    ],
)
def test_dropin_callback_shorthand_equals_the_config_form(keywords: dict[str, Any], config: PlateauConfig) -> None:
    """`PlateauCallback(monitor=..., mode=..., patience=...)` builds the same config as `PlateauCallback(config)`."""
    assert PlateauCallback(**keywords).config == PlateauCallback(config).config == config
    assert PlateauCallback(**keywords).state_key == PlateauCallback(config).state_key


def test_dropin_callback_shorthand_fits_as_the_config_form(tmp_path: Any) -> None:
    """The shorthand and the config form give the same cuts on the same run."""
    histories = []
    for callback in (
        PlateauCallback(monitor="val_acc", mode="max", patience=1, factor=0.5, verbose=False, log_traces=False),
        PlateauCallback(PlateauConfig(monitor="val_acc", mode="max", patience=1, factor=0.5), verbose=False),
    ):
        trainer(tmp_path, callbacks=[callback], max_epochs=8).fit(ScriptedModel(ACC, monitor="val_acc"))
        assert callback.scheduler is not None
        histories.append(callback.history)
    assert histories[0] == histories[1]
    assert [row.evaluation for row in histories[0] if row.cut] == [4, 7]


def test_dropin_callback_config_and_keywords_together_are_refused() -> None:
    """A config and keyword fields together: a TypeError that names the keywords and both ways to write it."""
    with pytest.raises(TypeError, match=r"got a config and the keyword\(s\) patience=3: give one or the other"):
        PlateauCallback(PlateauConfig(), patience=3)


def test_dropin_callback_keyword_out_of_range_names_the_field() -> None:
    """A bad keyword value is refused as the config refuses it: the field, the value and what is allowed."""
    with pytest.raises(ValueError, match=r"`factor` must be a float in \(0, 1\).*got 1\.5"):
        PlateauCallback(factor=1.5)
