"""`--preset`, `--config FILE` and `--val-fraction` on the command line: a run folder's
config.json reruns it exactly, the precedence of the layers, and one-line errors (exit 2)."""
import json

import pytest

from biohsic.cli import main
from biohsic.train import Trainer

pytestmark = pytest.mark.slow  # end-to-end runs of the command line

FAST = ["--task", "xor", "--epochs", "2", "--hidden", "4,3", "--window", "4", "--no-progress"]


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


@pytest.mark.parametrize("rule", ["biohsic", "bp"])
def test_a_runs_config_json_reproduces_its_numbers_exactly(tmp_path, rule):
    assert main(["train", *FAST, "--rule", rule, "--seeds", "2", "--lr", "3e-3", "--data-seed", "4",
                 "--out", str(tmp_path / "x")]) == 0
    assert main(["train", "--config", str(tmp_path / "x" / "config.json"), "--no-progress",
                 "--out", str(tmp_path / "y")]) == 0
    first, again = summary(tmp_path / "x"), summary(tmp_path / "y")
    assert again["per_model"] == first["per_model"]  # every metric of every seed, bit for bit
    assert again["config"] == first["config"]
    metrics = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("x", "y")]
    assert [json.loads(r)["per_model"] for r in metrics[0]] == [json.loads(r)["per_model"] for r in metrics[1]]
    sources = json.loads((tmp_path / "y" / "config_sources.json").read_text())
    assert set(sources.values()) == {f"config file {tmp_path / 'x' / 'config.json'}"}


def test_explicit_options_override_the_file_which_overrides_the_preset(tmp_path):
    toml = tmp_path / "settings.toml"
    toml.write_text("lr = 3e-4\ngamma = 5.0\nepochs = 1\n")
    assert main(["train", "--preset", "paper-xor", "--config", str(toml), "--lr", "2e-3", "--neuron", "rate",
                 "--hidden", "4,3", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    sources = json.loads((tmp_path / "run" / "config_sources.json").read_text())
    assert (config["lr"], sources["lr"]) == (2e-3, "command line")
    assert (config["gamma"], sources["gamma"]) == (5.0, f"config file {toml}")
    assert (config["epochs"], sources["epochs"]) == (1, f"config file {toml}")
    assert (config["window"], sources["window"]) == (10, "preset paper-xor")
    assert (config["weight_decay"], sources["weight_decay"]) == (1e-4, "preset paper-xor")
    assert (config["task"], sources["task"]) == ("xor", "preset paper-xor")
    assert (config["batch_size"], sources["batch_size"]) == (32, "library default")
    assert sources["val_fraction"] == "library default" and config["val_fraction"] == 0.1


def test_without_a_preset_or_file_the_task_defaults_fill_in(tmp_path):
    assert main(["train", *FAST, "--out", str(tmp_path)]) == 0
    sources = json.loads((tmp_path / "config_sources.json").read_text())
    assert sources["gamma"] == "task default (xor)" and sources["epochs"] == "command line"
    assert sources["rule"] == "library default"


def test_val_fraction_zero_trains_on_the_whole_training_set(tmp_path, capsys):
    assert main(["train", *FAST, "--val-fraction", "0", "--out", str(tmp_path)]) == 0
    saved = summary(tmp_path)
    assert saved["n_train"] == 900 and saved["n_val"] == 0 and saved["val_accuracy"] is None
    assert "val_accuracy" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
@pytest.mark.parametrize("args, fragment", [
    (["--preset", "paper-imagenet"], "argument --preset: invalid choice: 'paper-imagenet'"),
    (["--config", "{toml}"], "not valid TOML"),
    (["--config", "{unknown}"], "unknown setting 'learning_rate'"),
    (["--config", "{absent}"], "no such file"),
    (["--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
])
def test_bad_presets_and_files_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, command, args,
                                                                     fragment):
    def no_training(self, *args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(Trainer, "run", no_training)
    (tmp_path / "bad.toml").write_text("lr = \n")
    (tmp_path / "unknown.toml").write_text("learning_rate = 1e-3\n")
    names = {"toml": tmp_path / "bad.toml", "unknown": tmp_path / "unknown.toml", "absent": tmp_path / "none.toml"}
    args = [a.format(**names) for a in args]
    code = exit_code(main, [command, "--task", "xor", *args, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert fragment in err[0]
    assert not (tmp_path / "out").exists()


def exit_code(function, args):
    """``function(args)``'s return value, or the code of the SystemExit it raised (argparse's errors)."""
    try:
        return function(args)
    except SystemExit as exit_:
        return exit_.code
