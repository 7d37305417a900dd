"""``biohsic compare``: every rule × K seeds on one task, side by side in one table
(the library side is :mod:`biohsic.compare`)."""
from __future__ import annotations

import argparse

from ..compare import compare, markdown_table, tune
from ..rules import RULES
from ..sweep import ALL, all_labels, log_line, parse_grid
from .options import add_many_runs_options, output_folder, add_train_options, executor_from_args, run_config

COMMAND_HELP = """Train every rule of --rules on one task, --seeds models each (side by side, one run
per rule, in OUT/<label>/), then print and write a table: OUT/compare.md, OUT/compare.csv
and OUT/compare.png. With --tune, each rule is first tuned on the validation set (a grid of
settings per rule, in OUT/tune/) and its row is its best setting, named in the table; the
test set is reported, never used to choose. A rule whose run in OUT finished with the same
settings is reused, one that was interrupted resumes. Every option of `biohsic train`
applies to every rule."""

RULES_HELP = ("comma-separated rule labels: a rule name ({names}); biohsic takes the --modulator "
              "(default exact), biohsic:paper (biohsic:<modulator>) adds a row with that signal; "
              "'all' = {all} (default)")

TUNE_HELP = ("tune each rule on the validation set before the table: --tune alone takes each rule's default "
             "grid (learning rates around the task's: 3 for a streaming rule; 4, with batches of 8 and 32, for a "
             "minibatch rule); --tune NAME=V1,V2,… (repeatable, e.g. --tune lr=1e-3,1e-2,batch_size=8,32) "
             "gives one grid to every rule (batch_size is dropped for streaming rules)")


def add_compare_command(commands) -> None:
    """Add the ``compare`` sub-command to the ``biohsic`` parser's sub-parsers."""
    parser = commands.add_parser("compare", help="every rule × K seeds on one task: a table and learning curves",
                                 description=COMMAND_HELP)
    add_train_options(parser)
    add = parser.add_argument
    add("--rules", default=ALL, help=RULES_HELP.format(names=", ".join(RULES), all=",".join(all_labels())))
    add("--tune", action="append", nargs="?", const="", metavar="NAME=V1,V2,…", help=TUNE_HELP)
    add_many_runs_options(parser, models_per="rule", default_seeds=5,
                          out_help="output folder (default runs/compare-<task>); runs already there are reused")
    parser.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    base, sources = run_config(args, command_defaults={"seeds": 5})
    out = output_folder(args, "compare", base)
    grid = None
    if args.tune is not None:
        given = [text for text in args.tune if text]
        grid = parse_grid(given, option="--tune") if given else None
    options = dict(sources=sources, download=args.download, progress=not args.no_progress, threads=args.threads)
    with executor_from_args(args) as executor:
        if args.tune is None:
            rows, settings = compare(base, args.rules, out, executor=executor, **options), None
        else:
            tunings = tune(base, args.rules, out, grid, executor=executor, **options)
            rows = [t.chosen for t in tunings if t.chosen is not None]
            settings = {t.label: t.setting for t in tunings}
            for t in tunings:
                if t.chosen is None:
                    log_line(f"{t.label}: no trial of its grid completed; it has no row (see {out / 'tuning.md'})")
    written = [str(out / name) for name in ("compare.md", "compare.csv", "compare.png", "tuning.md", "tuning.csv",
                                            "tuning.png") if (out / name).exists()]
    log_line(f"wrote {', '.join(written)}")
    print(markdown_table(rows, settings), end="")
    return 0 if rows and all(r.status != "failed" for r in rows) else 1
