"""Identical plateau decisions on every rank: real multi-process DDP over gloo on CPU, in subprocesses.

Each run starts tests/ddp_script.py, whose ranks log *different* values of ``val_loss`` without ``sync_dist``
and write what they saw to ``rank<r>.json``; the tests compare the ranks with each other and with cuts
computed by hand on the per-rank mean.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).with_name("ddp_script.py")
TIMEOUT_S = 150
CUT_MESSAGE = "(> patience 1)"
PARTIAL_MESSAGE = "'val_loss' was logged on some ranks but not on rank(s) [1] of 2"

# Rank 0 improves at every epoch and rank 1 alone would cut after epochs 2 and 4. Their mean is 4, 3, 3, 3, 3, 3:
# with patience 1, best 3 at epoch 1, bad at epochs 2 and 3 -> cut at 3, bad at 4 and 5 -> cut at 5 (0-based).
MEAN_VALUES = [[6, 3, 2, 1, 0.5, 0.25], [2, 3, 4, 5, 5.5, 5.75]]
MEAN_CUT_EPOCHS = [3, 5]
# PlateauEarlyStopping(max_reductions=1) stops the run at the evaluation that calls for the second cut, epoch 5,
# long before max_epochs, without applying it: every rank must stop there, at the first cut's LR.
MEAN_ARGS = ("--max-reductions", "1", "--max-epochs", "9")
MEAN_APPLIED_CUT_EPOCHS = [3]
MEAN_LRS = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05]
MEAN_FINAL_LR = 0.05
MEAN_STOPPED_EPOCH = 5
STOP_MESSAGE = "max reductions: val_loss did not improve"
SUMMARY_PREFIX = "PlateauCallback (val_loss (min)"

# Rank 1 sends NaN, then inf; the means are 4, 3, nan, inf, 0.5, 0.25: two bad evaluations -> cut at epoch 3.
NAN_VALUES = [[4, 3, 2, 1, 0.5, 0.25], [4, 3, math.nan, math.inf, 0.5, 0.25]]
NAN_CUT_EPOCHS = [3]
NAN_LRS = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05]

# Variables that would make a Lightning-launched run join another process group or cluster.
_CLUSTER_ENV = ("MASTER_", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "RANK", "TORCHELASTIC", "SLURM_")


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_CLUSTER_ENV)}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script_args(out: Path, values: Sequence[Sequence[float | None]], *extra: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    return [sys.executable, str(SCRIPT), "--out", str(out), "--values", json.dumps(values), *extra]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Output goes to a file, not a pipe: a rank blocked on a full pipe would block the other in a collective.
    with log.open("wb") as sink:
        return subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> list[tuple[int, str]]:
    """Exit code and output of each of ``processes`` (each leads its own session); kill all past ``TIMEOUT_S``."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        codes = [process.wait(timeout=max(deadline - time.monotonic(), 0.0)) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        pytest.fail(f"a distributed run did not finish within {TIMEOUT_S} s (a rank hung)")
    return [(code, log.read_text(errors="replace")) for code, log in zip(codes, logs, strict=True)]


def _launch(launch: str, out: Path, values: Sequence[Sequence[float | None]], *extra: str) -> list[tuple[int, str]]:
    """Run the script: Lightning starts the ranks (``ddp``, ``ddp_spawn``) or the test starts two "nodes".

    ``two_nodes`` is DDP too, and the quickest: its processes start side by side, where Lightning's launchers
    start rank 1 only once rank 0 has imported everything.

    Returns (exit code, output) per process the test started: one for Lightning's launchers, whose ranks share
    it, one per node for ``two_nodes``.
    """
    if launch in ("ddp", "ddp_spawn"):
        log = out / "output.log"
        return _wait([_start(_script_args(out, values, "--strategy", launch, *extra), _env(), log)], [log])
    assert launch == "two_nodes"
    # What LightningEnvironment reads on each machine of a hand-started multi-node run (no LOCAL_RANK: Lightning
    # then launches the node's single local process itself).
    port = str(_free_port())
    args = _script_args(out, values, "--strategy", "ddp", "--num-nodes", "2", "--devices", "1", *extra)
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2")
    logs = [out / f"node{node}.log" for node in range(2)]
    return _wait([_start(args, _env(NODE_RANK=str(node), **env), logs[node]) for node in range(2)], logs)


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


def _check_ok(runs: list[tuple[int, str]]) -> None:
    for code, output in runs:
        assert code == 0, output[-3000:]


def _max_weight_diff(first: dict[str, Any], second: dict[str, Any]) -> float:
    assert first["weights"].keys() == second["weights"].keys()
    return max(
        abs(a - b)
        for name in first["weights"]
        for a, b in zip(first["weights"][name], second["weights"][name], strict=True)
    )


def _assert_same_on_every_rank(results: list[dict[str, Any]]) -> None:
    """Same LRs, decisions and (bit for bit) weights on both ranks."""
    rank0, rank1 = results
    assert [rank0["global_rank"], rank1["global_rank"]] == [0, 1]
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["lrs"] == rank1["lrs"]
    assert rank0["final_lr"] == rank1["final_lr"]
    assert rank0["cut_epochs"] == rank1["cut_epochs"]
    # json text compares NaN with NaN, which float equality does not
    assert json.dumps(rank0["history"]) == json.dumps(rank1["history"])
    assert _max_weight_diff(rank0, rank1) == 0.0


def _assert_one_collective_per_evaluation(result: dict[str, Any]) -> None:
    """Exactly one all-reduce per judged value, at the step where it was judged; none anywhere else."""
    calls = result["collectives"]
    assert [call["op"] for call in calls] == ["all_reduce"] * len(result["history"])
    assert [call["epoch"] for call in calls] == [row["epoch"] for row in result["history"]]


def _cut_epochs_alone(values: Sequence[float], patience: int = 1) -> list[int]:
    """Cuts torch's own ReduceLROnPlateau would make on one sequence (what a rank alone would do)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=patience, factor=0.5)
    cuts = []
    for epoch, value in enumerate(values):
        before = optimizer.param_groups[0]["lr"]
        scheduler.step(value)
        if optimizer.param_groups[0]["lr"] != before:
            cuts.append(epoch)
    return cuts


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[list[dict[str, Any]], list[str]]]:
    """The MEAN_VALUES run for a launch, started once per module: (per-rank results, outputs)."""
    cache: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}

    def run(launch: str) -> tuple[list[dict[str, Any]], list[str]]:
        if launch not in cache:
            out = tmp_path_factory.mktemp(f"mean-{launch}")
            runs = _launch(launch, out, MEAN_VALUES, *MEAN_ARGS)
            _check_ok(runs)
            cache[launch] = (_results(out), [output for _, output in runs])
        return cache[launch]

    return run


@pytest.mark.parametrize(
    ("values", "expected_cut_epochs"),
    [(MEAN_VALUES, MEAN_CUT_EPOCHS), (NAN_VALUES, NAN_CUT_EPOCHS)],
)
def test_scripted_values_decide_differently_on_rank_zero_alone(
    values: list[list[float]], expected_cut_epochs: list[int]
) -> None:
    """The scripts discriminate: rank 0 deciding alone (Lightning without sync_dist) would cut elsewhere."""
    means = [(a + b) / 2 for a, b in zip(*values, strict=True)]
    assert _cut_epochs_alone(means) == expected_cut_epochs
    assert _cut_epochs_alone(values[0]) != expected_cut_epochs


@pytest.mark.parametrize("launch", ["ddp", "ddp_spawn", "two_nodes"])
def test_distributed_ranks_decide_on_the_mean_without_sync_dist(
    launch: str, mean_run: Callable[[str], tuple[list[dict[str, Any]], list[str]]]
) -> None:
    """Ranks logging different values cut at the hand-computed epochs of the mean; LRs and weights stay equal."""
    results, outputs = mean_run(launch)
    _assert_same_on_every_rank(results)
    for result in results:
        assert result["cut_epochs"] == MEAN_APPLIED_CUT_EPOCHS
        assert result["lrs"] == MEAN_LRS
        assert result["final_lr"] == MEAN_FINAL_LR
        assert [row["value"] for row in result["history"]] == [4.0, 3.0, 3.0, 3.0, 3.0, 3.0]
        assert result["stopped_epoch"] == MEAN_STOPPED_EPOCH
        assert result["stop_rule"] == "max_reductions"
        _assert_one_collective_per_evaluation(result)
    # each cut, the stop and the summary are announced once, by rank zero: in the output Lightning's launchers
    # share between ranks, or in node 0's own
    announcements = {CUT_MESSAGE: len(MEAN_APPLIED_CUT_EPOCHS), STOP_MESSAGE: 1, SUMMARY_PREFIX: 1}
    assert {text: outputs[0].count(text) for text in announcements} == announcements
    assert all(text not in output for text in announcements for output in outputs[1:])


def test_distributed_resume_matches_uninterrupted_run(
    tmp_path: Path, mean_run: Callable[[str], tuple[list[dict[str, Any]], list[str]]]
) -> None:
    """A DDP run stopped after 3 epochs and resumed from its checkpoint ends as the uninterrupted run does."""
    reference, _ = mean_run("two_nodes")
    checkpoints = tmp_path / "checkpoints"
    interrupted = ("--max-reductions", "1", "--max-epochs", "3", "--checkpoint-dir", str(checkpoints))
    _check_ok(_launch("two_nodes", tmp_path / "first", MEAN_VALUES, *interrupted))
    first = _results(tmp_path / "first")
    # stopped with a bad evaluation pending (epoch 2): the resumed run must remember it to cut at epoch 3
    assert [row["value"] for row in first[0]["history"]] == [4.0, 3.0, 3.0]
    assert first[0]["cut_epochs"] == []
    _check_ok(
        _launch("two_nodes", tmp_path / "resumed", MEAN_VALUES, *MEAN_ARGS, "--resume", str(checkpoints / "last.ckpt"))
    )
    resumed = _results(tmp_path / "resumed")
    _assert_same_on_every_rank(resumed)
    for result, uninterrupted in zip(resumed, reference, strict=True):
        assert result["start_epoch"] == 3
        assert result["lrs"] == uninterrupted["lrs"][3:]
        assert result["final_lr"] == uninterrupted["final_lr"]
        assert result["cut_epochs"] == uninterrupted["cut_epochs"] == MEAN_APPLIED_CUT_EPOCHS
        assert result["stopped_epoch"] == uninterrupted["stopped_epoch"] == MEAN_STOPPED_EPOCH
        assert result["history"] == uninterrupted["history"]
        assert _max_weight_diff(result, uninterrupted) == 0.0
        # the restored evaluations are not judged again: one collective for each of the 3 new ones
        assert [call["epoch"] for call in result["collectives"]] == [3, 4, 5]


def test_distributed_restore_best_on_cut_gives_every_rank_the_best_weights(tmp_path: Path) -> None:
    """restore_best_on_cut: at each cut both ranks go back to the weights of the best evaluation, bit for bit."""
    _check_ok(_launch("two_nodes", tmp_path, MEAN_VALUES, "--restore-best-on-cut"))
    results = _results(tmp_path)
    _assert_same_on_every_rank(results)
    for result in results:
        assert result["cut_epochs"] == MEAN_CUT_EPOCHS
        assert result["lrs"] == MEAN_LRS
        # the mean is best (3) at epoch 1, evaluation 2, and never improves after: both cuts go back there
        assert result["restored_from"] == [2, 2]
        best = result["evaluated_weights"][1]
        assert result["evaluated_weights"][3] != best, "the weights moved since the best, or this proves nothing"
        assert result["epoch_start_weights"][4] == best  # epoch 4 trains from the best weights, at the cut LR
        assert result["evaluated_weights"][4] != best
        assert result["weights"] == best  # the cut at the last epoch leaves them
        # the restore adds no collective: each rank loads its own copy
        _assert_one_collective_per_evaluation(result)


def test_distributed_nan_on_one_rank_gives_the_same_decision(tmp_path: Path) -> None:
    """NaN, then inf, on rank 1 only: both ranks judge the same non-finite mean and cut together."""
    _check_ok(_launch("two_nodes", tmp_path, NAN_VALUES))
    results = _results(tmp_path)
    _assert_same_on_every_rank(results)
    for result in results:
        assert result["cut_epochs"] == NAN_CUT_EPOCHS
        assert result["lrs"] == NAN_LRS
        values = [row["value"] for row in result["history"]]
        assert values[:2] == [4.0, 3.0]
        assert math.isnan(values[2])
        assert values[3:] == [math.inf, 0.5, 0.25]
        _assert_one_collective_per_evaluation(result)


# 2 optimizer steps per epoch on each rank (4 samples each): a 3-step warmup from 0.25 x 0.1 covers evaluation 1
# (step 2); the NaN and inf of rank 1 make evaluations 3 and 4 non-finite on both ranks.
WARMUP_ARGS = ("--warmup-steps", "3", "--warmup-start-factor", "0.25")


def _warmup_lr(step: int) -> float:
    return 0.1 * (0.25 + (1 - 0.25) * step / 3) if step < 3 else 0.1


def test_distributed_warmup_and_skipped_nan_are_the_same_on_both_ranks(tmp_path: Path) -> None:
    """Warmup and on_nonfinite='skip' under DDP: the same LR at every step, no collective per step, same rows."""
    _check_ok(_launch("two_nodes", tmp_path, NAN_VALUES, *WARMUP_ARGS, "--on-nonfinite", "skip"))
    results = _results(tmp_path)
    _assert_same_on_every_rank(results)
    assert results[0]["batch_lrs"] == results[1]["batch_lrs"]
    for result in results:
        assert result["batch_lrs"] == [[step, _warmup_lr(step)] for step in range(12)]
        flags = [(row.get("warmup", False), row.get("skipped", False)) for row in result["history"]]
        assert flags == [(True, False), (False, False), (False, True), (False, True), (False, False), (False, False)]
        # means 4 (warmup), 3 (best), nan, inf (skipped), 0.5, 0.25 (better): never a cut, where "bad" cuts at 3
        assert result["cut_epochs"] == []
        _assert_one_collective_per_evaluation(result)


def test_distributed_nan_on_one_rank_raises_on_every_rank(tmp_path: Path) -> None:
    """on_nonfinite='raise' with NaN on rank 1 only: both ranks stop with the same error; none hangs."""
    runs = _launch("two_nodes", tmp_path, NAN_VALUES, "--on-nonfinite", "raise")
    expected = "val_loss is nan at evaluation 3 (epoch 2, global step 6)"
    for node, (code, output) in enumerate(runs):
        assert code != 0, f"node {node} exited 0:\n{output[-3000:]}"
        assert expected in output, output[-3000:]
    for result in _results(tmp_path):
        assert result["error"].startswith(f"ValueError: {expected}")
        assert [row["value"] for row in result["history"]] == [4.0, 3.0]


@pytest.mark.parametrize("values", [[[4, 3, 2], [None]]])
def test_distributed_monitor_on_one_rank_fails_every_rank_clearly(
    tmp_path: Path, values: list[list[Optional[float]]]
) -> None:
    """Monitor logged on rank 0 only: both ranks raise our error and exit non-zero; none hangs."""
    runs = _launch("two_nodes", tmp_path, values, "--max-epochs", "2")
    for node, (code, output) in enumerate(runs):
        assert code != 0, f"node {node} exited 0:\n{output[-3000:]}"
        assert PARTIAL_MESSAGE in output, output[-3000:]
    for result in _results(tmp_path):
        assert result["error"].startswith("RuntimeError: PlateauCallback: " + PARTIAL_MESSAGE)
        assert result["history"] == []
        assert result["lrs"] == [0.1]


def test_distributed_several_val_dataloaders_decide_on_the_mean(tmp_path: Path) -> None:
    """The monitor logged from the second of 2 val dataloaders: same cuts on both ranks, one all-reduce each."""
    _check_ok(_launch("two_nodes", tmp_path, MEAN_VALUES, "--loaders", "2"))
    results = _results(tmp_path)
    _assert_same_on_every_rank(results)
    for result in results:
        assert result["cut_epochs"] == MEAN_CUT_EPOCHS
        assert result["lrs"] == MEAN_LRS
        assert [row["value"] for row in result["history"]] == [4.0, 3.0, 3.0, 3.0, 3.0, 3.0]
        _assert_one_collective_per_evaluation(result)


# Windows of 3 optimizer steps (2 steps an epoch, 6 epochs): each rank logs its own train_loss at every step. Rank 0's
# window sums are 18, 9, 6, 3, rank 1's 6, 9, 12, 15: the means over both ranks' 6 values are 4, 3, 3, 3, so with
# patience 1 the cut comes in steps 10-12. Rank 0 alone (6, 3, 2, 1) would never cut. No window's mean equals the
# mean of its later values, so a resume that lost (or took one rank's) partial window would judge another value.
WINDOW_VALUES = [[9, 6, 3, 2, 3, 4, 3, 2, 1, 2, 1, 0], [1, 2, 3, 5, 2, 2, 2, 4, 6, 6, 4, 5]]
WINDOW_ARGS = ("--window-steps", "3", "--max-epochs", "6")
WINDOW_HISTORY = [([1, 3], 4.0), ([4, 6], 3.0), ([7, 9], 3.0), ([10, 12], 3.0)]
WINDOW_CUT = [10, 12]


def _assert_windows(result: dict[str, Any]) -> None:
    assert [(row["window"], row["value"]) for row in result["history"]] == WINDOW_HISTORY
    assert [row["window"] for row in result["history"] if row["cut"]] == [WINDOW_CUT]
    assert result["final_lr"] == 0.05


def test_distributed_windows_judge_the_mean_over_ranks(tmp_path: Path) -> None:
    """Ranks logging different per-step values judge the hand-computed mean over ranks of each window, identically,
    with one all-reduce per window and none per step."""
    assert [sum(rank[k : k + 3]) for rank in WINDOW_VALUES for k in (0, 3, 6, 9)] == [18, 9, 6, 3, 6, 9, 12, 15]
    _check_ok(_launch("two_nodes", tmp_path, WINDOW_VALUES, *WINDOW_ARGS))
    results = _results(tmp_path)
    _assert_same_on_every_rank(results)
    for result in results:
        _assert_windows(result)
        assert [(call["op"], call["global_step"]) for call in result["collectives"]] == [
            ("all_reduce", 3),
            ("all_reduce", 6),
            ("all_reduce", 9),
            ("all_reduce", 12),
        ]


def test_distributed_windows_mid_window_resume_matches_uninterrupted(tmp_path: Path) -> None:
    """Resumed from a checkpoint written at step 4, inside the window of steps 4-6, both ranks judge what the
    uninterrupted run judged: the checkpoint holds the partial window summed over ranks, restored on rank 0."""
    checkpoints = tmp_path / "checkpoints"
    saving = ("--checkpoint-dir", str(checkpoints), "--every-n-train-steps", "2")
    _check_ok(_launch("two_nodes", tmp_path / "full", WINDOW_VALUES, *WINDOW_ARGS, *saving))
    full = _results(tmp_path / "full")
    _assert_same_on_every_rank(full)
    for result in full:
        _assert_windows(result)
        # a checkpoint costs one all-reduce of the partial window (steps 2, 4, ..., 12), besides each window's
        steps = [call["global_step"] for call in result["collectives"]]
        assert sorted(steps) == [2, 3, 4, 6, 6, 8, 9, 10, 12, 12]
    checkpoint = checkpoints / "epoch=1-step=4.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    (state,) = [state for key, state in saved["callbacks"].items() if key.startswith("PlateauCallback")]
    # step 4's values on both ranks: 2 on rank 0, 5 on rank 1
    assert state["window"] == {"steps": 3, "total": 7.0, "count": 2, "closed_at": 3}
    _check_ok(_launch("two_nodes", tmp_path / "resumed", WINDOW_VALUES, *WINDOW_ARGS, "--resume", str(checkpoint)))
    resumed = _results(tmp_path / "resumed")
    _assert_same_on_every_rank(resumed)
    for result, uninterrupted in zip(resumed, full, strict=True):
        _assert_windows(result)
        assert result["history"] == uninterrupted["history"]
        assert [call["global_step"] for call in result["collectives"]] == [6, 9, 12]


# Rank 0 falls, rank 1 rises: their mean is 3 at every epoch. The slope detector (patience 1: a window of 3 values)
# finds no decrease in 3 values -> cut at epoch 2, and again 3 values after the cut emptied its history -> epoch 5;
# torch's rule on the same mean (or on its moving average, 3 throughout) cuts at epochs 2 and 4, and rank 0 alone,
# falling, would never cut.
SLOPE_VALUES = [[6, 5, 4, 3, 2, 1], [0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize(
    ("args", "fields", "cut_epochs", "counts", "smoothed"),
    [
        (
            ("--detector", "slope", "--slope-robust"),
            {"detector": "slope", "slope_robust": True},
            [2, 5],
            [0, 0, 0, 0, 0, 0],  # 0 after each cut
            [None] * 6,
        ),
        (("--smoothing", "0.5"), {"smoothing": 0.5}, [2, 4], [0, 1, 0, 1, 0, 1], [3.0] * 6),
    ],
    ids=["slope", "smoothing"],
)
def test_distributed_slope_detector_decides_on_the_mean_on_both_ranks(
    tmp_path: Path,
    args: tuple[str, ...],
    fields: dict[str, Any],
    cut_epochs: list[int],
    counts: list[int],
    smoothed: list[Optional[float]],
) -> None:
    """detector='slope', or smoothing: both ranks judge the mean, cut together, one all-reduce per evaluation."""
    from lightning_plateau import PlateauConfig, replay

    config = PlateauConfig(patience=1, factor=0.5, **fields)
    means = [(a + b) / 2 for a, b in zip(*SLOPE_VALUES, strict=True)]
    assert [cut.epoch for cut in replay(means, config, epochs=list(range(6))).cuts] == cut_epochs
    assert replay(SLOPE_VALUES[0], config).cuts == []
    assert _cut_epochs_alone(means) == [2, 4]
    _check_ok(_launch("two_nodes", tmp_path, SLOPE_VALUES, *args))
    results = _results(tmp_path)
    _assert_same_on_every_rank(results)
    for result in results:
        assert result["cut_epochs"] == cut_epochs
        assert [row["num_bad"] for row in result["history"]] == counts
        assert [row.get("smoothed") for row in result["history"]] == smoothed
        lrs = [0.1 * 0.5 ** sum(epoch > cut for cut in cut_epochs) for epoch in range(6)]
        assert result["lrs"] == lrs
        _assert_one_collective_per_evaluation(result)
