"""Every kind of bad input a user can give the command line ends as ONE line on stderr,
``biohsic: error: …`` naming the option, the value and what is allowed, with exit code 2,
no traceback, and nothing written; then a property test feeds random invalid values of
every option (hypothesis)."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from biohsic.cli import main
from biohsic.config import TrainConfig

XOR = ["--task", "xor", "--epochs", "1", "--hidden", "6,4", "--no-progress"]
RES = ["--input-dim", "4", "--classes", "3", "--steps-per-sample", "2", "--streams", "4", "--washout", "2",
       "--samples", "16"]
RESERVOIR_TRAIN = ["reservoir", "train", "--window", "2", "--units", "10", "--layer-dim", "5", *RES]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    """``biohsic argv`` in this process: exit code and stderr lines."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:   # argparse's own errors
            code = exit_.code
    return code, err.getvalue().splitlines()


@contextlib.contextmanager
def inside(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def assert_refused(root: Path, argv: list[str], fragment: str) -> None:
    """``argv`` run in ``root`` exits 2 with one error line holding ``fragment`` and leaves
    ``root`` exactly as it was."""
    before = snapshot(root)
    with inside(root):
        code, err = run_cli(argv)
    assert code == 2, (code, err)
    assert len(err) == 1, err
    assert err[0].startswith("biohsic") and "error:" in err[0] and "Traceback" not in err[0]
    assert fragment in err[0], err[0]
    assert snapshot(root) == before, "the refused command wrote something"


# --- set-ups: files a case needs --------------------------------------------------------
def a_file(root: Path) -> str:
    (root / "file").write_text("not a folder")
    return str(root / "file")


def run_folder(root: Path, status: str | None, **changes) -> str:
    """A run folder of the XOR run with ``status`` in its summary (None: killed before any)."""
    folder = root / "run"
    folder.mkdir()
    config = TrainConfig(task="xor", epochs=1, hidden=(6, 4), **changes).resolved()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    if status is not None:
        (folder / "summary.json").write_text(json.dumps({"status": status, "epochs_completed": 1}))
    return str(folder)


def damaged_checkpoints(root: Path) -> str:
    folder = run_folder(root, "running")
    (Path(folder) / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    (Path(folder) / "checkpoint-previous.pt").write_bytes(b"")
    return folder


def malicious_checkpoint(root: Path) -> str:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    folder = run_folder(root, "running")
    torch.save({"epoch": Payload()}, Path(folder) / "checkpoint.pt")
    return folder


def idx_files(root: Path, n_images: int, n_bytes: int | None = None) -> str:
    folder = root / "idx"
    folder.mkdir()
    pixels = bytes(n_images * 784 if n_bytes is None else n_bytes)
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).write_bytes(gzip.compress(struct.pack(">IIII", 2051, n_images, 28, 28) + pixels))
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(gzip.compress(struct.pack(">II", 2049, n_images) + bytes(n_images)))
    return str(folder)


def empty_cifar(root: Path) -> str:
    folder = root / "cifar"
    folder.mkdir()
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, handle)
    return str(folder)


def empty_folder(root: Path) -> str:
    (root / "empty").mkdir()
    return str(root / "empty")


# --- the kinds of bad input -------------------------------------------------------------
# (kind, arguments with {out}/{file}/{run}/{data} to fill, set-up, fragment of the message)
CASES = [
    ("unknown task", ["train", "--task", "nope"], None, "unknown task 'nope'"),
    ("window below 2", ["train", *XOR, "--window", "1"], None, "--window must be at least 2"),
    ("window above the training set", ["train", *XOR, "--window", "901"], None,
     "--window 901 is larger than the xor training set (810 samples); choose at most 810"),
    ("window not an integer", ["train", *XOR, "--window", "8.5"], None, "argument --window: invalid int value"),
    ("window too large to allocate", ["train", *XOR, "--window", "800", "--seeds", "100000"], None,
     "GiB of memory, more than the"),
    ("gamma infinite", ["train", *XOR, "--gamma", "inf"], None, "--gamma must be non-negative and finite, got inf"),
    ("gamma NaN", ["train", *XOR, "--gamma", "nan"], None, "--gamma must be non-negative and finite, got nan"),
    ("gamma negative", ["train", *XOR, "--gamma", "-1"], None, "--gamma must be non-negative and finite"),
    ("two sigmas", ["train", *XOR, "--sigmas", "0.5,1"], None, "--sigmas takes three values"),
    ("a sigma zero", ["train", *XOR, "--sigmas", "0.5,0,1"], None, "--sigmas must all be positive finite"),
    ("a sigma infinite", ["train", *XOR, "--sigmas", "0.5,inf,1"], None, "--sigmas must all be positive finite"),
    ("sigmas not numbers", ["train", *XOR, "--sigmas", "a,b,c"], None, "comma-separated numbers"),
    ("lr zero", ["train", *XOR, "--lr", "0"], None, "--lr must be in (0, 1], got 0.0"),
    ("lr above 1", ["train", *XOR, "--lr", "1e38"], None, "--lr must be in (0, 1]"),
    ("lr NaN", ["train", *XOR, "--lr", "nan"], None, "--lr must be in (0, 1], got nan"),
    ("weight decay infinite", ["train", *XOR, "--weight-decay", "inf"], None,
     "--weight-decay must be non-negative and finite, got inf"),
    ("weight decay negative", ["train", *XOR, "--weight-decay", "-0.1"], None, "--weight-decay must be non-negative"),
    ("weight decay times lr at least 1", ["train", *XOR, "--weight-decay", "2000"], None,
     "their product must be below 1"),
    ("no epoch", ["train", *XOR, "--epochs", "0"], None, "--epochs must be at least 1, got 0"),
    ("hidden width zero", ["train", *XOR, "--hidden", "6,0"], None, "--hidden sizes must be positive"),
    ("hidden width not an integer", ["train", *XOR, "--hidden", "6,x"], None, "--hidden takes comma-separated"),
    ("arch that cannot be read", ["train", *XOR, "--arch", "conv8-maxpool-fc"], None,
     "--arch 'conv8-maxpool-fc': cannot read 'maxpool'"),
    ("arch without its readout", ["train", *XOR, "--arch", "conv8-pool"], None, "must end with the readout 'fc'"),
    ("conv arch on inputs that are not images", ["train", *XOR, "--arch", "conv8-fc"], None,
     "need image inputs (C, H, W)"),
    ("augmenting inputs that are not images", ["train", *XOR, "--augment"], None, "--augment crops and flips images"),
    ("unknown modulator", ["train", *XOR, "--modulator", "oracle"], None, "invalid choice: 'oracle'"),
    ("reservoir modulator without files", ["train", *XOR, "--modulator", "reservoir"], None, "--reservoir FILE"),
    ("reservoir files missing", ["train", *XOR, "--modulator", "reservoir", "--reservoir", "{out}/r0.pt,{out}/r1.pt"],
     None, "r0.pt not found"),
    ("online reservoir learning without reservoir", ["train", *XOR, "--reservoir-learning", "delta"], None,
     "--reservoir-learning delta needs --modulator reservoir"),
    ("unknown readout update", ["train", *XOR, "--readout-update", "all"], None, "argument --readout-update"),
    ("unknown memory mode", ["train", *XOR, "--memory", "forget"], None, "argument --memory"),
    ("unknown neuron", ["train", *XOR, "--neuron", "spiking"], None, "argument --neuron"),
    ("unknown dtype", ["train", *XOR, "--dtype", "float16"], None, "argument --dtype"),
    ("unknown pHSIC kernel", ["train", *XOR, "--phsic-kernel", "laplace"], None, "argument --phsic-kernel"),
    ("no step per sample", ["train", *XOR, "--steps-per-sample", "0"], None, "--steps-per-sample must be at least 1"),
    ("tau infinite", ["train", *XOR, "--tau", "inf"], None, "--tau must be a finite number of ms"),
    ("tau below the time step", ["train", *XOR, "--tau", "0.5"], None, "≥ the time step dt = 1"),
    ("tau negative", ["train", *XOR, "--tau", "-5"], None, "--tau must be a finite number of ms"),
    ("pHSIC sigma NaN", ["train", *XOR, "--rule", "phsic", "--phsic-sigma", "nan"], None,
     "--phsic-sigma must be positive and finite, got nan"),
    ("pHSIC horizon zero", ["train", *XOR, "--phsic-horizon", "0"], None, "--phsic-horizon must be at least 1"),
    ("batch size zero", ["train", *XOR, "--batch-size", "0"], None, "--batch-size must be at least 1"),
    ("batch size above the training set", ["train", *XOR, "--rule", "bp", "--batch-size", "901"], None,
     "--batch-size 901 is larger than the xor training set (810 samples)"),
    ("batch size 1 for a rule that compares samples", ["train", *XOR, "--rule", "hsic", "--batch-size", "1"], None,
     "--batch-size must be at least 2 for --rule hsic"),
    ("leaky units for a rule without them", ["train", *XOR, "--rule", "bp", "--neuron", "leaky"], None,
     "--neuron leaky"),
    ("data folder missing", ["train", "--task", "mnist", "--data-dir", "{out}/nowhere"], None, "mnist files not found"),
    ("IDX header with zero images", ["train", "--task", "mnist", "--data-dir", "{data}"],
     lambda root: idx_files(root, 0), "its header says 0 images"),
    ("IDX file truncated", ["train", "--task", "mnist", "--data-dir", "{data}"],
     lambda root: idx_files(root, 3, n_bytes=100), "truncated"),
    ("CIFAR batches with zero images", ["train", "--task", "cifar10", "--data-dir", "{data}"], empty_cifar,
     "holds 0 images"),
    ("data seed negative", ["train", *XOR, "--data-seed", "-1"], None, "--data-seed must be in [0, 2**32)"),
    ("data seed too large", ["train", *XOR, "--data-seed", str(2**40)], None, "--data-seed must be in [0, 2**32)"),
    ("unknown device", ["train", *XOR, "--device", "gpu"], None, "unknown --device 'gpu'"),
    ("device of another kind", ["train", *XOR, "--device", "meta"], None, "biohsic runs on cpu or cuda, not meta"),
    ("threads zero", ["train", *XOR, "--threads", "0"], None, "--threads must be at least 1"),
    ("unknown rule", ["train", *XOR, "--rule", "magic"], None, "unknown rule 'magic'"),
    ("seed negative", ["train", *XOR, "--seed", "-3"], None, "--seed must be in [0, 4294967295] for --seeds 1"),
    ("no seed", ["train", *XOR, "--seeds", "0"], None, "--seeds must be at least 1"),
    ("checkpoint every zero steps", ["train", *XOR, "--checkpoint-every", "0"], None,
     "--checkpoint-every must be at least 1 step"),
    ("unknown option", ["train", *XOR, "--learning-rate", "0.1"], None, "unrecognized arguments: --learning-rate"),
    ("resume without a folder", ["train", *XOR, "--resume"], None, "--resume needs --out DIR"),
    ("resume of a missing folder", ["train", *XOR, "--resume", "--out", "{out}/typo"], None,
     "there is no folder"),
    ("resume of a folder with no run", ["train", *XOR, "--resume", "--out", "{run}"], empty_folder,
     "holds no run to continue"),
    ("resume and overwrite together", ["train", *XOR, "--resume", "--overwrite", "--out", "{out}/x"], None,
     "pass one of them"),
    ("out names a file", ["train", *XOR, "--out", "{file}"], a_file, "is a file, not a folder"),
    ("out below a file", ["train", *XOR, "--out", "{file}/run"], a_file, "is a file, not a folder"),
    ("out holds a completed run", ["train", *XOR, "--out", "{run}"], lambda root: run_folder(root, "completed"),
     "already holds a completed run; pass --resume to continue it, --overwrite to replace it"),
    ("out holds a diverged run", ["train", *XOR, "--out", "{run}"], lambda root: run_folder(root, "diverged"),
     "already holds a diverged run"),
    ("out holds a killed run", ["train", *XOR, "--out", "{run}"], lambda root: run_folder(root, None),
     "already holds an interrupted run"),
    ("resume with other options", ["train", *XOR, "--resume", "--out", "{run}", "--gamma", "1"],
     lambda root: run_folder(root, "completed"), "other settings (--gamma: 10.0 saved, 1.0 given)"),
    ("resume from damaged checkpoints", ["train", *XOR, "--resume", "--out", "{run}"], damaged_checkpoints,
     "no intact checkpoint"),
    ("resume from a malicious checkpoint", ["train", *XOR, "--resume", "--out", "{run}"], malicious_checkpoint,
     "not a readable biohsic file (UnpicklingError)"),
    ("compare out names a file", ["compare", *XOR, "--rules", "bp", "--out", "{file}"], a_file,
     "is a file, not a folder"),
    ("compare out below a file", ["compare", *XOR, "--rules", "bp", "--out", "{file}/cmp"], a_file,
     "is a file, not a folder"),
    ("compare unknown rule", ["compare", *XOR, "--rules", "bp,magic", "--out", "{out}/c"], None,
     "unknown rule 'magic'"),
    ("compare window above the training set", ["compare", *XOR, "--rules", "bp", "--window", "1000",
                                               "--out", "{out}/c"], None, "--window 1000 is larger"),
    ("reservoir units zero", [*RESERVOIR_TRAIN[:5], "0", *RESERVOIR_TRAIN[6:], "--out", "{out}/r.pt"], None,
     "--units must be positive"),
    ("reservoir too large to allocate", [*RESERVOIR_TRAIN[:5], "10000000", *RESERVOIR_TRAIN[6:], "--out",
                                         "{out}/r.pt"], None, "a reservoir of --units 10000000 needs about"),
    ("reservoir connectivity above 1", [*RESERVOIR_TRAIN, "--connectivity", "2", "--out", "{out}/r.pt"], None,
     "--connectivity must be in (0, 1]"),
    ("reservoir gain infinite", [*RESERVOIR_TRAIN, "--gain", "inf", "--out", "{out}/r.pt"], None,
     "--gain must be non-negative and finite"),
    ("reservoir tau NaN", [*RESERVOIR_TRAIN, "--tau", "nan", "--out", "{out}/r.pt"], None,
     "--tau must be positive and finite"),
    ("reservoir dt zero", [*RESERVOIR_TRAIN, "--dt", "0", "--out", "{out}/r.pt"], None,
     "--dt must be positive and finite"),
    ("reservoir input scale infinite", [*RESERVOIR_TRAIN, "--input-scale=-inf", "--out", "{out}/r.pt"], None,
     "--input-scale must be non-negative and finite"),
    ("reservoir feedback scale NaN", [*RESERVOIR_TRAIN, "--feedback-scale", "nan", "--out", "{out}/r.pt"], None,
     "--feedback-scale must be non-negative and finite"),
    ("reservoir rate noise negative", [*RESERVOIR_TRAIN, "--rate-noise", "-1", "--out", "{out}/r.pt"], None,
     "--rate-noise must be non-negative and finite"),
    ("reservoir output noise infinite", [*RESERVOIR_TRAIN, "--output-noise", "inf", "--out", "{out}/r.pt"], None,
     "--output-noise must be non-negative and finite"),
    ("reservoir gamma infinite", [*RESERVOIR_TRAIN, "--gamma", "inf", "--out", "{out}/r.pt"], None,
     "--gamma must be non-negative and finite"),
    ("reservoir sigma NaN", [*RESERVOIR_TRAIN, "--sigmas", "nan,1,1", "--out", "{out}/r.pt"], None,
     "--sigmas takes three positive finite values"),
    ("reservoir delta-rule lr NaN", [*RESERVOIR_TRAIN, "--learner", "delta", "--lr", "nan", "--out", "{out}/r.pt"],
     None, "--lr must be positive and finite, got nan"),
    ("reservoir alpha NaN", [*RESERVOIR_TRAIN, "--alpha", "nan", "--out", "{out}/r.pt"], None,
     "--alpha takes positive finite values"),
    ("reservoir validation above 1", [*RESERVOIR_TRAIN, "--validation", "2", "--out", "{out}/r.pt"], None,
     "--validation must be in (0, 1]"),
    ("reservoir washout negative", [*RESERVOIR_TRAIN, "--washout", "-1", "--out", "{out}/r.pt"], None,
     "--washout must be non-negative"),
    ("reservoir unknown device", [*RESERVOIR_TRAIN, "--device", "tpu", "--out", "{out}/r.pt"], None,
     "unknown --device 'tpu'"),
    ("reservoir out is a folder", [*RESERVOIR_TRAIN, "--out", "{out}"], None, "is a folder; name a file"),
    ("reservoir out below a file", [*RESERVOIR_TRAIN, "--out", "{file}/r.pt"], a_file, "is a file, not a folder"),
    ("reservoir folder output names a file", ["reservoir", "capacity", "--windows", "2", "--units", "10", *RES,
                                              "--out", "{file}"], a_file, "is a file, not a folder"),
]


@pytest.mark.parametrize("kind, argv, setup, fragment", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, kind, argv, setup, fragment):
    made = setup(tmp_path) if setup else None
    fill = {"out": str(tmp_path), "file": made, "run": made, "data": made}
    assert_refused(tmp_path, [part.format(**fill) for part in argv], fragment)


def test_there_are_at_least_40_distinct_kinds_of_bad_input():
    assert len({kind for kind, *_ in CASES}) == len(CASES) >= 40


# --- random invalid values of every option ----------------------------------------------
def text_of(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


NOT_A_NUMBER = st.sampled_from(["", "x", "1e", "one", "--", "0x1g", "1,2"])
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
BELOW = {  # option → strategy of invalid values (as command-line text)
    "--window": st.one_of(st.integers(max_value=1), st.integers(901, 10**9), NOT_A_NUMBER),
    "--gamma": st.one_of(st.floats(max_value=-1e-300, allow_infinity=False), NON_FINITE, NOT_A_NUMBER),
    "--sigmas": st.one_of(
        st.lists(st.floats(0.1, 5), min_size=1, max_size=2).map(lambda v: ",".join(map(repr, v))),
        st.tuples(st.floats(0.1, 5), st.one_of(st.floats(max_value=0), NON_FINITE), st.floats(0.1, 5))
        .map(lambda v: ",".join(map(repr, v)))),
    "--lr": st.one_of(st.floats(max_value=0), st.floats(min_value=1.0001), NON_FINITE, NOT_A_NUMBER),
    "--weight-decay": st.one_of(st.floats(max_value=-1e-300, allow_infinity=False), NON_FINITE,
                                st.floats(1000.001, 1e300)),
    "--epochs": st.integers(max_value=0),
    "--hidden": st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
    "--arch": st.text("convplf0-", min_size=1),  # the only digit is 0: no width, channel count or factor is valid
    "--modulator": st.text("abcxyz", min_size=1).filter(lambda v: v not in ("exact", "paper")),
    "--reservoir-learning": st.sampled_from(["delta", "force", "sometimes"]),
    "--readout-update": st.text("qwz", min_size=1),
    "--memory": st.text("qwz", min_size=1),
    "--neuron": st.text("qwz", min_size=1),
    "--steps-per-sample": st.integers(max_value=0),
    "--tau": st.one_of(st.floats(max_value=0.999), NON_FINITE),
    "--phsic-kernel": st.text("qwz", min_size=1),
    "--phsic-sigma": st.one_of(st.floats(max_value=0), NON_FINITE),
    "--phsic-horizon": st.integers(max_value=0),
    "--batch-size": st.integers(max_value=0),
    "--data-seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)),
    "--device": st.sampled_from(["gpu", "cuda:99", "meta", "xla", "cpu:x", "", "CUDA", "mps:0"]),
    "--dtype": st.sampled_from(["float16", "bfloat16", "int8", "double"]),
    "--threads": st.integers(max_value=0),
    "--rule": st.text("qwz", min_size=1),
    "--seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)),
    "--seeds": st.integers(max_value=0),
    "--checkpoint-every": st.one_of(st.integers(max_value=0), NOT_A_NUMBER),
    "--task": st.text("qwz", min_size=1),
    "--val-fraction": st.one_of(st.floats(max_value=-1e-300, allow_infinity=False), st.floats(min_value=1),
                                NON_FINITE, NOT_A_NUMBER),
    "--preset": st.text("qwz", min_size=1),
}


@settings(max_examples=200, deadline=None, database=None)
@given(option=st.sampled_from(sorted(BELOW)), data=st.data())
def test_random_invalid_values_of_every_option_are_refused_in_one_line(option, data):
    value = data.draw(BELOW[option])
    argv = ["train", *XOR, "--rule", "phsic" if option == "--phsic-sigma" else "biohsic", option, text_of(value)]
    if option == "--device" and value == "cuda:99" and torch.cuda.device_count() > 99:
        return
    with tempfile.TemporaryDirectory() as root:
        assert_refused(Path(root), [*argv, "--out", f"{root}/run"], "")
