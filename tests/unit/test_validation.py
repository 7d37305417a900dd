"""The validation split: carved from the training data, stratified, seeded; with fraction 0
every earlier number is unchanged; metrics and summaries carry validation and test figures."""
import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from biohsic.config import TrainConfig
from biohsic.data import Dataset, load_task, split_validation, validation_indices
from biohsic.errors import ConfigError
from biohsic.train import Trainer, differing_settings, load_dataset

FAST = dict(task="xor", epochs=1, hidden=(4, 3), window=4, seeds=2)


def labelled(counts):
    """A dataset whose training labels are ``counts[c]`` samples of class c, shuffled; inputs identify the sample."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    x = torch.arange(len(labels), dtype=torch.float32)[:, None].repeat(1, 3)
    return Dataset("toy", x, labels, x[:2], labels[:2], n_classes=len(counts), input_shape=(3,))


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=2, max_size=6).filter(lambda c: sum(c) >= 2),
       fraction=st.floats(0.01, 0.9), seed=st.integers(0, 2**31))
def test_the_split_is_stratified_disjoint_and_complete(counts, fraction, seed):
    data = labelled(counts)
    n = len(data.y_train)
    index = validation_indices(data.y_train, fraction, seed)
    assert len(index) == min(n, max(1, round(fraction * n)))
    assert len(set(index.tolist())) == len(index) and index.tolist() == sorted(index.tolist())
    for c, n_c in enumerate(counts):  # each class within one sample of its share
        chosen = int((data.y_train[index] == c).sum())
        assert abs(chosen - n_c * len(index) / n) < 1 + 1e-9
        assert chosen <= n_c
    if len(index) < n:
        split = split_validation(data, fraction, seed)
        ids = torch.cat([split.x_train[:, 0], split.x_val[:, 0]]).long().sort().values
        assert torch.equal(ids, torch.arange(n))  # every training sample exactly once
        assert torch.equal(split.y_val, data.y_train[index])
        kept = split.x_train[:, 0].tolist()
        assert kept == sorted(kept)  # the training samples keep their order


def test_the_split_is_a_function_of_the_data_seed():
    data = load_task("digits")
    a, b = split_validation(data, 0.1, 0), split_validation(data, 0.1, 0)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    c = split_validation(data, 0.1, 1)
    assert not torch.equal(a.x_val, c.x_val)
    assert len(a.y_val) == 144 and len(a.y_train) == 1293
    assert torch.equal(torch.bincount(a.y_val, minlength=10).clamp(max=1), torch.ones(10, dtype=torch.long))


@pytest.mark.parametrize("task, n_train, n_val", [("linear", 810, 90), ("xor", 810, 90), ("digits", 1293, 144)])
def test_the_documented_sizes(task, n_train, n_val):
    data = load_dataset(TrainConfig(task=task).resolved())
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (n_train, n_val, len(load_task(task).y_test))


def test_fraction_zero_keeps_the_training_set_exactly():
    data = load_task("xor")
    split = split_validation(data, 0.0, 3)
    assert torch.equal(split.x_train, data.x_train) and torch.equal(split.y_train, data.y_train)
    assert split.x_val.shape == (0, 2) and split.has_validation


#: Per-model losses of two xor runs (float64) computed by the library before the validation
#: split existed; with --val-fraction 0 they must not change.
BEFORE_THE_SPLIT = {
    "biohsic": {"test_loss": [0.6886900708564433, 0.35862784528657615],
                "train_loss": [0.6856699812929776, 0.35338008451252334],
                "online_loss": [0.7652196549617079, 0.6052629401905848]},
    "bp": {"test_loss": [0.8794415892425416, 0.6450010409413933],
           "train_loss": [0.8827310504065822, 0.6792799865790848],
           "online_loss": [0.9048515270847641, 0.701588596806024]},
}


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(BEFORE_THE_SPLIT))
def test_fraction_zero_reproduces_the_numbers_from_before_the_split(rule):
    summary = Trainer(TrainConfig(**FAST, rule=rule, dtype="float64", val_fraction=0.0)).run()
    for key, values in BEFORE_THE_SPLIT[rule].items():
        assert summary["per_model"][key] == pytest.approx(values, rel=1e-6), key
    assert summary["val_accuracy"] is None and "val_accuracy" not in summary["per_model"]


@pytest.mark.slow
def test_metrics_and_summary_carry_validation_and_test_figures(tmp_path):
    summary = Trainer(TrainConfig(**{**FAST, "epochs": 2}), run_dir=tmp_path).run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        for split in ("val", "test"):
            per_model = row["per_model"][f"{split}_accuracy"]
            assert len(per_model) == 2 and row[f"{split}_accuracy"] == pytest.approx(sum(per_model) / 2)
            assert len(row["per_model"][f"{split}_loss"]) == 2
    assert summary["val_accuracy"] == rows[-1]["val_accuracy"] and summary["val_loss"] == rows[-1]["val_loss"]
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (810, 90, 100)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["val_accuracy"] == summary["val_accuracy"] and saved["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.slow
def test_validation_figures_are_measured_on_the_validation_samples():
    data = load_dataset(TrainConfig(task="xor", val_fraction=0.2).resolved())
    swapped = dataclasses.replace(data, x_val=data.x_test, y_val=data.y_test)
    summary = Trainer(TrainConfig(**FAST, val_fraction=0.2), dataset=swapped).run()
    assert summary["per_model"]["val_accuracy"] == summary["per_model"]["test_accuracy"]


def test_a_dataset_without_a_split_is_split_by_the_trainer():
    data = load_task("xor")
    trainer = Trainer(TrainConfig(**FAST, val_fraction=0.5), dataset=data)
    assert len(trainer.x_val) == 450 and len(trainer.x_train) == 450


@pytest.mark.parametrize("fraction, fragment", [(1.0, r"--val-fraction must be in \[0, 1\)"),
                                                (-0.1, r"--val-fraction must be in \[0, 1\)")])
def test_bad_fractions_are_config_errors(fraction, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(task="xor", val_fraction=fraction).resolved()
    with pytest.raises(ConfigError, match=fragment):
        split_validation(load_task("xor"), fraction, 0)


def test_splitting_twice_or_to_nothing_is_refused():
    data = split_validation(load_task("xor"), 0.1, 0)
    with pytest.raises(ConfigError, match="already has a validation set"):
        split_validation(data, 0.1, 0)
    tiny = labelled([1, 0])
    with pytest.raises(ConfigError, match="leaves no toy training sample"):
        split_validation(tiny, 0.5, 0)


@pytest.mark.slow
def test_a_run_saved_before_the_split_existed_counts_as_fraction_zero(tmp_path):
    Trainer(TrainConfig(**FAST, val_fraction=0.0), run_dir=tmp_path).run()
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["val_fraction"]  # as written by earlier versions
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert differing_settings(TrainConfig(**FAST, val_fraction=0.0).resolved(), tmp_path) == []
    assert differing_settings(TrainConfig(**FAST).resolved(), tmp_path) == ["val_fraction"]


def test_train_samples_keeps_the_first_training_samples_and_the_same_validation_set():
    full = load_dataset(TrainConfig(task="xor").resolved())
    cut = load_dataset(TrainConfig(task="xor", train_samples=50).resolved())
    assert torch.equal(cut.x_train, full.x_train[:50]) and torch.equal(cut.y_train, full.y_train[:50])
    assert torch.equal(cut.x_val, full.x_val) and torch.equal(cut.x_test, full.x_test)
