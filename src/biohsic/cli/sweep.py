"""``biohsic sweep``: rules × a grid of any run options, K seeds per trial, on a local pool of
processes or on Ray (the library side is :mod:`biohsic.sweep`)."""
from __future__ import annotations

import argparse
import sys

from ..rules import RULES
from ..sweep import parse_grid, rule_label, sweep, sweep_markdown
from .options import add_many_runs_options, output_folder, add_train_options, executor_from_args, run_config

COMMAND_HELP = """Train every rule of --rules at every point of the grid (the product of the
--grid options), --seeds models per trial side by side, each trial an ordinary run folder
OUT/<label>/<name=value,…>/. Then print and write OUT/sweep.md and OUT/sweep.csv (mean ± sd
over the seeds of validation and test accuracy and loss) and OUT/sweep.png (accuracy against
each swept option). Rerun the same command to resume: finished trials are reused, interrupted
ones resume from their checkpoints, failed ones are retried. Choose settings on the
validation columns; the test columns are for reporting."""

GRID_HELP = ("NAME=V1,V2,…: sweep run option NAME (a key of config.json, e.g. window, lr, batch_size, gamma; "
             "- may stand for _) over the values; list values join their items with / (hidden=128/64,256/128); "
             "several --grid options make a product")


def add_sweep_command(commands) -> None:
    """Add the ``sweep`` sub-command to the ``biohsic`` parser's sub-parsers."""
    parser = commands.add_parser("sweep", help="rules × a grid of options × K seeds, on local processes or Ray",
                                 description=COMMAND_HELP)
    add_train_options(parser)
    add = parser.add_argument
    add("--grid", action="append", default=[], metavar="NAME=V1,V2,…", help=GRID_HELP)
    add("--rules", help=f"comma-separated rule labels ({', '.join(RULES)}, biohsic:paper, or 'all'; default: "
                        "the run's rule, biohsic)")
    add_many_runs_options(parser, models_per="trial", default_seeds=3,
                          out_help="output folder (default runs/sweep-<task>); trials already there are reused",
                          progress_help="no progress bars (trials running at once never show them)")
    parser.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    base, sources = run_config(args, command_defaults={"seeds": 3})
    grid = parse_grid(args.grid)
    out = output_folder(args, "sweep", base)
    rules = args.rules or rule_label(base.rule, base.modulator)
    with executor_from_args(args) as executor:
        results = sweep(base, rules, grid, out, executor=executor, sources=sources, download=args.download,
                        progress=not args.no_progress, threads=args.threads)
    print(sweep_markdown(results, out), end="")
    failed = [r for r in results if r.status == "failed"]
    print(f"wrote {out / 'sweep.md'}, {out / 'sweep.csv'}" + (f", {out / 'sweep.png'}" if grid else ""),
          file=sys.stderr)
    if failed:
        print(f"biohsic: {len(failed)} of {len(results)} trials failed ({', '.join(r.trial.name for r in failed)}); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0
