"""``biohsic train``: one network (K seeds side by side) on one task, into a run folder."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import TrainConfig
from ..errors import RunFolderError
from ..rules import RULES
from ..runs import RunFolderLock, clear_run, run_status
from ..train import CHECKPOINT_SECONDS, Trainer
from .options import add_setting, add_train_options, run_config


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.task}-{config.rule}-seed{config.seed}-{stamp}"


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Under the folder's lock: refuse to resume a folder with no run, and to start a run in
    a folder holding one (finished, diverged or interrupted) unless ``overwrite`` (which
    deletes its files)."""
    status = run_status(run_dir)
    if resume and status is None:
        raise RunFolderError(f"--resume: {run_dir} holds no run to continue; check the path, or drop --resume "
                             "to start a new run there")
    if not resume and status is not None:
        if not overwrite:
            raise RunFolderError(f"{run_dir} already holds {'an' if status[0] in 'aeiou' else 'a'} {status} run; "
                                 "pass --resume to continue it, "
                                 "--overwrite to replace it, or choose another --out")
        clear_run(run_dir)


def cmd_train(args: argparse.Namespace) -> int:
    config, sources = run_config(args)
    if args.resume and not args.out:
        raise RunFolderError("--resume needs --out DIR, the run folder to continue")
    if args.resume and args.overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    run_dir = Path(args.out) if args.out else default_run_dir(config)
    if args.resume and not run_dir.is_dir():
        raise RunFolderError(f"--resume: there is no folder {run_dir}; check the path, or drop --resume to "
                             "start a new run there")
    trainer = Trainer(config, run_dir=run_dir, progress=not args.no_progress, download=args.download,
                      threads=args.threads, checkpoint_every=args.checkpoint_every, sources=sources)
    with RunFolderLock(run_dir):
        claim_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
        if args.resume and trainer.resume():
            print(f"resuming {run_dir} at epoch {trainer.epoch + 1}, step {trainer.step} of "
                  f"{trainer.steps_per_epoch}", file=sys.stderr)
        print(f"run folder: {run_dir}", file=sys.stderr)

        def report(row: dict) -> None:
            validation = f"val_accuracy={row['val_accuracy']:.4f} " if "val_accuracy" in row else ""
            print(f"epoch {row['epoch']}/{config.epochs}: {validation}test_accuracy={row['test_accuracy']:.4f} "
                  f"train_accuracy={row['train_accuracy']:.4f} test_loss={row['test_loss']:.4f} "
                  f"samples/s={row['samples_per_second']:.0f}", file=sys.stderr)

        summary = trainer.run(on_epoch=report)
    if summary["compile_seconds"]:
        print(f"engine {summary['engine']}: {summary['compile_seconds']:.1f} s compiling", file=sys.stderr)
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
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its newest intact checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run --out holds (its files are deleted)")
    train.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                       help="also write a checkpoint every STEPS steps inside an epoch (default: after every "
                            f"{CHECKPOINT_SECONDS / 60:g} minutes of training; always at the end of an epoch)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
