"""``biohsic compare``: every rule × K seeds on one task, side by side in one table
(the library side is :mod:`biohsic.compare`)."""
from __future__ import annotations

from pathlib import Path

from ..compare import ALL, all_labels, compare, log_line, markdown_table
from ..config import TrainConfig
from ..rules import RULES
from .options import add_train_options, config_from_args

COMMAND_HELP = """Train every rule of --rules on one task, --seeds models each (side by side, one run
per rule, in OUT/<label>/), then print and write a table: OUT/compare.md, OUT/compare.csv
and OUT/compare.png. A rule whose run in OUT finished with the same settings is reused,
one that was interrupted resumes. Every option of `biohsic train` applies to every rule."""

RULES_HELP = ("comma-separated rule labels: a rule name ({names}); biohsic takes the --modulator "
              "(default exact), biohsic:paper (biohsic:<modulator>) adds a row with that signal; "
              "'all' = {all} (default)")


def default_out(config: TrainConfig) -> Path:
    return Path("runs") / f"compare-{config.task}"


def add_compare_command(commands) -> None:
    """Add the ``compare`` sub-command to the ``biohsic`` parser's sub-parsers."""
    parser = commands.add_parser("compare", help="every rule × K seeds on one task: a table and learning curves",
                                 description=COMMAND_HELP)
    add_train_options(parser)
    add = parser.add_argument
    add("--rules", default=ALL, help=RULES_HELP.format(names=", ".join(RULES), all=",".join(all_labels())))
    add("--seed", type=int, default=0, help="seed of the first model (default 0)")
    add("--seeds", type=int, default=5, help="models per rule, seeds seed..seed+K-1 (default 5)")
    add("--out", help="output folder (default runs/compare-<task>); runs already there are reused")
    add("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    base = config_from_args(args, seed=args.seed, seeds=args.seeds)
    out = Path(args.out) if args.out else default_out(base)
    rows = compare(base, args.rules, out, download=args.download, progress=not args.no_progress,
                   threads=args.threads)
    written = [str(out / name) for name in ("compare.md", "compare.csv", "compare.png") if (out / name).exists()]
    log_line(f"wrote {', '.join(written)}")
    print(markdown_table(rows), end="")
    return 0

