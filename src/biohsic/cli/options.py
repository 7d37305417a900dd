"""Command-line options shared by the ``biohsic`` commands: the one-line parser, number
lists, and the options that define a training run (``train`` and ``compare``)."""
from __future__ import annotations

import argparse
from typing import Callable

from ..config import (DTYPES, MEMORY_MODES, NEURONS, PHSIC_KERNELS, READOUT_UPDATES, RESERVOIR_LEARNING, TrainConfig,
                      check_device)
from ..data import TASKS
from ..errors import ConfigError
from ..modulators import MODULATORS
from ..rules import check_config


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


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``train`` and ``compare`` (everything that defines a run)."""
    add = parser.add_argument
    add("--task", default="digits", help=f"dataset: {', '.join(TASKS)} (default digits)")
    add("--window", type=int, help="working-memory capacity N, the paper's batch size")
    add("--gamma", type=float, help="weight γ of HSIC(Y,Z) in the layer objective")
    add("--sigmas", type=number_list(float, "--sigmas"), help="kernel widths σx,σy,σz, e.g. 0.5,0.1,1")
    add("--lr", type=float, help="AdamW learning rate")
    add("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    add("--epochs", type=int, help="passes over the training set")
    add("--hidden", type=number_list(int, "--hidden"), help="hidden layer widths, e.g. 128,64")
    add("--modulator", default="exact", choices=tuple(MODULATORS),
        help="modulatory signal: exact gradient (default), the authors' 'paper' signal, or a reservoir")
    add("--reservoir", help="--modulator reservoir: one trained reservoir file per hidden layer, comma-separated, "
                            "or the folder `biohsic reservoir train-task` wrote (layer0.pt, layer1.pt, …)")
    add("--reservoir-learning", default="frozen", choices=RESERVOIR_LEARNING,
        help="--modulator reservoir: frozen readouts (default, the closed loop); delta: the paper's mode, the readout "
             "keeps learning online against the exact g_N (delta rule at every time step, η 5e-4); force: the same "
             "by recursive least squares")
    add("--readout-update", default="window", choices=READOUT_UPDATES,
        help="readout delta rule averaged over the window (default, as the authors) or the newest sample")
    add("--memory", default="stored", choices=MEMORY_MODES,
        help="working memory holds activities as they were (stored, default) or re-runs the window (recompute)")
    add("--neuron", default="rate", choices=NEURONS,
        help="rate units (default) or leaky integrators simulated in time (SPEC §5)")
    add("--steps-per-sample", type=int, default=20, help="time steps each sample is presented (leaky units)")
    add("--tau", type=float, default=5.0, help="membrane time constant in ms (leaky units)")
    add("--hsic-normalized", action="store_true", help="rule hsic: the normalised HSIC of Ma et al.")
    add("--phsic-kernel", default="gaussian", choices=PHSIC_KERNELS, help="rules phsic*: the layer kernel")
    add("--phsic-sigma", type=float, default=5.0, help="rules phsic*: absolute width of the Gaussian layer kernel")
    add("--phsic-horizon", type=int, default=100, help="rule phsic-stream: horizon of the running means (samples)")
    add("--batch-size", type=int, default=32, help="minibatch size of minibatch rules (default 32)")
    add("--data-dir", help="folder holding the dataset's files (mnist, fashion-mnist, cifar10)")
    add("--download", action="store_true",
        help="fetch MNIST or CIFAR-10 into --data-dir when its files are missing (needs the internet)")
    add("--data-seed", type=int, default=0, help="seed of the synthetic data and of the digits split")
    add("--device", default="cpu", help="cpu or cuda (default cpu)")
    add("--dtype", default="float32", choices=tuple(DTYPES))
    add("--threads", type=int, help="torch threads while training (default: 1 for streaming rules, "
        "whose per-sample operations are too small to share; all cores for minibatch rules)")


def config_from_args(args: argparse.Namespace, **fields) -> TrainConfig:
    """The run the options describe (``fields``: the command's own, e.g. rule and seeds),
    resolved and checked against the registries of rules and modulators."""
    config = TrainConfig(
        task=args.task, window=args.window, gamma=args.gamma, sigmas=args.sigmas, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, hidden=args.hidden, modulator=args.modulator,
        reservoir=args.reservoir, reservoir_learning=args.reservoir_learning, readout_update=args.readout_update,
        memory=args.memory, neuron=args.neuron, steps_per_sample=args.steps_per_sample, tau=args.tau,
        hsic_normalized=args.hsic_normalized, phsic_kernel=args.phsic_kernel, phsic_sigma=args.phsic_sigma,
        phsic_horizon=args.phsic_horizon,
        batch_size=args.batch_size, data_dir=args.data_dir, data_seed=args.data_seed, device=args.device,
        dtype=args.dtype, **fields).resolved()
    check_config(config)
    return config
