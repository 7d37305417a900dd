"""The ``biohsic`` command. Every user error ends as one line on stderr and exit code 2.

One module per sub-command (:mod:`~biohsic.cli.train`, :mod:`~biohsic.cli.compare`,
:mod:`~biohsic.cli.sweep`, :mod:`~biohsic.cli.reservoir`), the options they share in :mod:`~biohsic.cli.options`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import BiohsicError
from .compare import add_compare_command
from .options import OneLineParser
from .reservoir import add_reservoir_commands
from .sweep import add_sweep_command
from .train import add_train_command


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="biohsic", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"biohsic {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    add_train_command(commands)
    add_compare_command(commands)
    add_sweep_command(commands)
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
