"""Run folders: the writer's lock, checksummed checkpoints with fallback, run status, and the
file-system refusals that must be one-line errors (biohsic.runs)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from biohsic.config import TrainConfig
from biohsic.data import load_task
from biohsic.errors import CheckpointError, CheckpointWarning, RunFolderError
from biohsic.runs import (CHECKPOINT, LOCK, PREVIOUS_CHECKPOINT, OutputFileLock, RunFolderLock, atomic_write_text,
                          clear_run, load_checkpoint, run_status, save_checkpoint, state_digest, write_json)
from biohsic.train import Trainer


def a_state(epoch=1, step=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"epoch": epoch, "step": step, "network": {"w": torch.randn(4, 3, generator=gen), "b": torch.zeros(3)},
            "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99),
                                                                                       "fused": True, "params": [0]}]},
            "tally": None, "train_seconds": 1.5, "samples_seen": 10}


def same(a, b):
    """Equal content, tensors compared bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return a == b


# --- the writer's lock ------------------------------------------------------------------
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, f"{os.getpid()}\\nbiohsic train --out somewhere\\n".encode())
print("holding", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(lock_file):
    """Another process holds ``lock_file`` as a biohsic writer does, until the block ends."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_second_writer_is_refused_with_the_folder_and_the_holder(tmp_path):
    folder = tmp_path / "run"
    with held_by_another_process(folder / LOCK) as pid:
        with pytest.raises(RunFolderError) as refused:
            with RunFolderLock(folder):
                pass
    assert str(refused.value) == (f"{folder} is being written by process {pid} (biohsic train --out somewhere); "
                                  "wait for it to finish or choose another --out")
    with RunFolderLock(folder):   # released with its process
        pass


def test_the_lock_is_released_and_its_file_and_new_empty_folders_removed(tmp_path):
    folder = tmp_path / "a" / "b"
    with RunFolderLock(folder):
        assert (folder / LOCK).exists()
    assert not (tmp_path / "a").exists()
    with RunFolderLock(folder):
        atomic_write_text(folder / "kept.txt", "x")
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]
    with RunFolderLock(folder):  # free again
        pass


def test_a_stale_lock_file_of_a_dead_writer_does_not_block(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK).write_text("999999\nbiohsic train --out run\n")   # no process holds it
    with RunFolderLock(folder):
        assert (folder / LOCK).read_text().split()[0] == str(os.getpid())


def test_leftover_temporary_files_are_removed_by_the_next_writer(tmp_path):
    leftover = tmp_path / ".checkpoint.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    with RunFolderLock(tmp_path):
        assert not leftover.exists()


@pytest.mark.parametrize("lock", [RunFolderLock, OutputFileLock])
def test_an_output_below_a_regular_file_is_one_line(tmp_path, lock):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="file is a file, not a folder"):
        with lock(tmp_path / "file" / "deeper" / "out"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_folder_lock_on_a_regular_file_and_a_file_lock_on_a_folder_are_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        with RunFolderLock(tmp_path / "file"):
            pass
    with pytest.raises(RunFolderError, match="is a folder; name a file"):
        with OutputFileLock(tmp_path):
            pass


def test_an_output_file_has_one_writer_too(tmp_path):
    target = tmp_path / "reservoir.pt"
    with held_by_another_process(tmp_path / ".reservoir.pt.lock") as pid:
        with pytest.raises(RunFolderError, match=f"reservoir.pt is being written by process {pid}"):
            with OutputFileLock(target):
                pass
        with OutputFileLock(tmp_path / "other.pt"):   # another file of the same folder is free
            pass
    with OutputFileLock(target):
        pass
    assert list(tmp_path.iterdir()) == []   # the next writer removed the lock file its holder left


def test_an_unexpected_error_leaves_its_traceback_in_the_folder(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(ZeroDivisionError) as raised:
        with RunFolderLock(folder):
            1 / 0
    saved = raised.value.traceback_path
    assert saved == folder / "traceback.txt" and "ZeroDivisionError" in saved.read_text()


def test_a_user_error_leaves_no_traceback(tmp_path):
    with pytest.raises(RunFolderError):
        with RunFolderLock(tmp_path / "run"):
            raise RunFolderError("bad input")
    assert not (tmp_path / "run").exists()


def test_a_refused_write_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="cannot write .*; a file stands where a folder is needed"):
        atomic_write_text(tmp_path / "file" / "x.json", "{}")


# --- checkpoints ------------------------------------------------------------------------
def test_a_checkpoint_round_trips_and_is_plain_torch(tmp_path):
    save_checkpoint(tmp_path, a_state())
    assert same(load_checkpoint(tmp_path), {**a_state(), "format": 2})
    raw = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert torch.equal(raw["network"]["w"], a_state()["network"]["w"]) and len(raw["sha256"]) == 64


def test_the_last_two_checkpoints_are_kept(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, a_state(epoch))
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 3
    assert torch.load(tmp_path / PREVIOUS_CHECKPOINT, weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_CHECKPOINT, CHECKPOINT]


def test_the_digest_sees_every_value_and_every_bit():
    base = state_digest(a_state())
    assert state_digest(a_state()) == base
    changed = a_state()
    changed["network"]["w"][1, 2] = torch.nextafter(changed["network"]["w"][1, 2], torch.tensor(9.0))
    assert state_digest(changed) != base
    for key, value in (("epoch", 2), ("train_seconds", 1.5000001), ("tally", 0), ("samples_seen", 10.0)):
        assert state_digest({**a_state(), key: value}) != base, key
    assert state_digest({**a_state(), "network": {"w": a_state()["network"]["w"].double(), "b": torch.zeros(3)}}) != base


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one bit of the stored weights flipped
        weights = torch.load(path, weights_only=True)["network"]["w"]
        at = bytes(data).find(weights.numpy().tobytes())
        assert at > 0
        data[at + 5] ^= 0x04
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how, why", [("truncated", "is not a readable biohsic file"),
                                      ("bit-flipped", "is damaged (its content does not match its SHA-256 digest)")])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_with_one_warning(tmp_path, how, why):
    save_checkpoint(tmp_path, a_state(epoch=1))
    save_checkpoint(tmp_path, a_state(epoch=2, step=7))
    damage(tmp_path / CHECKPOINT, how)
    with pytest.warns(CheckpointWarning) as caught:
        state = load_checkpoint(tmp_path)
    assert len(caught) == 1 and state["epoch"] == 1
    assert why in str(caught[0].message)
    assert "continuing from checkpoint-previous.pt (epoch 1, step 0)" in str(caught[0].message)


def test_a_missing_latest_checkpoint_falls_back_too(tmp_path):
    save_checkpoint(tmp_path, a_state(epoch=1))
    save_checkpoint(tmp_path, a_state(epoch=2))
    (tmp_path / CHECKPOINT).unlink()   # killed between the two renames of a checkpoint write
    with pytest.warns(CheckpointWarning, match="checkpoint.pt is missing"):
        assert load_checkpoint(tmp_path)["epoch"] == 1


def test_no_intact_checkpoint_is_an_error_and_none_is_none(tmp_path):
    assert load_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, a_state(epoch=1))
    save_checkpoint(tmp_path, a_state(epoch=2))
    damage(tmp_path / CHECKPOINT, "truncated")
    damage(tmp_path / PREVIOUS_CHECKPOINT, "bit-flipped")
    with pytest.raises(CheckpointError, match="no intact checkpoint .*not a readable.*damaged.*--overwrite"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_without_digest_is_refused(tmp_path):
    torch.save({"epoch": 1, "network": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="not a checkpoint of this biohsic version"):
        load_checkpoint(tmp_path)


def test_a_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"epoch": Payload()}, tmp_path / CHECKPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # nothing leaks out as a warning either
        with pytest.raises(CheckpointError, match="not a readable biohsic file"):
            load_checkpoint(tmp_path)
    assert not (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck")
    save_checkpoint(folder, a_state())
    return (folder / CHECKPOINT).read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_single_bit_flip_goes_unnoticed(tmp_path, checkpoint_bytes, data):
    """Whatever bit of the file flips, loading it either fails (one-line CheckpointError) or
    gives exactly the saved content (the bit was in the archive's padding)."""
    position = data.draw(st.integers(0, len(checkpoint_bytes) * 8 - 1))
    damaged = bytearray(checkpoint_bytes)
    damaged[position // 8] ^= 1 << (position % 8)
    folder = tmp_path / f"flip{position}"
    folder.mkdir()
    (folder / CHECKPOINT).write_bytes(bytes(damaged))
    try:
        state = load_checkpoint(folder)
    except CheckpointError as err:
        assert "\n" not in str(err)
        return
    assert same(state, {**a_state(), "format": 2})


# --- run status -------------------------------------------------------------------------
def test_run_status_names_what_a_folder_holds(tmp_path):
    assert run_status(tmp_path / "missing") is None
    assert run_status(tmp_path) is None
    (tmp_path / LOCK).write_text("")
    (tmp_path / "traceback.txt").write_text("")
    assert run_status(tmp_path) is None
    write_json(tmp_path / "config.json", {})
    assert run_status(tmp_path) == "interrupted"
    for status, seen in (("running", "interrupted"), ("completed", "completed"), ("diverged", "diverged"),
                         ("interrupted", "interrupted")):
        write_json(tmp_path / "summary.json", {"status": status})
        assert run_status(tmp_path) == seen
    (tmp_path / "summary.json").write_text("{broken")
    assert run_status(tmp_path) == "interrupted"


def test_clear_run_deletes_the_run_files_only(tmp_path):
    for name in ("config.json", "summary.json", "metrics.jsonl", "curves.png", "traceback.txt", "notes.txt"):
        (tmp_path / name).write_text("")
    save_checkpoint(tmp_path, a_state(1))
    save_checkpoint(tmp_path, a_state(2))
    clear_run(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert run_status(tmp_path) is None


def test_the_lock_is_re_entrant_within_a_process_and_released_by_the_outermost(tmp_path):
    folder = tmp_path / "run"
    with RunFolderLock(folder):
        with RunFolderLock(folder):      # a trainer inside a command that holds the folder
            pass
        fd = os.open(folder / LOCK, os.O_RDWR)   # still held: another open file cannot lock it
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not folder.exists()


def test_a_trainer_locks_its_run_folder(tmp_path):
    data = load_task("xor")
    trainer = Trainer(TrainConfig(task="xor", epochs=1, hidden=(3,), window=3), run_dir=tmp_path / "run",
                      dataset=data.__class__(**{**data.__dict__, "x_train": data.x_train[:20],
                                               "y_train": data.y_train[:20]}))
    held = []
    original = trainer.train_epoch
    trainer.train_epoch = lambda epoch: (held.append((tmp_path / "run" / LOCK).exists()), original(epoch))[1]
    trainer.run()
    assert held == [True] and not (tmp_path / "run" / LOCK).exists()
