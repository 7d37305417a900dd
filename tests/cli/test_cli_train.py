"""`biohsic train`: outputs, and one-line errors with exit code 2 for bad input."""
import json
import os
import subprocess
import sys

import pytest

from biohsic.cli import main

pytestmark = pytest.mark.slow  # end-to-end runs of the command line / trainer

FAST = ["--task", "xor", "--epochs", "1", "--hidden", "6,4", "--no-progress"]


def run_cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "biohsic", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_train_writes_the_run_folder_and_ends_with_the_accuracy_line(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *FAST, "--out", str(out))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test_accuracy=") and 0 <= float(last.split("=")[1]) <= 1
    for name in ("config.json", "metrics.jsonl", "summary.json", "curves.png", "checkpoint.pt"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["task"] == "xor" and summary["modulator"] == "exact"


def test_default_run_folder_is_under_runs(tmp_path):
    result = run_cli("train", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("xor-biohsic-seed0-")


def one_line_error(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("args, fragment", [
    (["train", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--task", "xor", "--window", "1"], "--window must be at least 2"),
    (["train", "--task", "xor", "--sigmas", "0.5,-1,1"], "--sigmas must all be positive"),
    (["train", "--task", "xor", "--sigmas", "0.5,1"], "three values"),
    (["train", "--task", "xor", "--sigmas", "a,b,c"], "comma-separated numbers"),
    (["train", "--task", "xor", "--lr", "0"], "--lr must be in (0, 1]"),
    (["train", "--task", "xor", "--lr", "1e38"], "--lr must be in (0, 1]"),
    (["train", "--task", "xor", "--rule", "magic"], "unknown rule 'magic'"),
    (["train", "--task", "xor", "--modulator", "oracle"], "invalid choice"),
    (["train", "--task", "mnist", "--data-dir", "/nonexistent/dir"], "mnist"),
    (["train", "--task", "xor", "--resume"], "--resume needs --out"),
    (["train", "--task", "xor", "--threads", "0"], "--threads must be at least 1"),
    (["train", "--task", "xor", "--modulator", "reservoir"], "--reservoir FILE"),
    (["train", "--task", "xor", "--device", "cuda:7"], "cuda"),
])
def test_bad_input_gives_one_line_and_exit_2(capsys, args, fragment):
    try:
        code, err = one_line_error(capsys, *args)
    except SystemExit as exit_:  # argparse's own errors
        code, err = exit_.code, capsys.readouterr().err.strip().splitlines()
    if fragment == "cuda" and code == 0:
        pytest.skip("a CUDA device is present")
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("biohsic") and fragment in err[0]


def test_truncated_idx_file_is_reported_in_one_line(tmp_path, capsys):
    import gzip
    import struct

    header = struct.pack(">IIII", 2051, 10, 28, 28)
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (tmp_path / name).write_bytes(gzip.compress(header + bytes(100)))
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes(gzip.compress(struct.pack(">II", 2049, 10) + bytes(10)))
    code, err = one_line_error(capsys, "train", "--task", "mnist", "--data-dir", str(tmp_path), "--no-progress")
    assert code == 2 and len(err) == 1 and "images" in err[0]


def test_nan_during_training_exits_2_names_step_layer_and_signal_and_keeps_the_checkpoint(tmp_path, capsys,
                                                                                          monkeypatch):
    from biohsic.modulators import KernelModulator

    signal = KernelModulator.__call__
    calls = []

    def nan_in_layer_2_at_step_37_of_epoch_2(self, *args):
        signals = signal(self, *args)
        calls.append(1)
        if len(calls) == 810 + 37:   # xor: 810 steps per epoch (900 less 90 for validation); one call per step
            signals[1] = signals[1] * float("nan")
        return signals

    monkeypatch.setattr(KernelModulator, "__call__", nan_in_layer_2_at_step_37_of_epoch_2)
    out = tmp_path / "run"
    code, err = one_line_error(capsys, "train", *FAST, "--epochs", "2", "--checkpoint-every", "16", "--out", str(out))
    assert code == 2 and len(err) == 3, err     # the run-folder line, epoch 1, then the error
    assert err[-1].startswith("biohsic: error: training diverged in epoch 2 at step 37 of 810: the learning signal "
                              "of hidden layer 2 became non-finite first (seed 0); the kernels underflow")
    assert "--sigmas" in err[-1] and f"the last good checkpoint (epoch 1, step 32) is kept in {out}" in err[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 1
    assert summary["divergence"] == {"epoch": 2, "step": 37, "time_step": None, "quantity": "signal",
                                     "where": "hidden layer 2", "seeds": [0]}
    assert summary["checkpoint"] == {"epoch": 1, "step": 32}
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_existing_run_is_not_overwritten_and_resume_continues(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *FAST, "--out", out]) == 0
    capsys.readouterr()
    code, err = one_line_error(capsys, "train", *FAST, "--out", out)
    assert code == 2 and "--resume" in err[0]
    assert main(["train", *FAST[:3], "2", *FAST[4:], "--out", out, "--resume"]) == 0
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_a_kernel_too_narrow_diverges_with_advice_about_the_kernel_not_the_learning_rate(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = one_line_error(capsys, "train", *FAST, "--window", "5", "--sigmas", "0.3,0.25,1e-30",
                               "--out", str(out))
    assert code == 2 and err[-1].startswith(
        "biohsic: error: training diverged in epoch 1 at step 5 of 810: the learning signal of hidden layer 1 "
        "became non-finite first (seed 0); the kernels underflow or the signal overflows: widen --sigmas "
        "(now 0.3,0.25,1e-30) or lower --gamma (now 10); no epoch had finished")
    assert "--lr" not in err[-1]
    assert json.loads((out / "summary.json").read_text())["divergence"]["quantity"] == "signal"


def test_a_run_the_compiled_engine_cannot_serve_runs_eagerly_with_one_warning_line(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *FAST, "--rule", "fa", "--engine", "compiled", "--out", str(out))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["biohsic: warning: --engine compiled: rule fa has no compiled step (only biohsic and "
                        "phsic-stream); this run uses the eager engine"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["engine"], summary["compile_seconds"], summary["config"]["engine"]) == ("EagerEngine", 0.0,
                                                                                             "compiled")
