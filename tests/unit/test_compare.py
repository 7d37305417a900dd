"""`biohsic.compare`: rule labels, the grid, reuse and resume of runs, aggregation, outputs."""
import csv
import dataclasses
import io
import json
import math
import statistics

import pytest

from biohsic import compare as cmp
from biohsic import sweep as sw
from biohsic.config import TrainConfig
from biohsic.errors import CheckpointError, ConfigError, DivergenceError
from biohsic.rules import RULES
from biohsic.train import Trainer

pytestmark = pytest.mark.slow  # end-to-end runs of the command line / trainer

BASE = TrainConfig(task="xor", epochs=1, hidden=(4, 3), window=4, seeds=2)
RULE_SET = "biohsic,biohsic:paper,bp,readout"


def quiet(message):
    """A log that drops its messages."""


def test_labels_name_the_rule_and_a_modulator_other_than_exact():
    assert sw.rule_label("biohsic", "exact") == "biohsic"
    assert sw.rule_label("biohsic", "paper") == "biohsic:paper"
    assert sw.rule_label("bp", "exact") == "bp"


def test_all_is_every_registered_rule_plus_the_paper_signal():
    pairs = sw.parse_rules("all")
    assert [sw.rule_label(*p) for p in pairs] == sw.all_labels()
    assert {rule for rule, _ in pairs} == set(RULES)
    assert ("biohsic", "paper") in pairs and ("biohsic", "exact") in pairs


def test_parse_rules_keeps_the_order_and_the_modulators():
    assert sw.parse_rules(" bp , biohsic:paper,biohsic ") == [
        ("bp", "exact"), ("biohsic", "paper"), ("biohsic", "exact")]
    assert sw.parse_rules("biohsic,readout", modulator="paper") == [("biohsic", "paper"), ("readout", "exact")]
    assert sw.parse_rules(["phsic", "hsic"]) == [("phsic", "exact"), ("hsic", "exact")]


@pytest.mark.parametrize("text, fragment", [
    ("bp,magic", "unknown rule 'magic'"),
    ("bp:paper", "only biohsic takes a modulator"),
    ("biohsic:oracle", "unknown modulator 'oracle'"),
    ("biohsic,biohsic:exact", "lists biohsic twice"),
    (" , ", "names no rule"),
])
def test_bad_rule_lists_are_config_errors(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        sw.parse_rules(text)


def test_plan_gives_each_label_its_rule_modulator_and_folder(tmp_path):
    entries = cmp.plan(BASE, RULE_SET, tmp_path)
    assert [e.label for e in entries] == RULE_SET.split(",")
    assert [e.run_dir.name for e in entries] == ["biohsic", "biohsic-paper", "bp", "readout"]
    assert [(e.config.rule, e.config.modulator) for e in entries] == [
        ("biohsic", "exact"), ("biohsic", "paper"), ("bp", "exact"), ("readout", "exact")]
    for e in entries:  # every other setting is shared
        assert dataclasses.replace(e.config, rule="bp", modulator="exact") == entries[2].config


def test_plan_validates_every_row_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="--seeds must be at least 1"):
        cmp.plan(dataclasses.replace(BASE, seeds=0), "bp", tmp_path)
    with pytest.raises(ConfigError, match="--neuron leaky"):  # fine for biohsic, not for bp
        cmp.plan(dataclasses.replace(BASE, neuron="leaky"), "biohsic,bp", tmp_path)


def test_mean_sd_is_the_mean_and_the_sample_standard_deviation():
    values = [0.5, 0.75, 0.25, 1.0]
    assert sw.mean_sd(values) == (pytest.approx(0.625), pytest.approx(statistics.stdev(values)))
    assert sw.mean_sd(values)[1] == pytest.approx(0.3227486, rel=1e-6)  # n - 1 in the denominator
    mean, sd = sw.mean_sd([0.3])
    assert mean == 0.3 and math.isnan(sd)
    assert all(math.isnan(v) for v in sw.mean_sd(None))
    mean, sd = sw.mean_sd([0.5, math.nan])  # a diverged loss
    assert math.isnan(mean) and math.isnan(sd)
    assert sw.mean_sd([1.0, math.inf])[0] == math.inf


def test_compare_writes_the_table_the_csv_and_the_figure(tmp_path, small_xor):
    rows = cmp.compare(BASE, RULE_SET, tmp_path, log=quiet)
    assert [r.label for r in rows] == RULE_SET.split(",")
    for row in rows:
        summary = json.loads((row.run_dir / "summary.json").read_text())
        assert summary["config"]["rule"] == row.config.rule and summary["seeds"] == [0, 1]
        acc = summary["per_model"]["test_accuracy"]
        assert row.test_accuracy == (pytest.approx(statistics.fmean(acc)), pytest.approx(statistics.stdev(acc)))
        val = summary["per_model"]["val_accuracy"]
        assert row.val_accuracy == (pytest.approx(statistics.fmean(val)), pytest.approx(statistics.stdev(val)))
        assert row.status == "completed" and row.epochs_completed == 1
    table = (tmp_path / "compare.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].split("|")[1:-1] == [" rule ", " batch ", " seeds ", " epochs ", " val accuracy (%) ",
                                         " test accuracy (%) ", " test loss ", " samples/s ", " train time (s) "]
    assert [line.split("|")[1].strip() for line in lines[2:]] == RULE_SET.split(",")
    assert lines[2].split("|")[2].strip() == "1 (N=4)" and lines[4].split("|")[2].strip() == "32"
    assert " ± " in lines[2]
    assert "task xor; hidden 4,3" in table
    records = list(csv.DictReader(io.StringIO((tmp_path / "compare.csv").read_text())))
    assert [r["rule"] for r in records] == RULE_SET.split(",")
    assert tuple(records[0]) == cmp.CSV_COLUMNS
    for record, row in zip(records, rows):
        assert float(record["test_accuracy_mean"]) == pytest.approx(row.test_accuracy[0])
        assert float(record["val_accuracy_sd"]) == pytest.approx(row.val_accuracy[1])
        assert float(record["test_loss_sd"]) == pytest.approx(row.test_loss[1])
        assert float(record["samples_per_second"]) > 0 and int(record["seeds"]) == 2
    assert records[1]["modulator"] == "paper" and records[2]["modulator"] == ""
    png = (tmp_path / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_a_second_compare_reuses_the_finished_runs(tmp_path, small_xor, monkeypatch):
    first = cmp.compare(BASE, RULE_SET, tmp_path, log=quiet)
    assert all(sw.trial_state(e) == "reuse" for e in cmp.plan(BASE, RULE_SET, tmp_path))

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "run", no_training)
    messages = []
    second = cmp.compare(BASE, RULE_SET, tmp_path, log=messages.append)
    assert [(r.label, r.test_accuracy, r.test_loss) for r in second] == [
        (r.label, r.test_accuracy, r.test_loss) for r in first]
    assert all("reusing" in m for m in messages)


def test_an_unfinished_run_resumes_from_its_checkpoint(tmp_path, small_xor):
    cmp.compare(BASE, "bp", tmp_path, log=quiet)
    longer = dataclasses.replace(BASE, epochs=2)
    (entry,) = cmp.plan(longer, "bp", tmp_path)
    assert sw.trial_state(entry) == "resume"
    messages = []
    (row,) = cmp.compare(longer, "bp", tmp_path, log=messages.append)
    assert "resuming" in messages[0] and row.epochs_completed == 2
    uninterrupted = Trainer(entry.config, dataset=small_xor).run()
    assert row.test_accuracy[0] == pytest.approx(uninterrupted["test_accuracy"])


def test_a_folder_with_other_settings_stops_the_comparison_before_any_training(tmp_path, small_xor):
    cmp.compare(BASE, "bp", tmp_path, log=quiet)
    with pytest.raises(CheckpointError, match="other settings \\(--seeds: 2 saved, 3 given\\)"):
        cmp.compare(dataclasses.replace(BASE, seeds=3), "readout,bp", tmp_path, log=quiet)
    assert not (tmp_path / "readout").exists()
    cmp.compare(dataclasses.replace(BASE, epochs=2), "bp", tmp_path / "longer", log=quiet)
    with pytest.raises(CheckpointError, match="holds 2 epochs of bp, more than --epochs 1"):
        cmp.compare(BASE, "bp", tmp_path / "longer", log=quiet)


def test_a_diverged_run_is_a_row_not_an_abort(tmp_path, small_xor, monkeypatch):
    train_epoch = Trainer.train_epoch

    def diverge_in_epoch_2(self, epoch):
        if epoch == 1:
            raise DivergenceError("training diverged in epoch 2")
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", diverge_in_epoch_2)
    two = dataclasses.replace(BASE, epochs=2)
    rows = cmp.compare(two, "bp,readout", tmp_path, log=quiet)
    assert [(r.status, r.epochs_completed) for r in rows] == [("diverged", 1), ("diverged", 1)]
    assert not math.isnan(rows[0].test_accuracy[0])
    assert "| 1 of 2, diverged |" in cmp.markdown_table(rows)
    assert [sw.trial_state(e) for e in cmp.plan(two, "bp,readout", tmp_path)] == ["reuse", "reuse"]


def test_learning_curves_average_the_seeds_per_epoch(tmp_path, small_xor):
    (row,) = cmp.compare(dataclasses.replace(BASE, epochs=2), "readout", tmp_path, log=quiet)
    metrics = [json.loads(line) for line in (row.run_dir / "metrics.jsonl").read_text().splitlines()]
    curves = cmp.learning_curves(row.run_dir)
    assert curves["epoch"] == [1, 2]
    for i, m in enumerate(metrics):
        assert curves["accuracy_mean"][i] == pytest.approx(statistics.fmean(m["per_model"]["test_accuracy"]))
        assert curves["loss_sd"][i] == pytest.approx(statistics.stdev(m["per_model"]["test_loss"]))
