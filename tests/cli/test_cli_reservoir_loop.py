"""`biohsic reservoir train-task` then `biohsic train --modulator reservoir`, through the
`biohsic` entry point: the run, and one-line errors with exit code 2 for bad input."""
from __future__ import annotations

import json

import pytest
import torch

import biohsic.train
from biohsic.cli import main
from biohsic.reservoir import Reservoir

pytestmark = pytest.mark.slow  # end-to-end runs of the command line / trainer

NET = ["--task", "xor", "--hidden", "6,4", "--window", "4"]
SMALL = ["--units", "30", "--steps-per-sample", "2", "--samples", "64", "--streams", "4", "--washout", "2"]
RUN = [*NET, "--epochs", "1", "--modulator", "reservoir", "--no-progress"]


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


@pytest.fixture(autouse=True)
def small_xor(monkeypatch):
    """Train on 120 of xor's 900 training samples: the loop, not the accuracy, is tested."""
    load = biohsic.train.load_task

    def first_samples(*args, **kwargs):
        data = load(*args, **kwargs)
        return data.first_training_samples(120)

    monkeypatch.setattr(biohsic.train, "load_task", first_samples)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "xor"
    assert main(["reservoir", "train-task", *NET, *SMALL, "--out", str(out)]) == 0
    return out


def test_train_task_writes_one_reservoir_per_hidden_layer(folder):
    reservoirs = [Reservoir.load(folder / f"layer{l}.pt", expect_window=4) for l in range(2)]
    assert [r.info["stream_kind"] for r in reservoirs] == ["clusters"] * 2  # train-task's default stream
    dims = [r.config for r in reservoirs]
    assert [(c.d_x, c.d_y, c.d_z, c.units) for c in dims] == [(2, 2, 6, 30), (2, 2, 4, 30)]
    assert [(c.gamma, c.sigmas) for c in dims] == [(10.0, (0.3, 0.25, 2.0))] * 2  # the xor task's target


@pytest.mark.parametrize("learning", ["frozen", "force"])
def test_closed_loop_run_records_its_mode_and_keeps_frozen_readouts(folder, tmp_path, capsys, learning):
    before = [Reservoir.load(folder / f"layer{l}.pt").w_out.clone() for l in range(2)]
    out = tmp_path / "run"
    files = str(folder) if learning == "frozen" else f"{folder / 'layer0.pt'},{folder / 'layer1.pt'}"
    code, stdout, err = cli(capsys, "train", *RUN, "--reservoir", files, "--reservoir-learning", learning,
                            "--seeds", "2", "--out", str(out))
    assert code == 0, err
    assert stdout.strip().startswith("test_accuracy=")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modulator"] == "reservoir" and summary["config"]["reservoir_learning"] == learning
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(last["reservoir_update_cosine"]) == 2 and all(-1 <= c <= 1 for c in last["reservoir_signal_cosine"])
    state = torch.load(out / "checkpoint.pt", weights_only=True)["rule"]["modulator"]
    assert state["learning"] == learning and len(state["reservoirs"]) == 2
    after = [Reservoir.load(folder / f"layer{l}.pt").w_out for l in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the files are never written
    if learning == "frozen":
        assert "w_out" not in state["reservoirs"][0]
    else:
        assert not torch.equal(state["reservoirs"][0]["w_out"], before[0].to(state["reservoirs"][0]["w_out"]))


@pytest.mark.parametrize("change, fragment", [
    (["--window", "5"], "was trained for window N=4, this run needs N=5"),
    (["--hidden", "8,4"], "sizes 2/2/6, this run needs 2/2/8"),
    (["--gamma", "3"], "γ=10, σ=0.3,0.25,2, this run uses γ=3"),
    (["--task", "linear", "--hidden", "6"], "names 0 file(s)"),
])
def test_a_reservoir_for_another_network_is_one_line_exit_2(folder, capsys, change, fragment):
    files = str(folder) if "--task" not in change else ""
    code, _, err = cli(capsys, "train", *RUN, "--reservoir", files or "a.pt,b.pt", *change)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("biohsic: error:"), err
    assert fragment.replace("0 file(s)", "2 file(s)") in err[0]


@pytest.mark.parametrize("args, fragment", [
    (["train", *RUN, "--reservoir", "/nonexistent/r.pt,/nonexistent/s.pt"], "reservoir file /nonexistent/r.pt not found"),
    (["train", *RUN, "--reservoir", "/nonexistent/folder"], "names 1 file(s) but the network has 2"),
    (["train", "--task", "xor", "--reservoir-learning", "delta"], "needs --modulator reservoir"),
    (["reservoir", "train-task", *NET, "--units", "0", "--out", "/tmp/never"], "--units must be positive"),
    (["reservoir", "train-task", *NET, "--units", "-3", "--out", "/tmp/never"], "--units must be positive"),
    (["reservoir", "train-task", "--task", "nope", "--units", "5", "--out", "/tmp/never"], "unknown task 'nope'"),
    (["reservoir", "train-task", "--task", "digits", "--arch", "conv2-pool-fc", "--units", "5", "--stream",
      "task-gaussian", "--out", "/tmp/never"], "--stream task-gaussian models dense networks"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, fragment):
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("biohsic: error:"), err
    assert fragment in err[0]


DIGITS = ["--task", "digits", "--hidden", "6,5", "--window", "4"]


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    """Reservoirs trained a priori on the digits task's Gaussian stream (fitted on its validation split)."""
    out = tmp_path_factory.mktemp("res") / "digits"
    assert main(["reservoir", "train-task", *DIGITS, *SMALL, "--stream", "task-gaussian", "--out", str(out)]) == 0
    return out


def test_a_task_stream_file_records_what_it_saw(task_folder):
    infos = [Reservoir.load(task_folder / f"layer{l}.pt").info for l in range(2)]
    assert [info["layer"] for info in infos] == [0, 1]
    assert [tuple(info["stream_hidden"]) for info in infos] == [(6,), (6, 5)]
    assert all(info["stream_task"] == "digits" and info["stream_kind"] == "task-gaussian" for info in infos)
    assert all((info["stream_fit_fraction"], info["stream_fit_seed"]) == (0.1, 0) for info in infos)


@pytest.mark.parametrize("files, change, fragment", [
    ("layer1.pt,layer0.pt", ["--hidden", "6,6"], "was trained for hidden layer 1, it is given for layer 0"),
    ("", ["--window", "5"], "was trained for window N=4, this run needs N=5"),
    ("", ["--val-fraction", "0.2"], "validation split 0.1 at data seed 0; this run needs task digits, widths 6, "
                                    "split 0.2 at seed 0"),
    ("", ["--data-seed", "3"], "split 0.1 at seed 3"),
])
def test_a_circuit_for_another_stream_window_or_layer_is_one_line_exit_2(task_folder, capsys, files, change, fragment):
    if files:  # two files of the same width (6) in the wrong order
        assert main(["reservoir", "train-task", "--task", "digits", "--hidden", "6,6", "--window", "4", *SMALL,
                     "--stream", "task-gaussian", "--out", str(task_folder / "same")]) == 0
        files = ",".join(str(task_folder / "same" / name) for name in files.split(","))
    code, _, err = cli(capsys, "train", *DIGITS, "--epochs", "1", "--modulator", "reservoir", "--no-progress",
                       "--reservoir", files or str(task_folder), *change)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("biohsic: error:"), err
    assert fragment in err[0]


def test_a_task_stream_outside_train_task_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = cli(capsys, "reservoir", "train", "--window", "4", "--units", "5", "--layer-dim", "3", "--stream", "task-gaussian",
                       "--out", str(tmp_path / "r.pt"))
    assert code == 2 and len(err) == 1 and "use it with `biohsic reservoir train-task --task TASK`" in err[0]
