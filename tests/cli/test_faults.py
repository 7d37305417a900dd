"""Faults: `biohsic train` processes killed with SIGKILL at chosen moments (at the start,
inside an epoch, while a checkpoint is written, between an epoch's metrics and its
checkpoint) and resumed end with the same numbers, bit for bit, as an uninterrupted run —
rate and leaky units, K = 1 and 3; two writers of one folder; damaged checkpoints.

The moments are exact, not timed: the process is started with ``BIOHSIC_FAULT=<point>:<n>``
(see :func:`biohsic.runs.fault_point`) and stops itself there (SIGSTOP); the test waits for
it to be stopped, then kills it with SIGKILL, as ``kill -9`` would."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biohsic.cli import main
from biohsic.runs import CHECKPOINT, FAULT_ENV, LOCK, PREVIOUS_CHECKPOINT, TEMPORARY_SUFFIX, RunFolderLock

pytestmark = pytest.mark.slow   # end-to-end runs of the command line, several processes each

RUNS = {
    "rate": ["--task", "xor", "--hidden", "6,4", "--window", "4", "--epochs", "1", "--checkpoint-every", "200"],
    "rate, K=3": ["--task", "xor", "--hidden", "5,3", "--window", "5", "--epochs", "1", "--seeds", "3", "--seed", "4",
                  "--checkpoint-every", "300"],
    "leaky, K=3": ["--task", "linear", "--hidden", "3", "--window", "3", "--epochs", "1", "--neuron", "leaky",
                   "--steps-per-sample", "2", "--seeds", "3", "--checkpoint-every", "200"],
}
TIMING = ("wall_seconds", "samples_per_second")


def environment(fault: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != FAULT_ENV}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env[FAULT_ENV] = fault
    return env


def start(folder: Path, args: list[str], fault: str | None = None, resume: bool = False) -> subprocess.Popen:
    command = [sys.executable, "-m", "biohsic", "train", *args, "--out", str(folder), "--no-progress"]
    return subprocess.Popen(command + (["--resume"] if resume else []), env=environment(fault),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when_stopped(process: subprocess.Popen) -> None:
    """Wait until ``process`` stops itself at its fault point, then SIGKILL it."""
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the process ended without reaching its fault point: {process.stderr.read()}"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def finish(process: subprocess.Popen) -> tuple[str, list[str]]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return out, err.splitlines()


def outcome(folder: Path) -> dict:
    """What a run ended with: its metrics (without timings), final checkpoint and summary."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    checkpoint = torch.load(folder / CHECKPOINT, weights_only=True)
    summary = json.loads((folder / "summary.json").read_text())
    return {"metrics": [{k: v for k, v in row.items() if k not in TIMING} for row in rows],
            "state": {part: checkpoint[part] for part in ("network", "optimizer", "rule", "epoch", "step")},
            "summary": {k: summary[k] for k in ("status", "epochs_completed", "per_model", "test_accuracy")}}


def assert_same(x, y, where="run"):
    if isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x:
            assert_same(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        assert x == y, where


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each run of RUNS, never interrupted (computed when first needed): its folder, what it
    ended with and what it printed."""
    done: dict[str, tuple[Path, dict, str]] = {}

    def get(name: str) -> tuple[Path, dict, str]:
        if name not in done:
            folder = tmp_path_factory.mktemp("whole") / "run"
            out, _ = finish(start(folder, RUNS[name]))
            done[name] = folder, outcome(folder), out
        return done[name]

    return get


#: Each run killed at several moments in turn, then resumed to its end.
KILLS = {
    "rate": ["started:1", "chunk:3", "checkpoint-written:2"],
    "rate, K=3": ["checkpoint-rotated:2", "epoch-end:1"],
    "leaky, K=3": ["chunk:2", "checkpoint-written:1"],
}


@pytest.mark.parametrize("name", KILLS)
def test_killed_runs_resume_to_the_uninterrupted_numbers(tmp_path, uninterrupted, name):
    folder = tmp_path / "run"
    for fault in KILLS[name]:
        kill_when_stopped(start(folder, RUNS[name], fault=fault, resume=folder.exists()))
        assert (folder / LOCK).exists()   # the killed writer's lock file stays behind...
        if fault.startswith("checkpoint-written"):
            assert list(folder.glob(f".{CHECKPOINT}.*{TEMPORARY_SUFFIX}")), "not killed inside a checkpoint write"
        if fault.startswith("checkpoint-rotated"):
            assert not (folder / CHECKPOINT).exists() and (folder / PREVIOUS_CHECKPOINT).exists()
    out, err = finish(start(folder, RUNS[name], resume=True))   # ...and blocks nobody
    _, expected, expected_out = uninterrupted(name)
    assert_same(outcome(folder), expected)
    assert out == expected_out
    assert not list(folder.glob(".*")), "a lock or temporary file was left behind"
    if KILLS[name][-1].startswith("checkpoint-rotated"):
        assert any("checkpoint.pt is missing; continuing from checkpoint-previous.pt" in line for line in err)


def test_a_second_writer_is_refused_and_a_killed_writer_blocks_nobody(tmp_path):
    folder = tmp_path / "run"
    args = RUNS["rate"]
    first = start(folder, args, fault="started:1")
    _, status = os.waitpid(first.pid, os.WUNTRACED)   # stopped while it holds the folder
    assert os.WIFSTOPPED(status)
    try:
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        for extra in ([], ["--resume"], ["--overwrite"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(["train", *args, "--out", str(folder), "--no-progress", *extra])
            lines = err.getvalue().splitlines()
            assert code == 2 and len(lines) == 1, lines
            assert lines[0].startswith(f"biohsic: error: {folder} is being written by process {first.pid} (")
            assert "biohsic train" in lines[0] and lines[0].endswith("wait for it to finish or choose another --out")
            assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    with RunFolderLock(folder):   # its lock file stays behind and blocks nobody (resumes: see above)
        assert (folder / LOCK).read_text().split()[0] == str(os.getpid())


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
    else:
        weight = torch.load(path, weights_only=True)["network"]["hidden.0.weight"]
        at = bytes(data).find(weight.numpy().tobytes())
        assert at > 0
        data[at + 3] ^= 0x20
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_a_damaged_latest_checkpoint_is_passed_over_with_one_warning_line(tmp_path, uninterrupted, how):
    whole, expected, expected_out = uninterrupted("rate")
    folder = tmp_path / "run"
    shutil.copytree(whole, folder)
    damage(folder / CHECKPOINT, how)              # the end of the epoch; the previous is at step 800
    out, err = finish(start(folder, RUNS["rate"], resume=True))
    warnings = [line for line in err if line.startswith("biohsic: warning:")]
    assert len(warnings) == 1 and "continuing from checkpoint-previous.pt (epoch 0, step 800)" in warnings[0]
    assert ("damaged" if how == "bit-flipped" else "not a readable biohsic file") in warnings[0]
    assert any(line.startswith("resuming") and "epoch 1, step 800 of 810" in line for line in err)
    assert_same(outcome(folder), expected)
    assert out == expected_out
