"""`lightning-plateau explain`: every SOURCE kind, the table, JSON, the chart, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedPlateauModel, plateau_of, trainer
from lightning.pytorch.loggers import CSVLogger
from test_chart import EXTREME_HISTORIES
from test_wandb_file import fit_offline_wandb

from lightning_plateau import PlateauConfig, replay
from lightning_plateau._sources import History
from lightning_plateau.cli import _table, main

# best at epoch 5, then nothing better: with patience 10 the cut comes at the end of epoch 16
CLASSIC = [1.0, 0.9, 0.8, 0.7, 0.6] + [0.65] * 15
CLASSIC_REASON = "val_loss has not improved on 0.6000 (epoch 5) for 11 evaluations (> patience 10): lr 1e-3 -> 1e-4"


def explain(
    capsys: pytest.CaptureFixture[str], *args: Any, stdin: str | None = None, monkeypatch: Any = None
) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["explain", *(str(arg) for arg in args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lightning_csv(values: list[float]) -> str:
    """A metrics.csv as CSVLogger writes it: training rows without the monitor, validation rows with it."""
    lines = ["epoch,step,train_loss,val_loss"]
    for epoch, value in enumerate(values):
        lines.append(f"{epoch},{4 * epoch + 1},0.5,")
        lines.append(f"{epoch},{4 * epoch + 3},,{value}")
    return "\n".join(lines) + "\n"


SOURCES = {
    "text": "\n".join(map(str, CLASSIC[:10])) + "\n\n" + "\n".join(map(str, CLASSIC[10:])) + "\n",
    "json": json.dumps(CLASSIC),
    "csv-one-column": "loss\n" + "\n".join(map(str, CLASSIC)) + "\n",
    "lightning-csv": _lightning_csv(CLASSIC),
    "lightning-csv-after-blank-lines": "\n \n" + _lightning_csv(CLASSIC),
}


@pytest.mark.parametrize("kind", list(SOURCES))
@pytest.mark.parametrize("via", ["file", "stdin"])
def test_explain_reads_every_text_source_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str, via: str
) -> None:
    """A text file, a JSON array, a one-column CSV and a Lightning metrics.csv, from a file or stdin, cut at 16."""
    if via == "file":
        source = tmp_path / ("values.json" if kind == "json" else "metrics.csv")
        source.write_text(SOURCES[kind])
        code, out, err = explain(capsys, source, "--json")
    else:
        code, out, err = explain(capsys, "-", "--json", stdin=SOURCES[kind], monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["num_evaluations"] == len(CLASSIC)
    assert [row["value"] for row in report["evaluations"]] == CLASSIC
    assert [cut["evaluation"] for cut in report["cuts"]] == [16]
    expected_monitor = {"csv-one-column": "loss"}.get(kind, "val_loss")
    assert report["config"]["monitor"] == expected_monitor
    epochs = [row["epoch"] for row in report["evaluations"]]
    assert epochs == (list(range(len(CLASSIC))) if kind.startswith("lightning-csv") else [None] * len(CLASSIC))


@pytest.mark.parametrize(
    "line",
    [
        "1.0 0.9 0.8",
        "1.0,0.9,0.8",
        "1.0, 0.9, 0.8",
        "1.0\t0.9\t0.8",
        "1.0 ,\t0.9  0.8",
        "\n  1.0 0.9 0.8  \n\n",
        "1.0,0.9,0.8,",
        "\ufeff1.0 0.9 0.8",
    ],
    ids=[
        "spaces",
        "commas",
        "commas-and-spaces",
        "tabs",
        "mixed-separators",
        "blank-lines-around",
        "trailing-comma",
        "byte-order-mark",
    ],
)
def test_explain_reads_one_line_of_numbers_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    """A history pasted on one line, split by commas, spaces or tabs, is the values in order."""
    code, out, err = explain(capsys, "-", "--json", stdin=line, monkeypatch=monkeypatch)

    assert (code, err) == (0, "")
    report = json.loads(out)
    assert [row["value"] for row in report["evaluations"]] == [1.0, 0.9, 0.8]
    assert report["config"]["monitor"] == "val_loss"


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("1.0 abc 0.8\n", "<stdin> line 1: 'abc' (item 2 of 3) is not a number"),
        ("\n0.5, 0.4, 1e-3x\n", "<stdin> line 2: '1e-3x' (item 3 of 3) is not a number"),
        ("1.0,,0.8\n", "<stdin> line 1: an empty item (item 2 of 3) is not a number"),
        # a line of names alone is still a CSV header, with nothing under it
        ("epoch,val_loss\n", "<stdin>: column 'val_loss' holds no values to replay"),
    ],
    ids=["word-among-numbers", "bad-number-after-blank-line", "empty-item", "header-only-csv"],
)
def test_explain_one_line_with_a_bad_item_names_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str, message: str
) -> None:
    """A one-line history with an item that is not a number: exit code 2 and one line naming the item."""
    code, out, err = explain(capsys, "-", stdin=stdin, monkeypatch=monkeypatch)

    assert (code, out) == (2, "")
    assert err == f"lightning-plateau explain: error: {message}\n"


def test_explain_table_shows_every_evaluation_and_the_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table lists all 20 evaluations; only the 16th is marked CUT, with its reason under it."""
    source = tmp_path / "metrics.csv"
    source.write_text(_lightning_csv(CLASSIC))
    code, out, err = explain(capsys, source, "--patience", "10")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    rows = [line for line in lines if re.match(r"^(CUT|   )\s+\d+\s", line)]
    assert len(rows) == 20
    assert [line.split()[1] for line in rows if line.startswith("CUT")] == ["16"]
    cut = lines.index(next(line for line in rows if line.startswith("CUT")))
    assert lines[cut].split() == ["CUT", "16", "15", "63", "0.6500", "0.6000", "0", "0", "1e-4"]
    assert lines[cut + 1] == f"     -> epoch 15, eval 16: {CLASSIC_REASON.replace('(epoch 5)', '(epoch 4)')}"
    assert lines[cut - 1].split() == ["15", "14", "59", "0.6500", "0.6000", "10", "0", "1e-3"]
    assert lines[-1].startswith("1 cut in 20 evaluations, at epoch 15: lr 1e-3 -> 1e-4.")
    assert "\033[" not in out  # not a terminal: no colour


def test_explain_only_cuts_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--only-cuts keeps the cut rows only; the summary counts every evaluation."""
    source = tmp_path / "values.txt"
    source.write_text("\n".join(["1.0"] * 10))
    code, out, _ = explain(capsys, source, "--patience", "1", "--cooldown", "2", "--lr", "0.1", "--only-cuts")
    assert code == 0
    cut_lines = [line for line in out.splitlines() if line.startswith("CUT")]
    assert [line.split()[1] for line in cut_lines] == ["3", "7"]
    assert len([line for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]) == 0
    assert "2 cuts in 10 evaluations, at evaluations 3, 7: lr 0.1 -> 1e-3." in out


@pytest.mark.parametrize(
    ("values", "args", "expected"),
    [
        pytest.param(
            "0.5\n",
            [],
            "No cut in 1 evaluation: the lr stays 1e-3. It ends with 0 evaluations without improvement;"
            " a cut needs 11 (patience 10).",
            id="no-cut-in-one-evaluation",
        ),
        # NaN is never an improvement: with patience 0 the first evaluation cuts
        pytest.param(
            "nan\n",
            ["--patience", "0"],
            "1 cut in 1 evaluation, at evaluation 1: lr 1e-3 -> 1e-4.",
            id="cut-in-one-evaluation",
        ),
        pytest.param(
            "1.0\n0.5\n0.5\n",
            ["--patience", "1"],
            "No cut in 3 evaluations: the lr stays 1e-3. It ends with 1 evaluation without improvement;"
            " a cut needs 2 (patience 1).",
            id="one-bad",
        ),
        pytest.param(
            "1.0\n1.0\n",
            ["--patience", "0", "--cooldown", "1"],
            "1 cut in 2 evaluations, at evaluation 2: lr 1e-3 -> 1e-4. It ends in cooldown (1 evaluation left).",
            id="in-cooldown",
        ),
    ],
)
def test_explain_summary_counts_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: str, args: list[str], expected: str
) -> None:
    """The summary's last line puts every count in the singular or plural it needs, one evaluation included."""
    source = tmp_path / "values.txt"
    source.write_text(values)
    code, out, _ = explain(capsys, source, *args)
    assert code == 0
    assert out.splitlines()[-1] == expected


def test_explain_colours_cut_rows_on_a_terminal() -> None:
    """On a terminal the cut row and its reason are bold red; the other rows stay plain."""
    result = replay(CLASSIC, PlateauConfig(patience=10))
    history = History(CLASSIC, None, None, None, "values.txt")
    coloured = "".join(_table(result, result, history, "settings: as given", colour=True)).splitlines()
    marked = [line for line in coloured if "\033[1;31m" in line]
    assert len(marked) == 2
    assert marked[0].startswith("\033[1;31mCUT    16")
    assert marked[1] == f"\033[1;31m     -> eval 16: {CLASSIC_REASON.replace('(epoch 5)', '(eval 5)')}\033[0m"


def test_explain_several_groups_and_per_group_min_lr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--lr and --min-lr take one value per param group."""
    source = tmp_path / "values.json"
    source.write_text("[1, 2, 3, 4]")
    code, out, _ = explain(capsys, source, "--patience", "0", "--lr", "0.1", "0.01", "--min-lr", "1e-3", "5e-3")
    assert code == 0
    cuts = [line for line in out.splitlines() if line.startswith("CUT")]
    assert [line.split()[-2:] for line in cuts] == [["[0.01,", "5e-3]"], ["[1e-3,", "5e-3]"]]


def test_explain_json_rows_are_what_json_dumps_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each row of --json, written by hand for speed, is byte for byte json.dumps of the row's fields (null for NaN,
    infinities), across two param groups, epochs and steps, cuts with their reasons, and values of every size."""
    values = [math.nan, math.inf, 3.0, 1e-300, 2.5e17, -0.0, 0.1, 0.1, 0.1, 0.1, -math.inf, 5]
    source = tmp_path / "metrics.csv"
    lines = ["epoch,step,val_loss"] + [f"{i},{i * 7},{v}" for i, v in enumerate(values)]
    source.write_text("\n".join(lines) + "\n")
    code, out, _ = explain(capsys, source, "--patience", "1", "--lr", "0.1", "0.02", "--json")
    assert code == 0

    result = replay(values, PlateauConfig(patience=1), lr=[0.1, 0.02], epochs=range(12), global_steps=range(0, 84, 7))
    expected = []
    for row in result:
        fields = row._asdict()
        fields["lrs"] = list(row.lrs)
        expected.append(
            json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()})
        )
    assert out[out.index('"evaluations": [') :] == '"evaluations": [' + ", ".join(expected) + "]}\n"
    assert any(row.cut for row in result)
    assert any(row.reason for row in result)


def test_explain_json_is_strict_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NaN values and an infinite best (no finite value yet) come out as null, so any JSON parser reads it."""
    source = tmp_path / "values.txt"
    source.write_text("nan\nnan\n1.0\n")
    code, out, _ = explain(capsys, source, "--patience", "1", "--json")
    assert code == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    report = json.loads(out, parse_constant=refuse)
    assert [(row["value"], row["best"]) for row in report["evaluations"]] == [(None, None), (None, None), (1.0, 1.0)]
    assert report["cuts"][0]["best"] is None
    assert report["cuts"][0]["reason"].startswith("eval 2: val_loss has had no finite value to improve on")
    assert set(report) == {
        "source",
        "config",
        "settings",
        "warning",
        "num_evaluations",
        "initial_lrs",
        "final_lrs",
        "cuts",
        "evaluations",
    }


def test_explain_plot_draws_the_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot writes the live callback's chart as a PNG."""
    source = tmp_path / "values.json"
    source.write_text(json.dumps(CLASSIC))
    chart = tmp_path / "charts" / "plateau.png"
    code, _, err = explain(capsys, source, "--only-cuts", "--plot", chart)
    assert code == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert err == f"lightning-plateau explain: chart written to {chart}\n"


@pytest.mark.parametrize(("values", "config"), EXTREME_HISTORIES)
def test_explain_plot_draws_extreme_histories(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    values: list[float],
    config: PlateauConfig,
) -> None:
    """Huge values, an LR cut to 0, NaN or inf only, one evaluation, a flat line: --plot writes the chart, exit 0."""
    chart = tmp_path / "plateau.png"
    policy = ["--patience", config.patience, "--factor", config.factor, "--eps", config.eps, "--lr", 0.1]
    stdin = "\n".join(map(str, values)) + "\n"

    code, _, err = explain(capsys, "-", *policy, "--only-cuts", "--plot", chart, stdin=stdin, monkeypatch=monkeypatch)

    assert (code, err) == (0, f"lightning-plateau explain: chart written to {chart}\n")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_real_csv_logger_file_matches_live_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A metrics.csv written by CSVLogger in a real fit replays to that fit's cuts, at the same epochs."""
    plateau = PlateauConfig(patience=1, factor=0.5)
    model = ScriptedPlateauModel([1.0, 0.5, 0.6, 0.7, 0.8, 0.9], plateau=plateau, lr=0.1, train_batches=2)
    fit = trainer(tmp_path, max_epochs=6, logger=CSVLogger(tmp_path), log_every_n_steps=1)
    fit.fit(model)
    callback = plateau_of(fit)
    assert callback.scheduler is not None
    live = callback.scheduler.cuts
    assert len(live) == 2
    metrics = Path(fit.logger.log_dir) / "metrics.csv"  # type: ignore[union-attr]
    code, out, _ = explain(capsys, metrics, "--patience", "1", "--factor", "0.5", "--lr", "0.1", "--json")
    assert code == 0
    report = json.loads(out)
    assert [row["value"] for row in report["evaluations"]] == [row.value for row in callback.history]
    assert [row["epoch"] for row in report["evaluations"]] == [row.epoch for row in callback.history]
    replayed = [(cut["evaluation"], cut["epoch"], cut["best_epoch"], cut["lrs_after"]) for cut in report["cuts"]]
    assert replayed == [(cut.evaluation, cut.epoch, cut.best_epoch, list(cut.lrs_after)) for cut in live]


def test_explain_real_offline_wandb_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real offline W&B run, as its save_dir, its run directory or its .wandb file, gives the hand-counted cut."""
    # best 0.5 at epoch 2; epochs 3 and 4 are 2 bad ones > patience 1: the cut is at epoch 4
    file = fit_offline_wandb(tmp_path, [1.0, 0.5, 0.6, 0.7, 0.8])
    capsys.readouterr()  # what the fit printed
    for source in (tmp_path, file.parent, file):
        code, out, err = explain(capsys, source, "--patience", "1", "--lr", "0.1", "--only-cuts")
        assert (code, err) == (0, "")
        (cut,) = [line for line in out.splitlines() if line.startswith("CUT")]
        assert cut.split()[:3] == ["CUT", "4", "3"]
        assert "-> epoch 3, eval 4: val_loss has not improved on 0.5000 (epoch 1) for 2 evaluations" in out
    code, out, err = explain(capsys, file, "--monitor", "val_mse", "--json")
    assert code == 0
    assert json.loads(out)["config"]["monitor"] == "val_mse"


BAD_CSV = "epoch,step,val_acc,train_loss\n0,3,0.5,1.0\n"


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        pytest.param({}, ["missing.csv"], "missing.csv: no such file or directory", id="missing-file"),
        pytest.param(
            {"m.csv": BAD_CSV},
            ["m.csv"],
            "m.csv has no column 'val_loss'; the columns are ['epoch', 'step', 'val_acc', 'train_loss']: pick one"
            " with --monitor",
            id="no-default-column",
        ),
        pytest.param(
            {"m.csv": BAD_CSV},
            ["m.csv", "--monitor", "val_los"],
            "m.csv has no column 'val_los'; the columns are ['epoch', 'step', 'val_acc', 'train_loss']",
            id="no-such-column",
        ),
        pytest.param({"v.txt": "0.5\n0.4\nabc\n"}, ["v.txt"], "v.txt line 3: 'abc' is not a number", id="text-nan"),
        pytest.param(
            {"m.csv": "epoch,val_loss\n0,0.5\n1,\n2,oops\n"},
            ["m.csv"],
            "m.csv line 4: val_loss is 'oops', not a number",
            id="csv-not-a-number",
        ),
        pytest.param(
            {"m.csv": "\n\nepoch,val_loss\n0,0.5\n2,oops\n"},
            ["m.csv"],
            "m.csv line 5: val_loss is 'oops', not a number",
            id="csv-after-blank-lines-line-number",
        ),
        pytest.param(
            {"m.csv": "epoch,val_loss\n0.5,0.5\n"},
            ["m.csv"],
            "m.csv line 2: epoch is '0.5', not a whole number",
            id="csv-epoch-not-whole",
        ),
        pytest.param(
            {"v.json": "[0.5, null]"}, ["v.json"], "v.json: item 2 of the JSON array is null, not a number", id="json"
        ),
        pytest.param(
            {"v.json": '{"val_loss": [1]}'},
            ["v.json"],
            "v.json holds a JSON dict; expected an array of numbers",
            id="json-object",
        ),
        pytest.param({"v.json": "[0.5,"}, ["v.json"], "v.json is not valid JSON: Expecting value", id="bad-json"),
        pytest.param({"v.txt": "\n\n"}, ["v.txt"], "v.txt is empty: no values to replay", id="empty-file"),
        pytest.param({"v.json": "[]"}, ["v.json"], "v.json holds no values to replay", id="empty-array"),
        pytest.param(
            {"m.csv": "epoch,val_loss\n0,\n1,\n"},
            ["m.csv"],
            "m.csv: column 'val_loss' holds no values to replay",
            id="empty-column",
        ),
        pytest.param(
            {"b.bin": b"\x89PNG\r\n\x1a\n\xff\xfe"},
            ["b.bin"],
            "b.bin is neither text (CSV, JSON, one value",
            id="binary",
        ),
        pytest.param(
            {"run-x.wandb": b":W&B\xe1\xbe\x00\x01\x02\x03\x04\x05\x06\x07\x08"},
            ["run-x.wandb"],
            "run-x.wandb is corrupt: bad chunk header at byte 7",
            id="corrupt-wandb",
        ),
        pytest.param({}, ["ok.txt", "--patience", "-1"], "`patience` must be an int >= 0, got -1", id="patience"),
        pytest.param(
            {}, ["ok.txt", "--patience", "abc"], "`patience` must be an int >= 0, got 'abc'", id="patience-text"
        ),
        pytest.param({}, ["ok.txt", "--cooldown", "1.5"], "`cooldown` must be an int >= 0, got 1.5", id="cooldown"),
        pytest.param({}, ["ok.txt", "--mode", "maximum"], "argument --mode: invalid choice: 'maximum'", id="mode"),
        pytest.param({}, ["ok.txt", "--factor", "2"], "`factor` must be a float in (0, 1), got 2", id="factor"),
        pytest.param(
            {}, ["ok.txt", "--threshold-mode", "pct"], "argument --threshold-mode: invalid choice: 'pct'", id="tmode"
        ),
        pytest.param(
            {}, ["ok.txt", "--threshold", "-1"], "`threshold` must be a finite float >= 0, got -1", id="thresh"
        ),
        pytest.param({}, ["ok.txt", "--eps", "x"], "`eps` must be a finite float >= 0, got 'x'", id="eps"),
        pytest.param(
            {},
            ["ok.txt", "--min-lr", "-1"],
            "`min_lr` must be a finite float >= 0 or a list of them, got -1",
            id="min-lr",
        ),
        pytest.param(
            {},
            ["ok.txt", "--min-lr", "0", "0"],
            "`min_lr` has 2 values [0.0, 0.0] but the optimizer has 1 param group(s)",
            id="min-lr-groups",
        ),
        pytest.param(
            {}, ["ok.txt", "--lr", "0"], "`lr` must be a finite float > 0 or a non-empty list of them", id="lr"
        ),
        pytest.param({}, ["ok.txt", "--lr", "fast"], "`lr` must be a finite float > 0", id="lr-text"),
    ],
)
def test_explain_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, Any],
    args: list[str],
    message: str,
) -> None:
    """Each bad input gives exit code 2, nothing on stdout, and one line on stderr that says what is wrong."""
    (tmp_path / "ok.txt").write_text("1.0\n")
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    code, out, err = explain(capsys, *args)
    assert (code, out) == (2, "")
    assert err.startswith(f"lightning-plateau explain: error: {message}")
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain"], "the following arguments are required: SOURCE"),
        (["explain", "x.csv", "--bogus"], "unrecognized arguments: --bogus"),
        (["explain", "x.csv", "--patience"], "argument --patience: expected at least one argument"),
        (["unknown"], "argument COMMAND: invalid choice: 'unknown'"),
    ],
)
def test_explain_usage_errors_are_one_line_too(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """argparse's own errors are one line on stderr with exit code 2, not a usage block."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.endswith("(see --help)\n")
    assert captured.err.count("\n") == 1


def test_explain_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the options and exits 0."""
    assert main(["explain", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--monitor", "--threshold-mode", "--min-lr", "--lr", "--only-cuts", "--json", "--plot"):
        assert option in out


def test_explain_console_script_exits_2_with_one_line(tmp_path: Path) -> None:
    """The installed console script, in its own process: a missing column is one line on stderr and exit code 2."""
    script = Path(sys.executable).with_name("lightning-plateau")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    bad = tmp_path / "metrics.csv"
    bad.write_text(BAD_CSV)
    # One run only: the process pays for importing lightning (seconds on a busy machine).
    done = subprocess.run([script, "explain", bad, "--monitor", "loss"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"lightning-plateau explain: error: {bad} has no column 'loss'; the columns are"
        " ['epoch', 'step', 'val_acc', 'train_loss']\n"
    )


@pytest.mark.parametrize(
    "stdin", ["1.0 0.9\n0.8\n0.7\n", "1.0, 0.9\n0.8, 0.7\n"], ids=["split-history", "headerless-table"]
)
def test_explain_several_numbers_on_a_first_line_of_several_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str
) -> None:
    """A first line of numbers followed by more lines is neither guessed as a header nor as a history: refused."""
    code, out, err = explain(capsys, "-", stdin=stdin, monkeypatch=monkeypatch)
    assert (code, out) == (2, "")
    assert "line 1 holds 2 items, numbers among them, and more lines follow" in err


def test_explain_one_value_per_line_each_with_a_trailing_comma(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One value per line, each followed by a separator (pasted from a list), is the history."""
    code, out, err = explain(capsys, "-", "--json", stdin="1.0,\n0.9,\n0.8;\n", monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    assert [row["value"] for row in json.loads(out)["evaluations"]] == [1.0, 0.9, 0.8]


@pytest.mark.parametrize(
    ("values", "options", "ending"),
    [
        # cut to min_lr at evaluation 3; no cut can lower the LR after it
        (
            "1 1 1 1 1",
            ("--patience", "1", "--lr", "0.1", "--min-lr", "0.01"),
            "the lr 0.01 is at its floor (min_lr, eps): no cut can lower it.",
        ),
        ("1 0.9 0.95", ("--patience", "4"), "a cut needs 5 (patience 4)."),
        # the slope needs three values on its line: with patience 1 a cut needs 3, not 2
        ("1 0.9 0.95", ("--patience", "1", "--detector", "slope"), "a cut needs 3 (patience 1)."),
    ],
)
def test_explain_summary_says_what_a_cut_needs_or_that_none_can_come(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    values: str,
    options: tuple[str, ...],
    ending: str,
) -> None:
    """The summary's last sentence: the evaluations a cut needs under the rule in use, or, with the LR at its floor,
    that no cut can lower it (not a count of evaluations that would change nothing)."""
    code, out, _ = explain(capsys, "-", *options, stdin=values + "\n", monkeypatch=monkeypatch)

    assert code == 0
    summary = out.strip().splitlines()[-1]
    assert summary.endswith(ending)
