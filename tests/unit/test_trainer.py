"""The training loop: reproducibility, resuming, K seeds side by side, divergence."""
import json

import pytest
import torch

from biohsic.config import TrainConfig
from biohsic.data import Dataset, load_task
from biohsic.errors import CheckpointError, DivergenceError
from biohsic.train import Trainer, evaluation_windows, sample_order

FAST = dict(task="xor", epochs=2, hidden=(6, 4), window=4)


def small_xor(n_train=120):
    data = load_task("xor")
    return data.first_training_samples(n_train)


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers():
    data = small_xor()
    a = Trainer(TrainConfig(**FAST), dataset=data).run()
    b = Trainer(TrainConfig(**FAST), dataset=data).run()
    assert a["per_model"] == b["per_model"]
    c = Trainer(TrainConfig(**FAST, seed=1), dataset=data).run()
    assert c["per_model"] != a["per_model"]


@pytest.mark.slow
def test_models_side_by_side_match_single_runs():
    data = small_xor()
    both = Trainer(TrainConfig(**FAST, seeds=2, dtype="float64"), dataset=data).run()
    for k in range(2):
        alone = Trainer(TrainConfig(**FAST, seed=k, dtype="float64"), dataset=data).run()
        for key in ("test_loss", "train_loss", "online_loss"):
            assert alone["per_model"][key][0] == pytest.approx(both["per_model"][key][k], rel=1e-9)


@pytest.mark.slow
def test_run_folder_and_resume_equal_an_uninterrupted_run(tmp_path):
    data = small_xor()
    full = Trainer(TrainConfig(**{**FAST, "epochs": 3}), run_dir=tmp_path / "full", dataset=data).run()
    Trainer(TrainConfig(**{**FAST, "epochs": 2}), run_dir=tmp_path / "split", dataset=data).run()
    resumed = Trainer(TrainConfig(**{**FAST, "epochs": 3}), run_dir=tmp_path / "split", dataset=data)
    assert resumed.resume() and resumed.epoch == 2
    summary = resumed.run()
    assert summary["per_model"] == full["per_model"]
    folder = tmp_path / "split"
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "curves.png"} <= {
        p.name for p in folder.iterdir()}
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    saved = json.loads((folder / "summary.json").read_text())
    for key in ("test_accuracy", "train_accuracy", "samples_per_second", "wall_seconds", "config"):
        assert key in saved
    assert not list(folder.glob(".*")), "temporary files left behind"


@pytest.mark.slow
def test_resume_refuses_other_settings(tmp_path):
    data = small_xor()
    Trainer(TrainConfig(**FAST), run_dir=tmp_path, dataset=data).run()
    other = Trainer(TrainConfig(**{**FAST, "gamma": 1.0}), run_dir=tmp_path, dataset=data)
    with pytest.raises(CheckpointError, match="gamma"):
        other.resume()


@pytest.mark.slow
def test_nan_stops_training_and_keeps_earlier_metrics(tmp_path):
    data = small_xor()
    trainer = Trainer(TrainConfig(**{**FAST, "epochs": 3}), run_dir=tmp_path, dataset=data)
    original = trainer.train_epoch

    def poisoned(epoch):
        if epoch == 1:
            trainer.x_train[5] = float("nan")
        return original(epoch)

    trainer.train_epoch = poisoned
    with pytest.raises(DivergenceError, match="diverged.*epoch 2"):
        trainer.run()
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_sample_order_is_a_seeded_permutation():
    a = sample_order(3, 0, 50, torch.device("cpu"))
    assert sorted(a.tolist()) == list(range(50))
    assert torch.equal(a, sample_order(3, 0, 50, torch.device("cpu")))
    assert not torch.equal(a, sample_order(3, 1, 50, torch.device("cpu")))
    assert not torch.equal(a, sample_order(4, 0, 50, torch.device("cpu")))


def test_evaluation_windows_are_fixed_and_distinct_samples():
    w = evaluation_windows(100, 8)
    assert w.shape == (32, 8) and torch.equal(w, evaluation_windows(100, 8))
    assert all(len(set(row.tolist())) == 8 for row in w)


@pytest.mark.slow
def test_xor_is_learned():
    summary = Trainer(TrainConfig(task="xor", epochs=4)).run()
    assert summary["test_accuracy"] >= 0.95


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_run_equals_the_cpu_run():
    runs = [Trainer(TrainConfig(**FAST, device=device, dtype="float64"), dataset=small_xor()).run()
            for device in ("cpu", "cuda")]
    for key in ("test_loss", "train_loss", "online_loss"):
        assert runs[1]["per_model"][key] == pytest.approx(runs[0]["per_model"][key], rel=1e-6)
    assert runs[1]["device"].startswith("cuda")


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["biohsic", "bp"])
def test_the_summary_scores_the_final_network_on_the_whole_test_and_training_sets(rule):
    data = small_xor()
    trainer = Trainer(TrainConfig(**FAST, rule=rule, seeds=2), dataset=data)
    summary = trainer.run()
    split_data = trainer.data  # the training set less the validation set carved from it
    assert len(split_data.x_train) + len(split_data.x_val) == len(data.x_train)
    for split, x, y in (("test", data.x_test, data.y_test), ("train", split_data.x_train, split_data.y_train),
                        ("val", split_data.x_val, split_data.y_val)):
        logits = trainer.network(x)
        accuracy = (logits.argmax(-1) == y).double().mean(-1)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y.expand(2, -1), reduction="none").mean(-1)
        assert summary["per_model"][f"{split}_accuracy"] == pytest.approx(accuracy.tolist(), abs=1e-6)
        assert summary["per_model"][f"{split}_loss"] == pytest.approx(loss.tolist(), rel=1e-5)
    assert isinstance(data, Dataset) and summary["epochs_completed"] == FAST["epochs"]


@pytest.mark.slow
def test_streaming_rules_train_on_one_thread_and_restore_the_setting(monkeypatch):
    seen = []
    trainer = Trainer(TrainConfig(**FAST), dataset=small_xor())
    original = trainer.train_epoch
    monkeypatch.setattr(trainer, "train_epoch", lambda epoch: (seen.append(torch.get_num_threads()), original(epoch))[1])
    before = torch.get_num_threads()
    trainer.run()
    assert seen == [1, 1] and torch.get_num_threads() == before
    assert Trainer(TrainConfig(**FAST, rule="bp"), dataset=small_xor()).threads is None
    assert Trainer(TrainConfig(**FAST), dataset=small_xor(), threads=2).threads == 2


@pytest.mark.slow
def test_a_setting_missing_from_an_older_run_counts_as_its_default(tmp_path):
    from biohsic.train import differing_settings

    data = small_xor()
    Trainer(TrainConfig(**FAST), run_dir=tmp_path, dataset=data).run()
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["phsic_kernel"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert differing_settings(Trainer(TrainConfig(**FAST), dataset=data).config, tmp_path) == []
    other = Trainer(TrainConfig(**FAST, phsic_kernel="cosine"), dataset=data).config
    assert differing_settings(other, tmp_path) == ["phsic_kernel"]
