"""Presets, configuration files and the precedence of a run's settings."""
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biohsic.config import TASK_DEFAULTS, TrainConfig
from biohsic.errors import ConfigError
from biohsic.presets import PRESETS, SETTINGS, config_sources, layered_config, read_config_file, setting_type

#: SPEC §7, written out here independently of the library: (task, hidden, neuron, N, γ, σ, lr, epochs).
PAPER = {
    "paper-linear": ("linear", (4,), "leaky", 10, 10.0, (0.5, 0.25, 1.0), 1e-4, 25),
    "paper-xor": ("xor", (10, 4), "leaky", 10, 10.0, (0.3, 0.25, 2.0), 1e-4, 25),
    "paper-mnist": ("mnist", (128, 64), "rate", 6, 2.0, (0.5, 0.1, 1.0), 1e-4, 25),
    "paper-fashion-mnist": ("fashion-mnist", (128, 64), "rate", 6, 2.0, (0.5, 0.1, 1.0), 1e-4, 25),
    "paper-cifar10": ("cifar10", None, "rate", 6, 50.0, (1.0, 0.1, 0.5), 5e-5, 50),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_presets_hold_the_papers_settings(name):
    task, hidden, neuron, window, gamma, sigmas, lr, epochs = PAPER[name]
    config, sources = layered_config([(f"preset {name}", PRESETS[name])])
    assert (config.task, config.neuron, config.window, config.gamma, config.sigmas, config.lr, config.epochs) == (
        task, neuron, window, gamma, sigmas, lr, epochs)
    if hidden is not None:
        assert config.hidden == hidden
    assert config.weight_decay == 1e-4  # the authors' AdamW
    assert config.modulator == "exact" and config.memory == "stored"  # the library's rule, not the authors' code
    if neuron == "leaky":
        assert (config.steps_per_sample, config.tau, config.dt) == (20, 5.0, 1.0)
    assert all(sources[key] == f"preset {name}" for key in PRESETS[name])


def test_the_precedence_is_explicit_over_file_over_preset_over_task_default():
    config, sources = layered_config([
        ("command default", {"seeds": 5}),
        ("preset paper-xor", PRESETS["paper-xor"]),
        ("config file f.toml", {"lr": 3e-4, "gamma": 5.0, "seeds": 2}),
        ("command line", {"lr": 1e-2}),
    ])
    assert (config.lr, sources["lr"]) == (1e-2, "command line")
    assert (config.gamma, sources["gamma"]) == (5.0, "config file f.toml")
    assert (config.seeds, sources["seeds"]) == (2, "config file f.toml")
    assert (config.window, sources["window"]) == (10, "preset paper-xor")
    assert (config.batch_size, sources["batch_size"]) == (32, "library default")
    plain, plain_sources = layered_config([("command line", {"task": "digits"})])
    assert (plain.hidden, plain_sources["hidden"]) == (TASK_DEFAULTS["digits"]["hidden"], "task default (digits)")
    assert list(plain_sources) == list(SETTINGS)


@settings(max_examples=40, deadline=None)
@given(layers=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                 st.dictionaries(st.sampled_from(["lr", "window", "gamma", "seeds"]),
                                                 st.integers(2, 9))), max_size=4))
def test_the_last_layer_that_sets_a_value_wins(layers):
    layers = [(f"{name}{i}", {k: (v / 1000 if k == "lr" else float(v) if k == "gamma" else v) for k, v in values.items()})
              for i, (name, values) in enumerate(layers)]
    config, sources = layered_config(layers)
    for key in ("lr", "window", "gamma", "seeds"):
        setters = [(source, values[key]) for source, values in layers if key in values]
        if setters:
            assert (getattr(config, key), sources[key]) == (setters[-1][1], setters[-1][0])
        else:
            assert sources[key] in ("task default (digits)", "library default")


def test_a_run_config_json_reads_back_as_the_same_configuration(tmp_path):
    config = TrainConfig(task="xor", hidden=(6, 5), window=3, lr=2e-3, seeds=3, hsic_normalized=True).resolved()
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    read = read_config_file(tmp_path / "config.json")
    assert layered_config([("file", read)])[0] == config
    assert read_config_file(tmp_path) == read  # the run folder itself


def test_a_toml_file_with_the_keys_of_config_json(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "xor"\nhidden = [6, 5]\nsigmas = [0.5, 0.25, 2]\nlr = 1e-3\nepochs = 3\n'
                    'hsic_normalized = true\nweight_decay = 0\n')
    settings_ = read_config_file(path)
    assert settings_ == {"task": "xor", "hidden": (6, 5), "sigmas": (0.5, 0.25, 2.0), "lr": 1e-3, "epochs": 3,
                         "hsic_normalized": True, "weight_decay": 0.0}
    assert isinstance(settings_["weight_decay"], float) and isinstance(settings_["sigmas"][2], float)


def test_a_saved_config_json_predating_a_setting_takes_its_earlier_value(tmp_path):
    saved = TrainConfig(task="xor").resolved().to_dict()
    del saved["val_fraction"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert read_config_file(tmp_path / "config.json")["val_fraction"] == 0.0


@pytest.mark.parametrize("text, suffix, fragment", [
    ("task = 'xor'\nwindows = 4\n", ".toml", "unknown setting 'windows'"),
    ("batch-size = 4\n", ".toml", "unknown setting 'batch-size' (write batch_size)"),
    ("window = 'four'\n", ".toml", 'window takes an integer, got "four"'),
    ("window = 4.5\n", ".toml", "window takes an integer, got 4.5"),
    ("window = true\n", ".toml", "window takes an integer, got true"),
    ("hidden = 4\n", ".toml", "hidden takes a list of integers, got 4"),
    ("sigmas = [0.5, 'a', 1]\n", ".toml", "sigmas takes a list of numbers"),
    ("hsic_normalized = 1\n", ".toml", "hsic_normalized takes true or false, got 1"),
    ("window = = 4\n", ".toml", "not valid TOML"),
    ('{"window": 4,}', ".json", "not valid JSON"),
    ("[1, 2]", ".json", "expected a table of settings, found list"),
])
def test_bad_files_are_one_line_config_errors(tmp_path, text, suffix, fragment):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        read_config_file(path)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_config_file(tmp_path / "absent.toml")


@pytest.mark.parametrize("name, text, value", [
    ("window", "8", 8), ("lr", "1e-3", 1e-3), ("hidden", "128/64", (128, 64)), ("sigmas", "1/0.1/0.5", (1.0, 0.1, 0.5)),
    ("hsic_normalized", "true", True), ("hsic_normalized", "0", False), ("modulator", "paper", "paper"),
    ("reservoir", "none", None),
])
def test_values_written_as_text_parse_by_the_settings_type(name, text, value):
    assert setting_type(name, "test").parse(text, "test") == value


@pytest.mark.parametrize("name, text", [("window", "8.5"), ("lr", "fast"), ("hidden", "128/x"), ("window", ""),
                                        ("hsic_normalized", "maybe")])
def test_text_that_does_not_parse_is_a_config_error(name, text):
    with pytest.raises(ConfigError, match=f"{name} takes"):
        setting_type(name, "test").parse(text, "test")


def test_sources_of_a_configuration_built_in_code():
    sources = config_sources(TrainConfig(task="xor", lr=1e-2))
    assert sources["lr"] == "caller" and sources["window"] == "task default (xor)"
    assert sources["batch_size"] == "library default" and sources["task"] == "caller"


def test_every_preset_key_is_a_setting():
    for preset in PRESETS.values():
        assert set(preset) <= set(SETTINGS)
        dataclasses.replace(TrainConfig(), **preset).resolved()


def test_the_cifar10_preset_trains_the_papers_cnn_on_augmented_images():
    config, sources = layered_config([("preset paper-cifar10", PRESETS["paper-cifar10"])])
    assert (config.arch, sources["arch"]) == ("paper-cnn", "preset paper-cifar10")
    assert (config.augment, sources["augment"]) == (True, "task default (cifar10)")
    plain, _ = layered_config([("command line", {"task": "fashion-mnist"})])
    assert plain.arch is None and plain.augment is False
