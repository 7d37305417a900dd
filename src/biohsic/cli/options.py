"""Command-line options shared by the ``biohsic`` commands: the one-line parser, number
lists, and the options that define a training run (``train``, ``compare`` and ``sweep``).

A run option that is not given stays out of the parsed arguments (its argparse default is
``SUPPRESS``), so that :func:`run_config` can layer explicit options over ``--config``, over
``--preset``, over the command's and the task's defaults (:mod:`biohsic.presets`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Mapping

from ..architecture import NAMED_ARCHITECTURES
from ..config import (DTYPES, ENGINES, MEMORY_MODES, NEURONS, OPTIMIZERS, PHSIC_KERNELS, READOUT_UPDATES,
                      RESERVOIR_LEARNING, TrainConfig, check_device)
from ..data import TASKS
from ..errors import ConfigError
from ..modulators import MODULATORS
from ..presets import PRESETS, SETTINGS, layered_config, read_config_file
from ..rules import check_config
from ..sweep import EXECUTORS, Executor, make_executor

PRECEDENCE_HELP = ("Each setting comes from, in order of precedence: the options given here, --config FILE, "
                   "--preset, the command's and the task's defaults. The run folder records the resolved "
                   "settings (config.json) and where each came from (config_sources.json).")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``biohsic: error: …``), exit 2."""

    def error(self, message: str):  # noqa: D102 (argparse's signature)
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def number_list(kind: Callable[[str], float | int], name: str) -> Callable[[str], tuple]:
    """An argparse type for comma-separated numbers, e.g. ``128,64`` (empty for none)."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated numbers, got {text!r}") from None

    return parse


def device_name(text: str) -> str:
    """An argparse type for ``--device``: a device this machine has (see :func:`biohsic.config.check_device`)."""
    try:
        check_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_setting(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *flags: str, **options: Any) -> None:
    """Add an option that sets a field of :class:`TrainConfig`: absent from the parsed
    arguments unless given (its default is stated in ``help``)."""
    parser.add_argument(*flags, default=argparse.SUPPRESS, **options)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``train``, ``compare`` and ``sweep`` (everything that defines a run)."""
    group = parser.add_argument_group("run settings", PRECEDENCE_HELP)
    group.add_argument("--preset", choices=tuple(PRESETS),
                       help="the paper's settings for a task (SPEC §7): network, neuron model, N, γ, σ, optimiser, epochs")
    group.add_argument("--config", metavar="FILE",
                       help="a TOML file with the keys of config.json, or a run's config.json (or its folder) to rerun it")

    def add(*flags: str, **options: Any) -> None:
        add_setting(group, *flags, **options)

    add("--task", help=f"dataset: {', '.join(TASKS)} (default digits)")
    add("--window", type=int, help="working-memory capacity N, the paper's batch size")
    add("--gamma", type=float, help="weight γ of HSIC(Y,Z) in the layer objective")
    add("--sigmas", type=number_list(float, "--sigmas"), help="kernel widths σx,σy,σz, e.g. 0.5,0.1,1")
    add("--lr", type=float, help="learning rate of the optimiser")
    add("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    add("--epochs", type=int, help="passes over the training set")
    add("--hidden", type=number_list(int, "--hidden"), help="hidden layer widths, e.g. 128,64")
    add("--arch", help="a convolutional network instead of the MLP of --hidden: a spec such as "
                       "conv32-pool-conv64-pool-fc (convC[kK][sS][pP], pool[F], fcN, ending in the readout fc) "
                       f"or a name ({', '.join(NAMED_ARCHITECTURES)}); see docs/convolutional.md")
    add("--modulator", choices=tuple(MODULATORS),
        help="modulatory signal: exact gradient (default), the authors' 'paper' signal, or a reservoir")
    add("--reservoir", help="--modulator reservoir: one trained reservoir file per hidden layer, comma-separated, "
                            "or the folder `biohsic reservoir train-task` wrote (layer0.pt, layer1.pt, …)")
    add("--reservoir-learning", choices=RESERVOIR_LEARNING,
        help="--modulator reservoir: frozen readouts (default, the closed loop); delta: the paper's mode, the readout "
             "keeps learning online against the exact g_N (delta rule at every time step, η 5e-4); force: the same "
             "by recursive least squares; refit: re-fitted at intervals from a small store of exact targets")
    add("--reservoir-store", type=int,
        help=f"--reservoir-learning refit: rows (rates, exact target) each model's store keeps (default "
             f"{TrainConfig.reservoir_store})")
    add("--reservoir-refit-every", type=int,
        help=f"--reservoir-learning refit: re-fit the readout after this many new rows (default "
             f"{TrainConfig.reservoir_refit_every})")
    add("--reservoir-sample-every", type=int,
        help=f"--reservoir-learning refit: store an exact target every this many steps (default "
             f"{TrainConfig.reservoir_sample_every})")
    add("--reservoir-refit-alpha", type=float,
        help=f"--reservoir-learning refit: ridge penalty α towards the a priori readout (default "
             f"{TrainConfig.reservoir_refit_alpha:g})")
    add("--optimizer", choices=OPTIMIZERS, help="adamw (default, as the paper) or plain sgd (no momentum)")
    add("--readout-update", choices=READOUT_UPDATES,
        help="readout delta rule averaged over the window (default, as the authors) or the newest sample")
    add("--memory", choices=MEMORY_MODES,
        help="working memory holds activities as they were (stored, default) or re-runs the window (recompute)")
    add("--neuron", choices=NEURONS,
        help="rate units (default) or leaky integrators simulated in time (SPEC §5)")
    add("--steps-per-sample", type=int, help="time steps each sample is presented (leaky units, default 20)")
    add("--tau", type=float, help="membrane time constant in ms (leaky units, default 5)")
    add("--hsic-normalized", action="store_true", help="rule hsic: the normalised HSIC of Ma et al.")
    add("--phsic-kernel", choices=PHSIC_KERNELS, help="rules phsic*: the layer kernel (default gaussian)")
    add("--phsic-sigma", type=float, help="rules phsic*: absolute width of the Gaussian layer kernel (default 5)")
    add("--phsic-horizon", type=int, help="rule phsic-stream: horizon of the running means (samples, default 100)")
    add("--batch-size", type=int, help="minibatch size of minibatch rules (default 32)")
    add("--data-dir", help="folder holding the dataset's files (mnist, fashion-mnist, cifar10)")
    group.add_argument("--download", action="store_true",
                       help="fetch MNIST or CIFAR-10 into --data-dir when its files are missing (needs the internet)")
    add("--augment", action=argparse.BooleanOptionalAction,
        help="random crop (zero padding 4) and horizontal flip of each training image, drawn per model and epoch "
             "(default: on for cifar10, off otherwise); test and validation images are never augmented")
    add("--data-seed", type=int, help="seed of the synthetic data, of the digits split and of the validation split "
                                      "(default 0)")
    add("--val-fraction", type=float,
        help=f"share of the training set held out for validation, stratified by class (default "
             f"{TrainConfig.val_fraction:g}); every choice of a setting is made on it, never on the test set")
    add("--train-samples", type=int, help="train on the first this many samples of the training set (after the "
                                          "validation split; default: all)")
    add("--device", help="cpu or cuda (default cpu)")
    add("--dtype", choices=tuple(DTYPES), help="default float32")
    add("--engine", choices=ENGINES,
        help="what advances the run: eager (the rule and torch.optim, step by step), compiled (the rule's "
             "explicit step compiled with torch.compile, chunks of steps per call; biohsic with a kernel "
             "modulator, else eager with a warning), auto (default: compiled when the run is long enough to "
             "repay the compile time)")
    group.add_argument("--threads", type=int, help="torch threads while training (default: 1 for streaming rules, "
                       "whose per-sample operations are too small to share; all cores for minibatch rules)")


def run_config(args: argparse.Namespace, command_defaults: Mapping[str, Any] | None = None
               ) -> tuple[TrainConfig, dict[str, str]]:
    """The run the options describe, resolved and checked against the registries of rules and
    modulators, and the source of each setting. Layers, lowest first: ``command_defaults``
    (the command's own, e.g. ``compare``'s 5 seeds), ``--preset``, ``--config``, the options given."""
    layers: list[tuple[str, Mapping[str, Any]]] = [("command default", command_defaults or {})]
    if args.preset:
        layers.append((f"preset {args.preset}", PRESETS[args.preset]))
    if args.config:
        layers.append((f"config file {args.config}", read_config_file(args.config)))
    layers.append(("command line", {name: value for name, value in vars(args).items() if name in SETTINGS}))
    config, sources = layered_config(layers)
    check_config(config)
    return config, sources


def add_many_runs_options(parser: argparse.ArgumentParser, *, models_per: str, default_seeds: int,
                          out_help: str, progress_help: str = "no progress bars") -> None:
    """The options ``compare`` and ``sweep`` share: the seeds of each trial, the output
    folder, progress bars, and where the trials run."""
    add_setting(parser, "--seed", type=int, help="seed of the first model (default 0)")
    add_setting(parser, "--seeds", type=int,
                help=f"models per {models_per}, seeds seed..seed+K-1 (default {default_seeds})")
    parser.add_argument("--out", help=out_help)
    parser.add_argument("--no-progress", action="store_true", help=progress_help)
    add_executor_options(parser)


def output_folder(args: argparse.Namespace, command: str, config: TrainConfig) -> Path:
    """``--out``, or ``runs/<command>-<task>``."""
    return Path(args.out) if args.out else Path("runs") / f"{command}-{config.task}"


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where the trials of ``sweep`` and ``compare`` run."""
    group = parser.add_argument_group(
        "executor", "Where the trials run. A Ray cluster: start it (`ray start --head` on one machine, "
                    "`ray start --address HEAD:6379` on the others, biohsic installed on all), then pass "
                    "--executor ray --address HEAD:6379; --out must be a folder every node can write "
                    "(a shared file system), or the finished trials' files are copied back here.")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: a pool of processes on this machine (default); ray: Ray tasks "
                            "(pip install 'biohsic[ray]')")
    group.add_argument("--workers", type=int,
                       help="trials at once (default: the cores of this machine; 1 runs them in this process)")
    group.add_argument("--address", help="--executor ray: the address of a running Ray cluster (HOST:PORT, "
                                         "ray://HOST:PORT or auto); without it a local Ray instance starts")


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor the options name (for Ray, connected or started here)."""
    return make_executor(args.executor, args.workers, args.address)
