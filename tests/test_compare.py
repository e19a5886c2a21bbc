"""What if? The same history replayed under several policies: cuts, LR spans and where early stopping would end."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedPlateauModel, plateau_of, trainer

from lightning_plateau import PlateauConfig, PlateauEarlyStopping, replay
from lightning_plateau.cli import main
from lightning_plateau.compare import compare

# best at evaluation 5, then flat: the classic question, with room for several cuts and an early stop.
HISTORY = [1.0, 0.9, 0.8, 0.7, 0.6] + [0.65] * 30


def test_compare_replays_every_combination_as_replay_does() -> None:
    """One outcome per combination, in grid order; each one's cuts are replay()'s under that policy."""
    outcomes = compare(HISTORY, PlateauConfig(min_lr=1e-6), lr=1e-3, patience=[2, 5, 10], factor=[0.1, 0.5])
    assert [outcome.varied for outcome in outcomes] == [
        {"patience": p, "factor": f} for p in (2, 5, 10) for f in (0.1, 0.5)
    ]
    for outcome in outcomes:
        expected = replay(HISTORY, PlateauConfig(min_lr=1e-6, **outcome.varied), lr=1e-3)
        assert outcome.cuts == expected.cuts
        assert outcome.final_lrs == expected.final_lrs
        assert sum(count for _, count in outcome.evaluations_per_lr) == len(HISTORY)
    classic = outcomes[4]  # patience 10, factor 0.1: the cut at evaluation 16
    assert classic.first_cut is not None
    assert classic.first_cut.evaluation == 16
    assert classic.evaluations_per_lr[0] == ((1e-3,), 16)


def test_compare_early_stop_is_where_plateau_early_stopping_stops_a_real_fit(tmp_path: Path) -> None:
    """The early stop compare() reports is the evaluation where a live PlateauEarlyStopping stops the same run."""
    config = PlateauConfig(patience=1, factor=0.1, min_lr=1e-4)
    (outcome,) = compare(HISTORY, config, lr=0.1, epochs=list(range(len(HISTORY))), patience=[1])
    assert outcome.early_stop is not None
    stopper = PlateauEarlyStopping()
    fit = trainer(tmp_path, max_epochs=len(HISTORY), callbacks=[stopper])
    fit.fit(ScriptedPlateauModel(HISTORY, plateau=config, lr=0.1))
    assert len(plateau_of(fit).history) == outcome.early_stop
    assert stopper.stopping_reason_message == outcome.early_stop_reason


def test_compare_refuses_unknown_fields_and_empty_choices() -> None:
    """A grid key that is no PlateauConfig field, or a setting with nothing to try, is refused by name."""
    with pytest.raises(ValueError, match=r"\['patiance'\] are not among them"):
        compare(HISTORY, patiance=[1, 2])
    with pytest.raises(ValueError, match=r"no value to try for \['factor'\]"):
        compare(HISTORY, factor=[])


def _explain(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: Any) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(" ".join(map(str, HISTORY))))
    capsys.readouterr()
    code = main(["explain", "-", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_several_values_print_one_comparison_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--patience 2 5 10 --factor 0.1 0.5`: one row per policy with its cuts, first cut, final LR and stop."""
    code, out, err = _explain(capsys, monkeypatch, "--patience", 2, 5, 10, "--factor", 0.1, 0.5, "--lr", "1e-3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "<stdin>: 35 evaluations of val_loss (min), 6 policies (factor x patience)"
    assert lines[1].startswith("settings: factor 0.1/0.5, patience 2/5/10 (given);")
    rows = [line for line in lines if line.startswith("factor ")]
    assert len(rows) == 6
    classic = next(row for row in rows if row.startswith("factor 0.1, patience 10 "))
    assert classic.split()[4:6] == ["2", "16"]  # cuts, first cut


def test_explain_comparison_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json gives each policy's cuts, LR spans and early stop; --plot overlays their LRs on the metric."""
    chart = tmp_path / "what-if.png"
    code, out, err = _explain(capsys, monkeypatch, "--patience", 2, 10, "--json", "--plot", chart)
    assert code == 0
    assert err == f"lightning-plateau explain: chart written to {chart}\n"
    report = json.loads(out)
    assert report["varied"] == ["patience"]
    assert [policy["varied"] for policy in report["policies"]] == [{"patience": 2}, {"patience": 10}]
    assert [cut["evaluation"] for cut in report["policies"][1]["cuts"]][:1] == [16]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_comparison_refuses_only_cuts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--only-cuts shows one policy's rows: with several policies it is refused, saying why."""
    code, out, err = _explain(capsys, monkeypatch, "--patience", 2, 10, "--only-cuts")
    assert (code, out) == (2, "")
    assert "with several values per option the table compares them" in err


def test_explain_comparison_plot_of_several_detectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--detector best slope --plot`: the table and the chart, each policy named by its detector."""
    chart = tmp_path / "detectors.png"
    code, out, err = _explain(capsys, monkeypatch, "--patience", 2, "--detector", "best", "slope", "--plot", chart)
    assert (code, err) == (0, f"lightning-plateau explain: chart written to {chart}\n")
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("detector ")] == [
        ["detector", "best"],
        ["detector", "slope"],
    ]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("patience", "where"),
    [(["3", "8"], "the policy patience 8"), (["8"], "the options given")],
    ids=["what-if-table", "one-policy"],
)
def test_explain_a_stored_setting_that_does_not_fit_a_what_if_names_its_origin_and_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patience: list[str], where: str
) -> None:
    """The run stored slope_window 6 (patience 3); --patience 8 cannot keep it: the error says the 6 is the run's, which
    policy failed and which option replaces it; given that option, the table is made."""
    (tmp_path / "metrics.csv").write_text("epoch,val_loss\n" + "".join(f"{e},{v}\n" for e, v in enumerate(HISTORY)))
    (tmp_path / "hparams.yaml").write_text("plateau:\n  patience: 3\n  detector: slope\n  slope_window: 6\n")
    capsys.readouterr()
    code = main(["explain", str(tmp_path), "--patience", *patience])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert f"{where} cannot be replayed with the run's slope_window 6 (from {tmp_path / 'hparams.yaml'}):" in err
    assert "`slope_window` must be more than patience (8)" in err
    assert "Give --slope-window 0 (patience + 1) in its place" in err
    assert main(["explain", str(tmp_path), "--patience", *patience, "--slope-window", "0"]) == 0
