"""`biohsic.sweep`: grids, trials, executors (this process, local processes, Ray), reuse,
failures that stop only their trial, and the tables."""
import csv
import dataclasses
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from biohsic import sweep as sw
from biohsic.config import TrainConfig
from biohsic.errors import CheckpointError, ConfigError
from biohsic.train import Trainer

BASE = TrainConfig(task="xor", epochs=1, hidden=(4, 3), window=4, seeds=2)
GRID = {"window": (2, 4), "lr": (1e-3, 1e-2)}


def quiet(message):
    """A log that drops its messages."""


# --- grids --------------------------------------------------------------------------------
def test_a_grid_is_the_values_of_each_named_setting():
    assert sw.parse_grid(["window=2,4,8", "lr=1e-4,1e-3"]) == {"window": (2, 4, 8), "lr": (1e-4, 1e-3)}
    assert sw.parse_grid(["lr=1e-3,1e-2,batch-size=8,32"]) == {"lr": (1e-3, 1e-2), "batch_size": (8, 32)}
    assert sw.parse_grid(["hidden=128/64,32/16", "hsic_normalized=true,false"]) == {
        "hidden": ((128, 64), (32, 16)), "hsic_normalized": (True, False)}
    assert sw.parse_grid([]) == {}


@pytest.mark.parametrize("texts, fragment", [
    (["windows=2,4"], "unknown setting 'windows'"),
    (["window=2,four"], "window takes an integer"),
    (["window"], "expected NAME=V1,V2"),
    (["2,4"], "expected NAME=V1,V2"),
    (["window="], "window has no values"),
    (["window=2,2"], "lists 2 twice"),
    (["window=2", "window=4"], "window is gridded twice"),
    (["seed=1,2"], "seed is set by --seed"),
    (["rule=bp,fa"], "rule is set by --rules"),
    (["modulator=exact,paper"], "modulator is set by --rules"),
    (["window=2,,4"], "window takes an integer, got ''"),
])
def test_bad_grids_are_config_errors(texts, fragment):
    with pytest.raises(ConfigError) as error:
        sw.parse_grid(texts)
    assert fragment in str(error.value)


def test_points_are_the_product_first_name_slowest():
    assert sw.points({"a": (1, 2), "b": ("x", "y")}) == [
        (("a", 1), ("b", "x")), (("a", 1), ("b", "y")), (("a", 2), ("b", "x")), (("a", 2), ("b", "y"))]
    assert sw.points({}) == [()]


def test_plan_gives_every_rule_and_point_a_folder_config_and_sources(tmp_path):
    trials = sw.plan_sweep(BASE, "biohsic,bp", {**GRID, "hidden": ((4, 3), (5,))}, tmp_path)
    assert len(trials) == 2 * 2 * 2 * 2
    first = trials[0]
    assert first.run_dir == tmp_path / "biohsic" / "window=2,lr=0.001,hidden=4x3"
    assert (first.config.window, first.config.lr, first.config.hidden, first.config.rule) == (2, 1e-3, (4, 3), "biohsic")
    assert trials[-1].config.rule == "bp" and trials[-1].config.hidden == (5,)
    assert first.sources["window"] == "--grid" and first.sources["rule"] == "--rules"
    assert first.sources["epochs"] == "caller" and first.sources["gamma"] == "task default (xor)"
    assert len({t.run_dir for t in trials}) == len(trials)
    (plain,) = sw.plan_sweep(BASE, "biohsic:paper", {}, tmp_path)
    assert plain.run_dir == tmp_path / "biohsic-paper" and plain.config.modulator == "paper"


def test_plan_checks_every_trial_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="--window must be at least 2"):
        sw.plan_sweep(BASE, "bp", {"window": (4, 1)}, tmp_path)
    with pytest.raises(ConfigError, match="--neuron leaky"):
        sw.plan_sweep(BASE, "biohsic,bp", {"neuron": ("rate", "leaky")}, tmp_path)
    assert not any(tmp_path.iterdir())


# --- running --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_trains_every_trial_and_writes_its_tables(tmp_path, small_xor):
    results = sw.sweep(BASE, "biohsic,bp", GRID, tmp_path, log=quiet)
    assert [r.trial.point for r in results[:4]] == sw.points(GRID)
    for r in results:
        summary = json.loads((r.run_dir / "summary.json").read_text())
        assert summary["config"]["window"] == r.config.window and summary["seeds"] == [0, 1]
        assert r.status == "completed" and r.val_accuracy[0] == pytest.approx(summary["val_accuracy"])
        assert r.test_accuracy[0] == pytest.approx(summary["test_accuracy"])
        sources = json.loads((r.run_dir / "config_sources.json").read_text())
        assert sources["lr"] == "--grid" and sources["rule"] == "--rules"
    records = list(csv.DictReader(io.StringIO((tmp_path / "sweep.csv").read_text())))
    assert [(r["rule"], r["window"], r["lr"]) for r in records][:2] == [("biohsic", "2", "0.001"),
                                                                       ("biohsic", "2", "0.01")]
    assert tuple(records[0]) == ("rule", "window", "lr", *sw.RESULT_COLUMNS)
    assert records[0]["run_dir"] == "biohsic/window=2,lr=0.001"
    assert float(records[3]["val_accuracy_mean"]) == pytest.approx(results[3].val_accuracy[0])
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert table[0] == ("| rule | window | lr | seeds | epochs | val accuracy (%) | test accuracy (%) | val loss | "
                        "test loss | run folder |")
    assert len(table) == 2 + 8 and " ± " in table[2]
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["trials"] == 8 and record["trained"] == 8 and record["failed"] == {}
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


@pytest.mark.slow
def test_a_rerun_reuses_finished_trials_and_retries_failed_ones(tmp_path, small_xor, monkeypatch):
    run = Trainer.run

    def fail_at_lr_1e_2(self, *args, **kwargs):
        if self.config.lr == 1e-2:
            raise RuntimeError("simulated failure\nwith a second line")
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", fail_at_lr_1e_2)
    first = sw.sweep(BASE, "bp", GRID, tmp_path, log=quiet)
    assert [r.status for r in first] == ["completed", "failed", "completed", "failed"]
    assert first[1].error == "RuntimeError: simulated failure" and math.isnan(first[1].val_accuracy[0])
    assert "failed" in (tmp_path / "sweep.md").read_text() and "simulated failure" in (tmp_path / "sweep.md").read_text()
    assert json.loads((tmp_path / "sweep.json").read_text())["failed"] == {
        "bp window=2,lr=0.01": "RuntimeError: simulated failure", "bp window=4,lr=0.01": "RuntimeError: simulated failure"}
    stamps = {r.run_dir: (r.run_dir / "checkpoint.pt").stat().st_mtime_ns for r in first if r.status == "completed"}

    monkeypatch.setattr(Trainer, "run", run)
    messages = []
    second = sw.sweep(BASE, "bp", GRID, tmp_path, log=messages.append)
    assert [r.status for r in second] == ["completed"] * 4
    assert sum("reusing" in m for m in messages) == 2 and sum(": training" in m for m in messages) == 2
    assert {d: (d / "checkpoint.pt").stat().st_mtime_ns for d in stamps} == stamps
    assert [r.val_accuracy for r in second[::2]] == [r.val_accuracy for r in first[::2]]


@pytest.mark.slow
def test_an_interrupted_trial_resumes_from_its_checkpoint(tmp_path, small_xor):
    sw.sweep(BASE, "bp", {"lr": (1e-2,)}, tmp_path, log=quiet)
    longer = dataclasses.replace(BASE, epochs=2)
    (trial,) = sw.plan_sweep(longer, "bp", {"lr": (1e-2,)}, tmp_path)
    assert sw.trial_state(trial) == "resume"
    messages = []
    (result,) = sw.sweep(longer, "bp", {"lr": (1e-2,)}, tmp_path, log=messages.append)
    assert "resuming" in messages[0] and result.epochs_completed == 2
    uninterrupted = Trainer(trial.config, dataset=small_xor).run()
    assert result.test_accuracy[0] == pytest.approx(uninterrupted["test_accuracy"])
    assert result.val_accuracy[0] == pytest.approx(uninterrupted["val_accuracy"])


@pytest.mark.slow
def test_a_folder_with_other_settings_stops_the_sweep_before_any_training(tmp_path, small_xor):
    sw.sweep(BASE, "bp", {"lr": (1e-2,)}, tmp_path, log=quiet)
    with pytest.raises(CheckpointError, match="other settings \\(--seeds: 2 saved, 3 given\\)"):
        sw.sweep(dataclasses.replace(BASE, seeds=3), "bp", {"lr": (1e-3, 1e-2)}, tmp_path, log=quiet)
    assert not (tmp_path / "bp" / "lr=0.001").exists()


def crash_at_lr_1e_2(job):
    """A worker's runner that dies (no outcome, no exception) on the trials with lr 1e-2."""
    if job.config.lr == 1e-2:
        os._exit(3)
    return sw.run_trial(job)


@pytest.mark.slow
def test_a_crashed_worker_process_fails_only_its_trial(tmp_path):
    executor = sw.ProcessExecutor(2, runner=crash_at_lr_1e_2)
    results = sw.sweep(BASE, "bp", {"lr": (1e-2, 1e-3, 3e-3)}, tmp_path, executor=executor, log=quiet)
    assert [r.status for r in results] == ["failed", "completed", "completed"]
    assert "exit code 3" in results[0].error
    assert not (tmp_path / "bp" / "lr=0.01" / "summary.json").exists()


@pytest.mark.slow
def test_local_processes_give_the_numbers_of_this_process(tmp_path):
    grid = {"lr": (1e-3, 1e-2)}
    here = sw.sweep(BASE, "biohsic,bp", grid, tmp_path / "here", log=quiet, threads=1)
    there = sw.sweep(BASE, "biohsic,bp", grid, tmp_path / "there", executor=sw.ProcessExecutor(2), log=quiet,
                     threads=1)
    assert (tmp_path / "here" / "sweep.csv").read_text() == (tmp_path / "there" / "sweep.csv").read_text()
    for a, b in zip(here, there):
        assert json.loads((a.run_dir / "summary.json").read_text())["per_model"] == \
            json.loads((b.run_dir / "summary.json").read_text())["per_model"]


@pytest.mark.slow
def test_a_sweep_on_ray_gives_the_table_of_the_local_executor(tmp_path):
    """The acceptance test: a 2 × 2 sweep on a local Ray instance, table equal to the local pool's."""
    pytest.importorskip("ray")
    grid = {"window": (2, 4), "lr": (1e-3, 1e-2)}
    local = sw.sweep(BASE, "biohsic", grid, tmp_path / "local", executor=sw.ProcessExecutor(2), log=quiet)
    with sw.RayExecutor(2, object_store_mb=80) as ray_executor:
        on_ray = sw.sweep(BASE, "biohsic", grid, tmp_path / "ray", executor=ray_executor, log=quiet)
    assert [r.status for r in on_ray] == ["completed"] * 4
    assert (tmp_path / "ray" / "sweep.csv").read_text() == (tmp_path / "local" / "sweep.csv").read_text()
    assert (tmp_path / "ray" / "sweep.md").read_text() == (tmp_path / "local" / "sweep.md").read_text()
    for a, b in zip(local, on_ray):
        assert json.loads((a.run_dir / "summary.json").read_text())["per_model"] == \
            json.loads((b.run_dir / "summary.json").read_text())["per_model"]
    assert "Ray" in json.loads((tmp_path / "ray" / "sweep.json").read_text())["executor"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_cluster(monkeypatch):
    """A Ray head node started as a user starts a cluster (`ray start --head`), its address;
    its processes are ended (by their process group) after the test."""
    pytest.importorskip("ray")
    port = free_port()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        pointer = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # what `ray stop` would remove
        if pointer.exists() and pointer.read_text().strip().endswith(f":{port}"):
            pointer.unlink()


@pytest.mark.slow
def test_a_sweep_joins_a_running_ray_cluster(tmp_path, ray_cluster):
    with sw.RayExecutor(1, address=ray_cluster) as executor:
        assert executor.workers == 2 and "joined cluster" in executor.describe()
        results = sw.sweep(BASE, "bp", {"lr": (1e-3, 1e-2)}, tmp_path / "cluster", executor=executor, log=quiet)
    local = sw.sweep(BASE, "bp", {"lr": (1e-3, 1e-2)}, tmp_path / "here", log=quiet, threads=1)
    assert [r.status for r in results] == ["completed", "completed"]
    assert (tmp_path / "cluster" / "sweep.csv").read_text() == (tmp_path / "here" / "sweep.csv").read_text()
    assert [r.val_accuracy for r in results] == [r.val_accuracy for r in local]


def test_returned_files_are_written_only_where_the_trial_left_none(tmp_path):
    sw.materialize(tmp_path / "a", {"summary.json": b"{}", "config.json": b"{\"x\": 1}"})
    assert (tmp_path / "a" / "config.json").read_bytes() == b"{\"x\": 1}"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text("kept")
    sw.materialize(tmp_path / "b", {"summary.json": b"replaced"})
    assert (tmp_path / "b" / "summary.json").read_text() == "kept"


def test_an_unreachable_ray_address_is_a_config_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=f"--address 127.0.0.1:{port}: no Ray cluster reachable there"):
        sw.check_reachable(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        sw.check_reachable("nowhere")
    sw.check_reachable("auto")  # left to Ray


def test_executors_by_name():
    assert isinstance(sw.make_executor("local", 1), sw.SerialExecutor)
    assert isinstance(sw.make_executor("local", 3), sw.ProcessExecutor)
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        sw.make_executor("local", 0)
    with pytest.raises(ConfigError, match="--address is for --executor ray"):
        sw.make_executor("local", 2, "127.0.0.1:6379")


def test_a_trial_has_one_thread_when_streaming_and_its_share_of_the_cores_otherwise():
    bp, streaming = TrainConfig(task="xor", rule="bp"), TrainConfig(task="xor", rule="biohsic")
    assert sw.trial_threads(streaming, 4) == 1 and sw.trial_threads(streaming, 1) == 1
    assert sw.trial_threads(bp, 1) is None
    assert sw.trial_threads(bp, 2) == max(1, sw.cpu_count() // 2)
    assert sw.trial_threads(bp, 2, threads=3) == 3


def test_values_are_written_as_they_parse():
    for text, name in (("0.001", "lr"), ("128/64", "hidden"), ("true", "hsic_normalized"), ("none", "reservoir")):
        value = sw.parse_grid([f"{name}={text}"])[name][0]
        assert sw.value_text(value) == text
