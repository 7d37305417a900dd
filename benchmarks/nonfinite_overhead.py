"""What divergence detection costs: samples per second of the eager engine with the
non-finite watch recording (input, logits and each hidden layer's signal at every step,
reduced once per chunk) against the same engine with recording switched off.

Run:  python benchmarks/nonfinite_overhead.py [--quick] [--threads 1]
Prints a Markdown table and saves it with the raw figures as
benchmarks/results/nonfinite_overhead.{md,json}. Inputs are random tensors of the task's
shape; each configuration is timed ``--repeats`` times, alternating on and off, and the
best time of each is kept. Times are the process's CPU time (``time.process_time``, one
thread): on a shared machine, wall time measures the neighbours as much as the code.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.engine import EagerEngine
from biohsic.network import Network
from biohsic.rules import build_rule
from biohsic.train import CHUNK_STEPS, make_optimizer

SHAPES = {"digits": (64, (32, 16), 10), "fashion-mnist": (784, (128, 64), 10)}


def seconds(shape: str, rule: str, models: int, steps: int, watching: bool) -> float:
    d_in, hidden, classes = SHAPES[shape]
    cfg = TrainConfig(task="digits", rule=rule, window=8, hidden=hidden, seeds=models, batch_size=32).resolved()
    net = Network([d_in, *hidden, classes], seeds=range(models))
    built = build_rule(net, cfg)
    engine = EagerEngine(built, make_optimizer(built.trainable_parameters(), cfg))
    if not watching:
        built.watch.record = lambda quantity, where, value: None
    batch = built.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(models, steps * batch, d_in, generator=gen)
    y = F.one_hot(torch.randint(0, classes, (models, steps * batch), generator=gen), classes).float()
    engine.train_chunk(x[:, :8 * batch], y[:, :8 * batch])   # fill the working memory
    engine.first_nonfinite()
    start = time.process_time()
    for first in range(0, steps, CHUNK_STEPS):
        chunk = slice(first * batch, min(first + CHUNK_STEPS, steps) * batch)
        engine.train_chunk(x[:, chunk], y[:, chunk])
        assert engine.first_nonfinite() is None
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "nonfinite_overhead"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = 256 if args.quick else 1024
    grid = [("digits", "biohsic", 1), ("fashion-mnist", "biohsic", 1), ("fashion-mnist", "biohsic", 8),
            ("fashion-mnist", "bp", 1)]
    rows = []
    for shape, rule, models in grid:
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.repeats):
            for watching in (True, False):
                best[watching] = min(best[watching], seconds(shape, rule, models, steps, watching))
        samples = steps * models * (1 if rule == "biohsic" else 32)
        rows.append({"shape": shape, "rule": rule, "models": models, "steps": steps,
                     "samples_per_second_watching": samples / best[True],
                     "samples_per_second_not_watching": samples / best[False],
                     "overhead_percent": 100 * (best[True] / best[False] - 1)})
        print(rows[-1], flush=True)
    lines = ["| input shape | rule | K | samples/s, watching | samples/s, not watching | overhead |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['rule']} | {r['models']} | {r['samples_per_second_watching']:.0f} | "
              f"{r['samples_per_second_not_watching']:.0f} | {r['overhead_percent']:+.1f} % |" for r in rows]
    meta = {"torch": torch.__version__, "threads": args.threads, "machine": platform.machine(),
            "steps": steps, "repeats": args.repeats, "command": "python benchmarks/nonfinite_overhead.py"
            + (" --quick" if args.quick else "")}
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table + "\n" + json.dumps(meta) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
