"""`biohsic sweep`: the printed table and the files, a killed sweep that resumes without
rerunning finished trials, a failed trial that does not stop the others, and bad input
(one line, exit 2, nothing written)."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from biohsic.cli import main
from biohsic.train import Trainer

pytestmark = pytest.mark.slow  # end-to-end runs of the command line

FAST = ["--task", "xor", "--epochs", "1", "--hidden", "4,3", "--seeds", "2", "--no-progress"]


def table_rows(text):
    """The cells of each body row of a Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:]]


def test_sweep_prints_the_table_and_writes_every_trial(tmp_path, capsys):
    args = ["sweep", *FAST, "--rules", "bp,biohsic", "--grid", "window=2,4", "--grid", "lr=1e-3,1e-2",
            "--workers", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row[:3] for row in rows] == [[rule, w, lr] for rule in ("bp", "biohsic") for w in ("2", "4")
                                         for lr in ("0.001", "0.01")]
    for name in ("sweep.md", "sweep.csv", "sweep.png", "sweep.json", "bp/window=4,lr=0.01/summary.json",
                 "biohsic/window=2,lr=0.001/config_sources.json"):
        assert (tmp_path / name).exists(), name
    sources = json.loads((tmp_path / "biohsic" / "window=2,lr=0.001" / "config_sources.json").read_text())
    assert sources["window"] == sources["lr"] == "--grid" and sources["epochs"] == "command line"
    assert sources["seeds"] == "command line" and sources["gamma"] == "task default (xor)"


def test_the_seeds_default_to_three_and_the_rule_to_the_runs(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('rule = "readout"\nepochs = 1\nhidden = [4]\n')
    assert main(["sweep", "--task", "xor", "--config", str(toml), "--grid", "batch_size=16", "--workers", "1",
                 "--no-progress", "--out", str(tmp_path / "out")]) == 0
    (row,) = table_rows(capsys.readouterr().out)
    assert row[:3] == ["readout", "16", "3"]


def test_a_failed_trial_is_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    run = Trainer.run

    def fail_at_lr_1e_2(self, *args, **kwargs):
        if self.config.lr == 1e-2:
            raise RuntimeError("simulated failure")
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", fail_at_lr_1e_2)
    code = main(["sweep", *FAST, "--rules", "bp", "--grid", "lr=1e-2,1e-3", "--workers", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    failed, done = table_rows(captured.out)
    assert failed[1] == "0.01" and failed[3] == "failed" and "RuntimeError: simulated failure" in failed[-1]
    assert done[1] == "0.001" and done[3] == "1" and (tmp_path / "bp" / "lr=0.001" / "summary.json").exists()
    assert "1 of 2 trials failed (bp lr=0.01); rerun the same command to retry them" in captured.err


def finished(summary):
    """Whether the run of ``summary`` (its ``summary.json``, written atomically) has completed."""
    return summary.exists() and json.loads(summary.read_text())["status"] == "completed"


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    """The acceptance test: kill the sweep once its first trial has finished, rerun it, and
    get the table of an uninterrupted sweep, the finished trial untouched."""
    args = [sys.executable, "-m", "biohsic", "sweep", *FAST, "--rules", "biohsic", "--grid", "lr=1e-3,2e-3,3e-3,1e-2",
            "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    first = tmp_path / "killed" / "biohsic" / "lr=0.001" / "summary.json"
    deadline = time.monotonic() + 600
    while not finished(first) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert finished(first), "the sweep ended before its first trial finished"
    stamp = first.stat().st_mtime_ns
    assert not (tmp_path / "killed" / "sweep.csv").exists(), "the sweep finished before it was killed"

    resumed = subprocess.run([*args, "--out", str(tmp_path / "killed")], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "biohsic lr=0.001: reusing" in resumed.stderr
    assert resumed.stderr.count("reusing") + resumed.stderr.count("resuming") + resumed.stderr.count(": training") == 4
    assert first.stat().st_mtime_ns == stamp

    whole = subprocess.run([*args, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert (tmp_path / "killed" / "sweep.csv").read_text() == (tmp_path / "whole" / "sweep.csv").read_text()
    with open(tmp_path / "whole" / "sweep.csv", newline="") as handle:
        assert [r["status"] for r in csv.DictReader(handle)] == ["completed"] * 4


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("args, fragment", [
    (["--grid", "windows=2,4"], "unknown setting 'windows'"),
    (["--grid", "window=2,x"], "window takes an integer, got 'x'"),
    (["--grid", "window"], "expected NAME=V1,V2"),
    (["--grid", "seed=1,2"], "seed is set by --seed"),
    (["--grid", "window=1,4"], "--window must be at least 2"),
    (["--grid", "neuron=leaky", "--rules", "bp"], "--neuron leaky"),
    (["--rules", "bp,magic"], "unknown rule 'magic'"),
    (["--preset", "paper-mnist", "--task", "mnist", "--data-dir", "/nonexistent/dir"], "mnist files not found"),
    (["--executor", "ray", "--address", "127.0.0.1:{port}"], "no Ray cluster reachable there"),
    (["--executor", "ray", "--address", "nowhere"], "expected HOST:PORT"),
    (["--address", "127.0.0.1:6379"], "--address is for --executor ray"),
    (["--workers", "0"], "--workers must be at least 1"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, fragment):
    def no_training(self, *args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(Trainer, "run", no_training)
    args = [a.format(port=closed_port()) for a in args]
    code = main(["sweep", *FAST, *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("biohsic: error:") and fragment in err[0]
    assert not (tmp_path / "out").exists()


def test_help_explains_grids_and_clusters(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "NAME=V1,V2" in text and "ray start --head" in text and "hidden=128/64" in text
