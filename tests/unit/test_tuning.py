"""`compare --tune`: default grids, the choice on validation, the tables, and the proof that
no code path reads test data to choose anything (a poisoned test set changes no choice)."""
import csv
import dataclasses
import io
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from biohsic import compare as cmp
from biohsic import sweep as sw
from biohsic import train as train_module
from biohsic.config import TrainConfig
from biohsic.data import load_task
from biohsic.errors import ConfigError

BASE = TrainConfig(task="xor", epochs=1, hidden=(4, 3), window=4, seeds=2)
GRID = {"lr": (1e-3, 3e-2), "batch_size": (8, 32)}


def quiet(message):
    """A log that drops its messages."""


def use_data(monkeypatch, data):
    """Runs in this process load ``data``."""
    monkeypatch.setattr(train_module, "load_task", lambda *args, **kwargs: data)


@pytest.fixture
def small_xor(monkeypatch):
    data = load_task("xor")
    small = data.first_training_samples(160)
    use_data(monkeypatch, small)
    return small


@pytest.mark.parametrize("rule, lr, grid", [
    ("biohsic", 1e-3, {"lr": (3e-4, 1e-3, 3e-3)}),
    ("phsic-stream", 1e-4, {"lr": (3e-5, 1e-4, 3e-4)}),
    ("bp", 1e-3, {"lr": (1e-3, 3e-3, 1e-2, 3e-2), "batch_size": (8, 32)}),
    ("readout", 1e-4, {"lr": (1e-4, 3e-4, 1e-3, 3e-3), "batch_size": (8, 32)}),
    ("bp", 1.2e-3, {"lr": (1e-3, 3e-3, 1e-2, 3e-2), "batch_size": (8, 32)}),
    ("biohsic", 1e-5, {"lr": (1e-5, 3e-5)}),
])
def test_default_grids_are_learning_rates_around_the_runs(rule, lr, grid):
    assert cmp.default_grid(TrainConfig(task="digits", rule=rule, lr=lr).resolved()) == grid


def test_a_given_grid_drops_the_batch_size_of_streaming_rules():
    streaming = TrainConfig(task="xor", rule="biohsic").resolved()
    minibatch = TrainConfig(task="xor", rule="bp").resolved()
    assert cmp.rule_grid(streaming, GRID) == {"lr": (1e-3, 3e-2)}
    assert cmp.rule_grid(minibatch, GRID) == GRID
    assert cmp.rule_grid(minibatch, None) == cmp.default_grid(minibatch)


def test_the_best_is_the_highest_validation_accuracy_then_the_lowest_loss_then_the_first():
    scores = [cmp.ValidationScore(0.8, 0.5), None, cmp.ValidationScore(0.9, 0.7), cmp.ValidationScore(0.9, 0.6),
              cmp.ValidationScore(0.9, 0.6)]
    assert cmp.best_on_validation(scores) == 3
    assert cmp.best_on_validation([None, None]) is None
    assert cmp.best_on_validation([]) is None


@given(st.lists(st.one_of(st.none(), st.builds(cmp.ValidationScore, st.floats(0, 1), st.floats(0, 5))), max_size=8))
def test_no_eligible_score_beats_the_chosen_one(scores):
    best = cmp.best_on_validation(scores)
    eligible = [s for s in scores if s is not None]
    if not eligible:
        assert best is None
        return
    chosen = scores[best]
    assert all((chosen.accuracy, -chosen.loss) >= (s.accuracy, -s.loss) for s in eligible)


def test_failed_diverged_and_unvalidated_trials_cannot_be_chosen(tmp_path):
    (trial,) = sw.plan_sweep(BASE, "bp", {}, tmp_path)
    nan = (math.nan, math.nan)
    done = sw.TrialResult(trial, "completed", 1, (0.9, 0.0), (0.3, 0.0), nan, nan, nan, 1.0, 1.0)
    assert cmp.validation_score(done) == cmp.ValidationScore(0.9, 0.3)
    assert cmp.validation_score(dataclasses.replace(done, status="diverged")) is None
    assert cmp.validation_score(dataclasses.replace(done, status="failed")) is None
    assert cmp.validation_score(dataclasses.replace(done, val_accuracy=nan, val_loss=nan)) is None


@pytest.mark.parametrize("value, note", [(1e-3, " (lr lowest tried)"), (3e-3, ""), (1e-2, " (lr highest tried)")])
def test_a_setting_at_the_edge_of_its_grid_says_so(tmp_path, value, note):
    grid = {"lr": (1e-3, 3e-3, 1e-2), "batch_size": (8, 32)}
    trial = sw.Trial("bp", (("lr", value), ("batch_size", 8)), BASE, tmp_path)
    nan = (math.nan, math.nan)
    chosen = sw.TrialResult(trial, "completed", 1, (0.9, 0.0), (0.3, 0.0), nan, nan, nan, 1.0, 1.0)
    assert cmp.Tuned("bp", grid, (chosen,), chosen).setting == f"lr={value!r}, batch_size=8{note}"
    assert cmp.Tuned("bp", grid, (), None).setting == "none completed"


def tuned_choices(tunings):
    return {t.label: (t.setting, t.chosen.val_accuracy, t.chosen.val_loss) for t in tunings}


@pytest.mark.slow
def test_tuning_chooses_each_rules_best_validation_trial_and_writes_the_tables(tmp_path, small_xor):
    tunings = cmp.tune(BASE, "biohsic,bp", tmp_path, GRID, log=quiet)
    assert [t.label for t in tunings] == ["biohsic", "bp"]
    assert [len(t.trials) for t in tunings] == [2, 4]
    for t in tunings:
        best = max(r.val_accuracy[0] for r in t.trials)
        assert t.chosen.val_accuracy[0] == best
        assert t.chosen.run_dir.parent == tmp_path / "tune" / t.label
        assert t.setting == sw.point_text(t.chosen.trial.point, ", ")
    page = (tmp_path / "compare.md").read_text()
    assert "| rule | setting (chosen on validation) | batch |" in page
    assert f"| bp | {tunings[1].setting} |" in page
    assert "- biohsic: lr ∈ {0.001, 0.03}" in page and "- bp: lr ∈ {0.001, 0.03}; batch_size ∈ {8, 32}" in page
    assert "AdamW lr" not in page and "minibatch 32" not in page  # tuned settings are not "shared"
    records = list(csv.DictReader(io.StringIO((tmp_path / "compare.csv").read_text())))
    assert [r["setting"] for r in records] == [t.setting for t in tunings]
    assert float(records[1]["test_accuracy_mean"]) == pytest.approx(tunings[1].chosen.test_accuracy[0])
    trials = list(csv.DictReader(io.StringIO((tmp_path / "tuning.csv").read_text())))
    assert len(trials) == 6 and (tmp_path / "tuning.png").exists() and (tmp_path / "compare.png").exists()


@pytest.mark.slow
def test_no_code_path_reads_test_data_to_choose_anything(tmp_path, monkeypatch, small_xor):
    """Tune twice: on the task, and with its test set poisoned (other inputs, far from the
    training data, and every label changed). Every choice and every validation figure is the
    same; the test figures are not."""
    clean = cmp.tune(BASE, "biohsic,bp", tmp_path / "clean", GRID, log=quiet)
    noise = torch.randn(small_xor.x_test.shape, generator=torch.Generator().manual_seed(5)) * 50
    poisoned_data = dataclasses.replace(small_xor, x_test=noise, y_test=1 - small_xor.y_test)
    use_data(monkeypatch, poisoned_data)
    poisoned = cmp.tune(BASE, "biohsic,bp", tmp_path / "poisoned", GRID, log=quiet)
    assert tuned_choices(poisoned) == tuned_choices(clean)
    for a, b in zip(clean, poisoned):
        assert [(r.val_accuracy, r.val_loss) for r in a.trials] == [(r.val_accuracy, r.val_loss) for r in b.trials]
        assert all(ra.test_loss != rb.test_loss for ra, rb in zip(a.trials, b.trials))
    reported = [json.loads((t.chosen.run_dir / "summary.json").read_text()) for t in (clean[1], poisoned[1])]
    assert reported[0]["per_model"]["val_accuracy"] == reported[1]["per_model"]["val_accuracy"]
    assert reported[0]["per_model"]["test_accuracy"] != reported[1]["per_model"]["test_accuracy"]


def test_tuning_needs_a_validation_set(tmp_path):
    with pytest.raises(ConfigError, match="--val-fraction must be above 0"):
        cmp.tune(dataclasses.replace(BASE, val_fraction=0.0), "bp", tmp_path, GRID, log=quiet)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_rerun_of_a_tuning_trains_nothing(tmp_path, small_xor, monkeypatch):
    first = cmp.tune(BASE, "bp", tmp_path, {"lr": (1e-3, 3e-2)}, log=quiet)

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(train_module.Trainer, "run", no_training)
    again = cmp.tune(BASE, "bp", tmp_path, {"lr": (1e-3, 3e-2)}, log=quiet)
    assert tuned_choices(again) == tuned_choices(first)
