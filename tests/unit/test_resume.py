"""Checkpoints inside an epoch, and resuming from them exactly: a run stopped anywhere and
continued ends with the same numbers, bit for bit, as one that was never stopped; the
position of the checkpoints changes no number; everything is checked against the data
before any work."""
from __future__ import annotations

import json

import pytest
import torch

import biohsic.config
import biohsic.train
from biohsic.config import TrainConfig
from biohsic.data import Dataset, load_task
from biohsic.errors import CheckpointError, ConfigError, DataError
from biohsic.reservoir import Reservoir, ReservoirConfig
from biohsic.reservoir.closed_loop import layer_file
from biohsic.runs import CHECKPOINT, PREVIOUS_CHECKPOINT
from biohsic.train import Trainer

FAST = dict(task="xor", epochs=2, hidden=(6, 4), window=4, val_fraction=0.0)  # all 120 samples of small_xor
TIMING = ("wall_seconds", "samples_per_second")


@pytest.fixture(scope="module")
def small_xor():
    data = load_task("xor")
    return data.first_training_samples(120)


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing catches it, nothing is written on the way out."""


def kill_at(monkeypatch, point, count):
    seen = []

    def fault(name):
        if name == point:
            seen.append(name)
            if len(seen) == count:
                raise Killed

    monkeypatch.setattr(biohsic.train, "fault_point", fault)


def metrics(folder):
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_run(a, b):
    """Two run folders whose runs ended with the same numbers, bit for bit."""
    assert metrics(a) == metrics(b)
    left, right = (torch.load(f / CHECKPOINT, weights_only=True) for f in (a, b))
    for part in ("network", "optimizer", "rule"):
        assert_same(left[part], right[part])
    summaries = [json.loads((f / "summary.json").read_text()) for f in (a, b)]
    assert summaries[0]["per_model"] == summaries[1]["per_model"] and summaries[1]["status"] == "completed"


def assert_same(x, y):
    if isinstance(x, torch.Tensor):
        assert torch.equal(x, y)
    elif isinstance(x, dict):
        assert x.keys() == y.keys()
        for key in x:
            assert_same(x[key], y[key])
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert_same(u, v)
    else:
        assert x == y


def stopped_and_resumed(config, data, folder, monkeypatch, point, count, every=None):
    with monkeypatch.context() as patch:
        kill_at(patch, point, count)
        with pytest.raises(Killed):
            Trainer(config, run_dir=folder, dataset=data, checkpoint_every=every).run()
    trainer = Trainer(config, run_dir=folder, dataset=data, checkpoint_every=every)
    resumed = trainer.resume()
    trainer.run()
    return resumed


def save_reservoirs(folder, noise):
    for layer, width in enumerate((6, 4)):
        config = ReservoirConfig(d_x=2, d_y=2, d_z=width, units=20, window=4, gamma=10.0, sigmas=(0.3, 0.25, 2.0),
                                 steps_per_sample=2, rate_noise=noise, seed=layer)
        reservoir = Reservoir(config)
        reservoir.w_out.copy_(torch.randn(reservoir.w_out.shape, generator=torch.Generator().manual_seed(layer)) * 0.01)
        reservoir.save(layer_file(folder, layer), info={})
    return str(folder)


#: Rate and leaky units with K = 1 and 3 are killed and resumed end to end in
#: tests/cli/test_faults.py; here every other kind of state a rule carries.
CASES = {
    "paper signal, recompute, K=2": dict(modulator="paper", memory="recompute", seeds=2),
    "bp": dict(rule="bp", batch_size=8),
    "phsic-stream": dict(rule="phsic-stream"),
    "dfa": dict(rule="dfa", batch_size=4),
    "hsic": dict(rule="hsic", batch_size=10),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_resuming_inside_an_epoch_is_exact(tmp_path, small_xor, monkeypatch, case):
    config = TrainConfig(**FAST, **CASES[case])
    every = 7
    Trainer(config, run_dir=tmp_path / "whole", dataset=small_xor, checkpoint_every=every).run()
    assert stopped_and_resumed(config, small_xor, tmp_path / "split", monkeypatch, "chunk", 4, every)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


@pytest.mark.slow
@pytest.mark.parametrize("learning, noise", [("delta", 0.05), ("refit", 0.0)])
def test_resuming_the_reservoir_closed_loop_inside_an_epoch_is_exact(tmp_path, small_xor, monkeypatch, learning,
                                                                     noise):
    config = TrainConfig(**FAST, modulator="reservoir", reservoir=save_reservoirs(tmp_path, noise),
                         reservoir_learning=learning)
    Trainer(config, run_dir=tmp_path / "whole", dataset=small_xor, checkpoint_every=10).run()
    assert stopped_and_resumed(config, small_xor, tmp_path / "split", monkeypatch, "chunk", 5, 10)
    assert_same_run(tmp_path / "whole", tmp_path / "split")
    assert "reservoir_signal_cosine" in metrics(tmp_path / "split")[0]


@pytest.mark.slow
@pytest.mark.parametrize("point, count", [("started", 1), ("epoch-end", 1)])
def test_a_run_stopped_at_any_moment_resumes_exactly(tmp_path, small_xor, monkeypatch, point, count):
    config = TrainConfig(**FAST)
    Trainer(config, run_dir=tmp_path / "whole", dataset=small_xor, checkpoint_every=50).run()
    stopped_and_resumed(config, small_xor, tmp_path / "split", monkeypatch, point, count, 50)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


@pytest.mark.slow
def test_the_checkpoints_positions_change_no_number(tmp_path, small_xor):
    config = TrainConfig(**{**FAST, "epochs": 1, "seeds": 2})
    for every in (None, 1, 13):
        Trainer(config, run_dir=tmp_path / str(every), dataset=small_xor, checkpoint_every=every).run()
    for every in (1, 13):
        assert_same_run(tmp_path / "None", tmp_path / str(every))


def test_a_mid_epoch_checkpoint_holds_the_position_and_the_tally(tmp_path, small_xor, monkeypatch):
    monkeypatch.setattr(biohsic.train, "CHUNK_STEPS", 40)    # logits are scored in blocks of 40 steps
    trainer = Trainer(TrainConfig(**{**FAST, "epochs": 1}), run_dir=tmp_path, dataset=small_xor, checkpoint_every=50)
    trainer.run()
    previous = torch.load(tmp_path / PREVIOUS_CHECKPOINT, weights_only=True)   # step 100, before the epoch's end
    assert (previous["epoch"], previous["step"]) == (0, 100)
    tally = previous["tally"]
    assert tally["losses"].shape == (1, 120) and tally["correct"].dtype == torch.long
    assert (tally["losses"][:, :80] > 0).all() and (tally["losses"][:, 80:] == 0).all()
    assert tally["pending"].shape == (1, 20, 2)     # the logits of steps 81..100, not scored yet
    final = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert (final["epoch"], final["step"], final["tally"]) == (1, 0, None)


def test_without_checkpoint_every_a_checkpoint_follows_the_clock(tmp_path, small_xor, monkeypatch):
    monkeypatch.setattr(biohsic.train, "CHUNK_STEPS", 40)
    monkeypatch.setattr(biohsic.train, "CHECKPOINT_SECONDS", 0.0)
    saved = []
    trainer = Trainer(TrainConfig(**{**FAST, "epochs": 1}), run_dir=tmp_path, dataset=small_xor)
    original = trainer.save_checkpoint
    trainer.save_checkpoint = lambda: (saved.append((trainer.epoch, trainer.step)), original())
    trainer.run()
    assert saved == [(0, 40), (0, 80), (1, 0)]
    monkeypatch.setattr(biohsic.train, "CHECKPOINT_SECONDS", 3600.0)
    saved.clear()
    trainer = Trainer(TrainConfig(**{**FAST, "epochs": 1}), run_dir=tmp_path / "b", dataset=small_xor)
    trainer.save_checkpoint = lambda: saved.append((trainer.epoch, trainer.step))
    trainer.run()
    assert saved == [(1, 0)]


def test_resume_lists_each_differing_setting_with_both_values(tmp_path, small_xor):
    Trainer(TrainConfig(**{**FAST, "epochs": 1}), run_dir=tmp_path, dataset=small_xor).run()
    other = Trainer(TrainConfig(**{**FAST, "gamma": 1.0, "lr": 0.01}), run_dir=tmp_path, dataset=small_xor)
    with pytest.raises(CheckpointError, match=r"other settings \(--gamma: 10.0 saved, 1.0 given; --lr: 0.001 saved, "
                                              r"0.01 given\)"):
        other.resume()


def test_a_checkpoint_of_another_network_is_one_line(tmp_path, small_xor):
    Trainer(TrainConfig(**{**FAST, "epochs": 1}), run_dir=tmp_path, dataset=small_xor).run()
    config = json.loads((tmp_path / "config.json").read_text())
    other = Trainer(TrainConfig(**{**FAST, "hidden": (5, 4)}), run_dir=tmp_path, dataset=small_xor)
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden": [5, 4]}))
    with pytest.raises(CheckpointError, match="does not fit this run"):
        other.resume()


# --- checked against the data before any work ------------------------------------------
def tiny(n_train, n_test=10, d=2, value=0.5):
    return Dataset("tiny", torch.full((n_train, d), value), torch.zeros(n_train, dtype=torch.long),
                   torch.full((n_test, d), 0.5), torch.zeros(n_test, dtype=torch.long), 2, (d,))


@pytest.mark.parametrize("config, data, error, fragment", [
    (dict(window=30), tiny(20), ConfigError, "--window 30 is larger than the tiny training set (20 samples)"),
    (dict(rule="bp", batch_size=21), tiny(20), ConfigError, "--batch-size 21 is larger than the tiny training set"),
    (dict(), tiny(0), DataError, "0 training and 10 test samples"),
    (dict(), tiny(20, n_test=0), DataError, "20 training and 0 test samples"),
    (dict(), tiny(20, value=float("nan")), DataError, "training inputs hold non-finite values"),
    (dict(), tiny(20, value=float("inf")), DataError, "training inputs hold non-finite values"),
])
def test_a_run_that_does_not_fit_its_data_is_refused_before_any_work(config, data, error, fragment, monkeypatch):
    monkeypatch.setattr(biohsic.train, "Network", None)   # nothing may be built
    with pytest.raises(error, match=fragment.replace("(", "\\(").replace(")", "\\)")):
        Trainer(TrainConfig(**{**FAST, **config}), dataset=data)


def test_a_streaming_rule_takes_any_batch_size(small_xor):
    Trainer(TrainConfig(**FAST, batch_size=10_000), dataset=small_xor)


def test_a_run_too_big_for_the_memory_is_refused_before_allocating(small_xor, monkeypatch):
    monkeypatch.setattr(biohsic.config, "available_memory", lambda device: 10 * 2**20)
    with pytest.raises(ConfigError, match=r"this run \(--window 100, --seeds 30, --hidden 6,4\) needs about 0.\d GiB "
                                          r"of memory, more than the 0.0 GiB free on cpu; lower --window"):
        Trainer(TrainConfig(**{**FAST, "window": 100, "seeds": 30}), dataset=small_xor)


def test_the_memory_estimate_counts_the_window_squared(small_xor):
    needed = [biohsic.train.memory_needed(TrainConfig(**{**FAST, "window": n}).resolved(), small_xor)
              for n in (10, 20, 40)]
    quadratic = [b - a for a, b in zip(needed, needed[1:])]
    assert quadratic[1] > 3 * quadratic[0]
