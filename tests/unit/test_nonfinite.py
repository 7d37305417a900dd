"""Divergence: the first non-finite quantity of a chunk, named by step, layer, quantity and
model (biohsic.nonfinite), and the trainer's message and summary with advice that fits."""
from __future__ import annotations


import pytest
import torch
from hypothesis import given, settings, strategies as st

from biohsic.config import TrainConfig
from biohsic.data import load_task
from biohsic.errors import DivergenceError
from biohsic.nonfinite import NonFinite, NonFiniteWatch
from biohsic.train import Trainer, sample_order

NAN = float("nan")
FAST = dict(task="xor", epochs=1, hidden=(6, 4), window=4, val_fraction=0.0)  # 120 steps on small_xor


@pytest.fixture(scope="module")
def small_xor():
    data = load_task("xor")
    return data.first_training_samples(120)


def k_models(*values):
    return torch.tensor(values).view(len(values), 1)


# --- the watch ---------------------------------------------------------------------------
def test_nothing_non_finite_is_none_and_the_records_are_forgotten():
    watch = NonFiniteWatch()
    assert watch.first() is None
    watch.start_step(0)
    watch.record("logits", "output", torch.ones(2, 3, 4))
    assert watch.first() is None
    watch.record("logits", "output", torch.full((2, 3), NAN))
    assert watch.first() is not None and watch.first() is None


def test_the_earliest_step_wins_then_the_earliest_quantity_of_the_step():
    watch = NonFiniteWatch()
    for step in range(4):
        watch.start_step(step)
        watch.record("input", "input", k_models(1.0, 1.0))
        watch.record("logits", "output", k_models(1.0, NAN if step >= 2 else 1.0))
        watch.record("signal", "hidden layer 1", k_models(1.0, 1.0))
        watch.record("signal", "hidden layer 2", k_models(NAN if step >= 1 else 1.0, 1.0))
    assert watch.first() == NonFinite(1, 0, "signal", "hidden layer 2", (0,))
    watch.start_step(5)
    watch.record("signal", "hidden layer 1", k_models(NAN, 1.0))
    watch.record("input", "input", k_models(1.0, float("inf")))   # recorded later, computed first
    assert watch.first() == NonFinite(5, 0, "input", "input", (1,))


def test_non_finite_logits_after_non_finite_weights_blame_the_update_before():
    watch = NonFiniteWatch()
    for step, substep in ((0, 0), (0, 1), (1, 0)):
        watch.start_step(step, substep)
        watch.record("logits", "output", k_models(NAN if step == 1 else 1.0))
    watch.record("parameter", "readout.weight", k_models(1.0))
    watch.record("parameter", "hidden.1.bias", k_models(-float("inf")))
    assert watch.first() == NonFinite(0, 1, "parameter", "hidden.1.bias", (0,))


def test_non_finite_logits_with_finite_weights_are_an_overflow_of_the_forward_pass():
    watch = NonFiniteWatch()
    watch.start_step(3)
    watch.record("logits", "output", k_models(1.0, -float("inf"), NAN))
    watch.record("parameter", "readout.weight", k_models(1.0, 1.0, 1.0))
    assert watch.first() == NonFinite(3, 0, "logits", "output", (1, 2))


def test_a_sum_per_model_keeps_models_apart():
    watch = NonFiniteWatch()
    value = torch.ones(3, 2, 5)
    value[2, 1, 4] = NAN
    watch.record("signal", "hidden layer 1", value)
    assert watch.first().models == (2,)


# --- through the trainer -----------------------------------------------------------------
class Poisoned:
    """Wraps a modulator; its ``call``-th call returns a non-finite signal for ``layer`` of ``model``."""

    def __init__(self, modulator, call, layer, model):
        self.modulator, self.call, self.layer, self.model, self.calls = modulator, call, layer, model, 0

    def __call__(self, *args):
        signals = self.modulator(*args)
        self.calls += 1
        if self.calls == self.call:
            signals[self.layer] = signals[self.layer].clone()
            signals[self.layer][self.model] = NAN
        return signals

    def __getattr__(self, name):
        return getattr(self.modulator, name)


@settings(max_examples=12, deadline=None)
@given(step=st.integers(4, 120), layer=st.integers(0, 1), model=st.integers(0, 2))
def test_a_non_finite_signal_is_named_by_its_step_layer_and_model(small_xor, step, layer, model):
    trainer = Trainer(TrainConfig(**FAST, seeds=3), dataset=small_xor)
    trainer.rule.modulator = Poisoned(trainer.rule.modulator, step, layer, model)
    with pytest.raises(DivergenceError) as raised:
        trainer.run()
    assert trainer.divergence == {"epoch": 1, "step": step, "time_step": None, "quantity": "signal",
                                  "where": f"hidden layer {layer + 1}", "seeds": [model]}
    message = str(raised.value)
    assert f"epoch 1 at step {step} of 120: the learning signal of hidden layer {layer + 1} became non-finite " \
           f"first (seed {model})" in message
    assert "widen --sigmas (now 0.3,0.25,2) or lower --gamma (now 10)" in message and "--lr" not in message


def test_leaky_units_name_the_time_step_too(small_xor):
    trainer = Trainer(TrainConfig(**FAST, neuron="leaky", steps_per_sample=4), dataset=small_xor)
    trainer.rule.modulator = Poisoned(trainer.rule.modulator, 4 * 9 + 3, 1, 0)   # sample 10, time step 3
    with pytest.raises(DivergenceError, match="at step 10 of 120, time step 3 of 4: the learning signal of hidden "
                                              "layer 2"):
        trainer.run()


def test_weights_made_non_finite_by_an_update_blame_the_learning_rate(small_xor):
    trainer = Trainer(TrainConfig(**FAST, weight_decay=0.5), dataset=small_xor)
    step = trainer.optimizer.step
    updates = []

    def exploding_step():
        step()
        updates.append(1)
        if len(updates) == 50:
            trainer.network.hidden[0].weight.data[0, 1, 1] = float("inf")

    trainer.optimizer.step = exploding_step
    with pytest.raises(DivergenceError) as raised:
        trainer.run()
    assert trainer.divergence["quantity"] == "parameter" and trainer.divergence["step"] == 50
    assert trainer.divergence["where"] == "hidden.0.weight"
    assert "parameter hidden.0.weight (after its update) became non-finite first" in str(raised.value)
    assert "the weights exploded: lower --lr (now 0.001) or --weight-decay (now 0.5)" in str(raised.value)


def test_a_non_finite_input_is_named_as_such(small_xor):
    trainer = Trainer(TrainConfig(**FAST, rule="bp", batch_size=8), dataset=small_xor)
    third_of_step_6 = sample_order(0, 0, 120, trainer.device)[5 * 8 + 2]   # seed 0, epoch 0
    trainer.x_train = trainer.x_train.clone()   # (the trainer's tensor is the dataset's on the CPU)
    trainer.x_train[third_of_step_6, 0] = NAN    # after the dataset was checked
    with pytest.raises(DivergenceError, match="at step 6 of 15: the training input became non-finite first"):
        trainer.run()


def test_the_engine_is_asked_once_per_chunk(small_xor, monkeypatch):
    import biohsic.train

    monkeypatch.setattr(biohsic.train, "CHUNK_STEPS", 32)
    trainer = Trainer(TrainConfig(**FAST), dataset=small_xor)
    asked = []
    first = trainer.engine.first_nonfinite
    trainer.engine.first_nonfinite = lambda: (asked.append(1), first())[1]
    trainer.run()
    assert len(asked) == 4   # 120 steps in chunks of 32


def test_a_divergence_in_epoch_2_keeps_the_last_good_checkpoint_and_says_so(small_xor, tmp_path):
    trainer = Trainer(TrainConfig(**{**FAST, "epochs": 2}), dataset=small_xor, run_dir=tmp_path, checkpoint_every=25)
    trainer.rule.modulator = Poisoned(trainer.rule.modulator, 120 + 60, 0, 0)
    with pytest.raises(DivergenceError, match=f"the last good checkpoint \\(epoch 1, step 50\\) is kept in {tmp_path}"):
        trainer.run()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 50)
    assert all(torch.isfinite(value).all() for value in saved["network"].values())
