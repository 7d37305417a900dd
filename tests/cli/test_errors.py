"""The top-level handler of the `biohsic` command: user errors and out-of-memory are one line
and exit 2, library warnings never add lines to an error, an internal error is one line
naming the file that holds its traceback (exit 1), an interrupt leaves a resumable run."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import biohsic.cli.train
import biohsic.train
from biohsic.cli import main
from biohsic.errors import ConfigError
from biohsic.train import Trainer

XOR = ["train", "--task", "xor", "--epochs", "1", "--hidden", "6,4", "--window", "4", "--no-progress"]


@pytest.fixture(autouse=True)
def small_xor(monkeypatch):
    """Train on 120 of xor's 900 samples: the handler, not the run, is tested."""
    load = biohsic.train.load_task

    def small(name, **kwargs):
        data = load(name, **kwargs)
        return data.__class__(**{**data.__dict__, "x_train": data.x_train[:120], "y_train": data.y_train[:120]})

    monkeypatch.setattr(biohsic.train, "load_task", small)


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_an_internal_error_in_a_run_is_one_line_with_the_traceback_in_the_run_folder(tmp_path, capsys, monkeypatch):
    def broken(self, epoch, online):
        raise ValueError("an evaluation bug\nover two lines")

    monkeypatch.setattr(Trainer, "evaluate_epoch", broken)
    code, _, err = run(capsys, *XOR, "--out", str(tmp_path / "run"))
    saved = tmp_path / "run" / "traceback.txt"
    assert code == 1 and err[:-1] == [f"run folder: {tmp_path / 'run'}"]
    assert err[-1] == (f"biohsic: internal error: ValueError: an evaluation bug over two lines; the full traceback "
                       f"is in {saved}; please report it")
    text = saved.read_text()
    assert text.startswith("Traceback") and "in broken" in text and "ValueError: an evaluation bug" in text


def test_an_internal_error_before_any_folder_saves_the_traceback_in_a_temporary_file(tmp_path, capsys, monkeypatch):
    def broken(args, command_defaults=None):
        raise KeyError("options")

    monkeypatch.setattr(biohsic.cli.train, "run_config", broken)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *XOR)
    assert code == 1 and len(err) == 1 and err[0].startswith("biohsic: internal error: KeyError: 'options'; ")
    saved = Path(err[0].split("the full traceback is in ")[1].split("; please report it")[0])
    try:
        assert saved.name.startswith("biohsic-traceback-") and "KeyError: 'options'" in saved.read_text()
    finally:
        saved.unlink()
    assert list(tmp_path.iterdir()) == []


def test_running_out_of_memory_is_a_user_error(tmp_path, capsys, monkeypatch):
    def allocation(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 80000000000 bytes")

    monkeypatch.setattr(Trainer, "run", allocation)
    code, _, err = run(capsys, *XOR, "--out", str(tmp_path / "run"))
    assert code == 2 and err[-1].startswith("biohsic: error: out of memory (") and "lower --window" in err[-1]
    assert not (tmp_path / "run" / "traceback.txt").exists()


def test_library_warnings_add_no_line_to_an_error(tmp_path, capsys, monkeypatch):
    def noisy(config, data):
        warnings.warn("a library says something\nat length", UserWarning)
        warnings.warn("and more", DeprecationWarning)
        raise ConfigError("--window 9 is too large; choose at most 8")

    monkeypatch.setattr(biohsic.train, "check_run_fits", noisy)
    code, _, err = run(capsys, *XOR, "--out", str(tmp_path / "run"))
    assert code == 2 and err == ["biohsic: error: --window 9 is too large; choose at most 8"]


def test_library_warnings_of_a_successful_command_follow_it_one_line_each(tmp_path, capsys, monkeypatch):
    check = biohsic.train.check_run_fits

    def noisy(config, data):
        for _ in range(3):
            warnings.warn("a library says something\nat length", UserWarning)
        return check(config, data)

    monkeypatch.setattr(biohsic.train, "check_run_fits", noisy)
    code, out, err = run(capsys, *XOR, "--out", str(tmp_path / "run"))
    assert code == 0 and out.startswith("test_accuracy=")
    assert err[-1] == "biohsic: warning: UserWarning: a library says something at length"
    assert sum(line.startswith("biohsic: warning") for line in err) == 1, err


def test_an_interrupt_leaves_a_resumable_run(tmp_path, capsys, monkeypatch):
    chunks = []

    def ctrl_c_after_the_second_chunk(name):
        chunks.append(name)
        if chunks == ["started", "chunk", "chunk"]:
            raise KeyboardInterrupt

    monkeypatch.setattr(biohsic.train, "fault_point", ctrl_c_after_the_second_chunk)
    folder = tmp_path / "run"
    code, _, err = run(capsys, *XOR, "--out", str(folder), "--checkpoint-every", "30")
    assert code == 130 and err[-1] == ("biohsic: interrupted; the last checkpoint is kept, continue with --resume "
                                       "--out DIR")
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    code, _, err = run(capsys, *XOR, "--out", str(folder))
    assert code == 2 and "already holds an interrupted run" in err[-1]
    code, _, err = run(capsys, *XOR, "--out", str(folder), "--resume")
    assert code == 0 and err[0] == f"resuming {folder} at epoch 1, step 60 of 108", err  # 120 samples less 12 for validation


def test_overwrite_replaces_a_run(tmp_path, capsys):
    folder = tmp_path / "run"
    assert run(capsys, *XOR, "--out", str(folder))[0] == 0
    (folder / "notes.txt").write_text("mine")
    first = (folder / "config.json").read_text()
    code, _, err = run(capsys, *XOR, "--gamma", "3", "--out", str(folder), "--overwrite")
    assert code == 0 and json.loads((folder / "config.json").read_text())["gamma"] == 3.0 != json.loads(first)["gamma"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1
