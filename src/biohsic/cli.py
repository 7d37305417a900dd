"""The ``biohsic`` command. Every user error ends as one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import (DTYPES, MEMORY_MODES, MODULATORS, NEURONS, PHSIC_KERNELS, READOUT_UPDATES, RESERVOIR_LEARNING,
                     TrainConfig)
from .errors import BiohsicError


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


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``train`` and ``compare`` (everything that defines a run)."""
    from .data import TASKS

    add = parser.add_argument
    add("--task", default="digits", help=f"dataset: {', '.join(TASKS)} (default digits)")
    add("--window", type=int, help="working-memory capacity N, the paper's batch size")
    add("--gamma", type=float, help="weight γ of HSIC(Y,Z) in the layer objective")
    add("--sigmas", type=number_list(float, "--sigmas"), help="kernel widths σx,σy,σz, e.g. 0.5,0.1,1")
    add("--lr", type=float, help="AdamW learning rate")
    add("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    add("--epochs", type=int, help="passes over the training set")
    add("--hidden", type=number_list(int, "--hidden"), help="hidden layer widths, e.g. 128,64")
    add("--modulator", default="exact", choices=MODULATORS,
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
    add("--dtype", default="float32", choices=DTYPES)
    add("--threads", type=int, help="torch threads while training (default: 1 for streaming rules, "
        "whose per-sample operations are too small to share; all cores for minibatch rules)")


def config_from_args(args: argparse.Namespace, **fields) -> TrainConfig:
    return TrainConfig(
        task=args.task, window=args.window, gamma=args.gamma, sigmas=args.sigmas, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, hidden=args.hidden, modulator=args.modulator,
        reservoir=args.reservoir, reservoir_learning=args.reservoir_learning, readout_update=args.readout_update,
        memory=args.memory, neuron=args.neuron, steps_per_sample=args.steps_per_sample, tau=args.tau,
        hsic_normalized=args.hsic_normalized, phsic_kernel=args.phsic_kernel, phsic_sigma=args.phsic_sigma,
        phsic_horizon=args.phsic_horizon,
        batch_size=args.batch_size, data_dir=args.data_dir, data_seed=args.data_seed, device=args.device,
        dtype=args.dtype, **fields).resolved()


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.task}-{config.rule}-seed{config.seed}-{stamp}"


def cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer

    config = config_from_args(args, rule=args.rule, seed=args.seed, seeds=args.seeds)
    if args.resume and not args.out:
        raise BiohsicError("--resume needs --out DIR, the run folder to continue")
    run_dir = Path(args.out) if args.out else default_run_dir(config)
    if (run_dir / "checkpoint.pt").exists() and not args.resume:
        raise BiohsicError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    trainer = Trainer(config, run_dir=run_dir, progress=not args.no_progress, download=args.download,
                      threads=args.threads)
    if args.resume and trainer.resume():
        print(f"resuming {run_dir} after epoch {trainer.epoch}", file=sys.stderr)
    print(f"run folder: {run_dir}", file=sys.stderr)

    def report(row: dict) -> None:
        print(f"epoch {row['epoch']}/{config.epochs}: test_accuracy={row['test_accuracy']:.4f} "
              f"train_accuracy={row['train_accuracy']:.4f} test_loss={row['test_loss']:.4f} "
              f"samples/s={row['samples_per_second']:.0f}", file=sys.stderr)

    summary = trainer.run(on_epoch=report)
    print(f"test_accuracy={summary['test_accuracy']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .rules import RULES

    parser = OneLineParser(prog="biohsic", description=__doc__)
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    train = commands.add_parser("train", help="train one network (K seeds side by side) and write a run folder")
    add_train_options(train)
    train.add_argument("--rule", default="biohsic", help=f"learning rule: {', '.join(RULES)} (default biohsic)")
    train.add_argument("--seed", type=int, default=0, help="seed of the first model (default 0)")
    train.add_argument("--seeds", type=int, default=1, help="models trained side by side, seeds seed..seed+K-1")
    train.add_argument("--out", help="run folder (default runs/<task>-<rule>-seed<seed>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
    from .cli_reservoir import add_reservoir_commands
    from .compare import add_compare_command

    add_compare_command(commands)
    add_reservoir_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv or ["train"])
    if args.command is None:
        args = parser.parse_args(["train", *argv])
    try:
        return args.func(args)
    except BiohsicError as err:
        print(f"biohsic: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("biohsic: interrupted; the last finished epoch is saved, continue with --resume --out DIR",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
