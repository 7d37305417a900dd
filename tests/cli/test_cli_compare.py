"""`biohsic compare`: the printed table, the output folder, reuse, and one-line errors (exit 2)."""
import csv
import os
import subprocess
import sys

import pytest

from biohsic.cli import main
from biohsic.train import Trainer

pytestmark = pytest.mark.slow  # end-to-end runs of the command line / trainer

FAST = ["--task", "xor", "--epochs", "1", "--hidden", "4,3", "--window", "4", "--seeds", "2", "--no-progress"]


def table_rows(text):
    """The first cell of each body row of a Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [line.split("|")[1].strip() for line in lines[2:]]


def test_compare_prints_the_table_and_writes_its_files(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "biohsic", "compare", *FAST, "--rules", "bp,readout",
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout) == ["bp", "readout"]
    assert result.stdout.splitlines()[0].startswith("| rule | batch | seeds | epochs | val accuracy (%) | test accuracy (%)")
    for name in ("compare.md", "compare.csv", "compare.png", "bp/summary.json", "readout/checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    assert table_rows((tmp_path / "compare.md").read_text()) == ["bp", "readout"]
    with open(tmp_path / "compare.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [r["rule"] for r in records] == ["bp", "readout"]
    assert all(0 <= float(r["test_accuracy_mean"]) <= 1 for r in records)


def test_a_second_invocation_reuses_the_runs(tmp_path, capsys, monkeypatch):
    args = ["compare", *FAST, "--rules", "biohsic:paper,bp", "--out", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert table_rows(first) == ["biohsic:paper", "bp"]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.pt")}

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "run", no_training)
    assert main(args) == 0
    second = capsys.readouterr()
    assert second.out == first
    assert second.err.count("reusing") == 2
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.pt")} == stamps


@pytest.mark.parametrize("args, fragment", [
    (["--task", "xor", "--rules", "bp,magic"], "unknown rule 'magic'"),
    (["--task", "xor", "--rules", "readout:paper"], "only biohsic takes a modulator"),
    (["--task", "xor", "--seeds", "0"], "--seeds must be at least 1"),
    (["--task", "mnist", "--data-dir", "/nonexistent/dir"], "mnist files not found"),
    (["--task", "xor", "--rules", "bp", "--neuron", "leaky"], "--neuron leaky"),
])
def test_bad_input_gives_one_line_and_exit_2_before_training(tmp_path, capsys, monkeypatch, args, fragment):
    def no_training(self, *args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(Trainer, "run", no_training)
    code = main(["compare", *args, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("biohsic: error:") and fragment in err[0]
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_other_settings_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["compare", *FAST, "--rules", "bp", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    code = main(["compare", *FAST, "--rules", "bp", "--lr", "0.01", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "holds a bp run with other settings (--lr: 0.001 saved, 0.01 given)" in err[0]


def test_help_explains_the_rule_labels(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "biohsic:paper" in text and "'all'" in text and "reused" in text


def test_tune_prints_each_rule_at_its_setting_chosen_on_validation(tmp_path, capsys):
    args = ["compare", *FAST, "--rules", "biohsic,bp", "--tune", "lr=1e-3,1e-2,batch_size=8,32", "--workers", "1",
            "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| rule | setting (chosen on validation) | batch |")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["biohsic", "bp"]
    assert rows[0][1] in ("lr=0.001", "lr=0.01") and rows[1][1].startswith("lr=")
    assert "batch_size=" in rows[1][1] and "batch_size" not in rows[0][1]
    with open(tmp_path / "tuning.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    assert [t["rule"] for t in trials] == ["biohsic"] * 2 + ["bp"] * 4
    best_bp = max((t for t in trials if t["rule"] == "bp"), key=lambda t: float(t["val_accuracy_mean"]))
    assert rows[1][1] == f"lr={best_bp['lr']}, batch_size={best_bp['batch_size']}"


def test_tune_alone_takes_each_rules_default_grid(tmp_path, capsys):
    assert main(["compare", *FAST, "--rules", "readout", "--tune", "--workers", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    with open(tmp_path / "tuning.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    assert [(t["lr"], t["batch_size"]) for t in trials] == [
        (lr, b) for lr in ("0.001", "0.003", "0.01", "0.03") for b in ("8", "32")]
    assert "- readout: lr ∈ {0.001, 0.003, 0.01, 0.03}; batch_size ∈ {8, 32}" in (tmp_path / "compare.md").read_text()


@pytest.mark.parametrize("args, fragment", [
    (["--tune", "windows=2,4"], "--tune 'windows=2,4': unknown setting 'windows'"),
    (["--tune", "lr=fast"], "lr takes a number"),
    (["--tune", "--val-fraction", "0"], "--val-fraction must be above 0"),
])
def test_bad_tuning_input_is_one_line_exit_2(tmp_path, capsys, args, fragment):
    code = main(["compare", *FAST, "--rules", "bp", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert fragment in err[0]
    assert not (tmp_path / "out").exists()
