"""``biohsic train``: one network (K seeds side by side) on one task, into a run folder."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import TrainConfig
from ..errors import BiohsicError
from ..rules import RULES
from ..train import Trainer
from .options import add_setting, add_train_options, run_config


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.task}-{config.rule}-seed{config.seed}-{stamp}"


def cmd_train(args: argparse.Namespace) -> int:
    config, sources = run_config(args)
    if args.resume and not args.out:
        raise BiohsicError("--resume needs --out DIR, the run folder to continue")
    run_dir = Path(args.out) if args.out else default_run_dir(config)
    if (run_dir / "checkpoint.pt").exists() and not args.resume:
        raise BiohsicError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    trainer = Trainer(config, run_dir=run_dir, progress=not args.no_progress, download=args.download,
                      threads=args.threads, sources=sources)
    if args.resume and trainer.resume():
        print(f"resuming {run_dir} after epoch {trainer.epoch}", file=sys.stderr)
    print(f"run folder: {run_dir}", file=sys.stderr)

    def report(row: dict) -> None:
        validation = f"val_accuracy={row['val_accuracy']:.4f} " if "val_accuracy" in row else ""
        print(f"epoch {row['epoch']}/{config.epochs}: {validation}test_accuracy={row['test_accuracy']:.4f} "
              f"train_accuracy={row['train_accuracy']:.4f} test_loss={row['test_loss']:.4f} "
              f"samples/s={row['samples_per_second']:.0f}", file=sys.stderr)

    summary = trainer.run(on_epoch=report)
    print(f"test_accuracy={summary['test_accuracy']:.4f}")
    return 0


def add_train_command(commands) -> None:
    """Add the ``train`` sub-command to the ``biohsic`` parser's sub-parsers."""
    train = commands.add_parser("train", help="train one network (K seeds side by side) and write a run folder")
    add_train_options(train)
    add_setting(train, "--rule", help=f"learning rule: {', '.join(RULES)} (default biohsic)")
    add_setting(train, "--seed", type=int, help="seed of the first model (default 0)")
    add_setting(train, "--seeds", type=int, help="models trained side by side, seeds seed..seed+K-1 (default 1)")
    train.add_argument("--out", help="run folder (default runs/<task>-<rule>-seed<seed>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
