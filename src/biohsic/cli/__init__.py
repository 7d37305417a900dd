"""The ``biohsic`` command. Nothing a user can cause ends in a traceback:

- a :class:`~biohsic.errors.BiohsicError` (bad input, a busy or occupied folder, a damaged
  file, a diverged run) and running out of memory are one line on stderr, exit code 2;
- a warning from a library never adds lines to an error: library warnings are held back and
  printed, one line each, only after a command that succeeds; biohsic's own warnings
  (:class:`~biohsic.errors.CheckpointWarning`, :class:`~biohsic.errors.EngineWarning`) are one
  line each, when they happen;
- anything else is an internal error: one line naming the file that holds the full
  traceback (``traceback.txt`` in the run folder, else a temporary file), exit code 1.

One module per sub-command (:mod:`~biohsic.cli.train`, :mod:`~biohsic.cli.compare`,
:mod:`~biohsic.cli.sweep`, :mod:`~biohsic.cli.reservoir`), the options they share in :mod:`~biohsic.cli.options`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..errors import BiohsicError, CheckpointWarning, EngineWarning
from ..runs import is_out_of_memory, traceback_text
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


def one_line(text: object) -> str:
    """``text`` on one line (inner line breaks become spaces)."""
    return " ".join(str(text).split())


def save_internal_error(error: BaseException) -> Path:
    """Where the traceback of an unexpected error is: the run folder's ``traceback.txt`` when
    the folder's lock saved it there, else a new temporary file."""
    saved = getattr(error, "traceback_path", None)
    if saved is not None:
        return Path(saved)
    handle = tempfile.NamedTemporaryFile("w", prefix="biohsic-traceback-", suffix=".txt", delete=False)
    with handle:
        handle.write(traceback_text(error))
    return Path(handle.name)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command under the rules of the module docstring; returns the exit code."""
    held_back: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = one_line(message)
        if issubclass(category, (CheckpointWarning, EngineWarning)):
            print(f"biohsic: warning: {text}", file=sys.stderr)
        elif f"{category.__name__}: {text}" not in held_back:
            held_back.append(f"{category.__name__}: {text}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            code = args.func(args)
        except BiohsicError as err:
            print(f"biohsic: error: {one_line(err)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("biohsic: interrupted; the last checkpoint is kept, continue with --resume --out DIR",
                  file=sys.stderr)
            return 130
        except Exception as err:
            if is_out_of_memory(err):
                print(f"biohsic: error: out of memory ({one_line(err)[:200]}); lower --window, --seeds, --hidden "
                      "or --batch-size", file=sys.stderr)
                return 2
            print(f"biohsic: internal error: {type(err).__name__}: {one_line(err)[:200]}; the full traceback is "
                  f"in {save_internal_error(err)}; please report it", file=sys.stderr)
            return 1
    for text in held_back:
        print(f"biohsic: warning: {text}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv or ["train"])
    if args.command is None:
        args = parser.parse_args(["train", *argv])
    return run_command(args)
