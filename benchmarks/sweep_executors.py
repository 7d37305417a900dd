"""Wall time of one sweep on each executor: in this process (one trial at a time), a pool of
local processes, and a local Ray instance; and a check that all three give the same table.

Run:  python benchmarks/sweep_executors.py [--quick] [--workers 2]
Prints a Markdown table and saves it with the raw figures as
benchmarks/results/sweep_executors.{md,json}. The sweep: the three-factor rule on digits,
window N × learning rate, 3 seeds per trial (``--quick``: fewer trials and epochs). Wall time
is the whole sweep from the first trial's start to the tables written, process and Ray
start-up included (Ray's own ``ray.init`` is timed too). Run it on an otherwise idle machine:
the figures are only as good as the cores the executors get.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from biohsic.config import TrainConfig
from biohsic.sweep import ProcessExecutor, RayExecutor, SerialExecutor, cpu_count, sweep


def timed_sweep(name: str, make_executor, base: TrainConfig, grid: dict, root: Path) -> dict:
    start = time.perf_counter()
    executor = make_executor()
    started = time.perf_counter() - start
    with executor:
        sweep(base, "biohsic", grid, root / name, executor=executor, log=lambda message: None)
    wall = time.perf_counter() - start
    table = (root / name / "sweep.csv").read_text()
    print(f"{name:8s} {executor.describe():40s} wall {wall:7.1f} s (start-up {started:4.1f} s)", flush=True)
    return dict(executor=name, described=executor.describe(), wall_seconds=round(wall, 1),
                startup_seconds=round(started, 1), table=table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials of 1 epoch instead of 10 of 5")
    parser.add_argument("--workers", type=int, default=cpu_count(), help="trials at once (default: the cores)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sweep_executors"))
    args = parser.parse_args()
    epochs = 1 if args.quick else 5
    grid = {"window": (2, 8), "lr": (1e-3,)} if args.quick else {"window": (2, 4, 8, 16, 32), "lr": (3e-4, 1e-3)}
    base = TrainConfig(task="digits", epochs=epochs, seeds=3)
    executors = {"serial": SerialExecutor, "local": lambda: ProcessExecutor(args.workers),
                 "ray": lambda: RayExecutor(args.workers)}
    with tempfile.TemporaryDirectory() as folder:
        rows = [timed_sweep(name, make, base, grid, Path(folder)) for name, make in executors.items()]
    same = all(row["table"] == rows[0]["table"] for row in rows)
    trials = len(grid["window"]) * len(grid["lr"])
    lines = [f"Sweep: biohsic on digits, window ∈ {{{', '.join(map(str, grid['window']))}}} × lr ∈ "
             f"{{{', '.join(map(str, grid['lr']))}}} ({trials} trials), 3 seeds per trial, {epochs} epochs; "
             f"{args.workers} workers for local and ray. Same table from every executor: {'yes' if same else 'NO'}.",
             "", "| executor | trials at once | wall time (s) | of which start-up (s) |", "|---|---|---|---|"]
    lines += [f"| {r['executor']} | {1 if r['executor'] == 'serial' else args.workers} | {r['wall_seconds']:.1f} | "
              f"{r['startup_seconds']:.1f} |" for r in rows]
    meta = dict(torch=torch.__version__, cores=cpu_count(), machine=platform.machine(), workers=args.workers,
                epochs=epochs, trials=trials, same_table=same)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + f"\n\n{json.dumps(meta)}\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "rows": [{k: v for k, v in r.items() if k != "table"} for r in rows]}, indent=2) + "\n")
    print("\n".join(lines))
    if not same:
        raise SystemExit("the executors gave different tables")


if __name__ == "__main__":
    main()
