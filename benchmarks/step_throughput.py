"""Throughput of the streaming biohsic rule: samples per second of the whole training
step (forward, working memory, modulatory signal, local updates, AdamW step).

Run:  python benchmarks/step_throughput.py [--quick] [--threads 2]
Prints a Markdown table and saves it with the raw figures as
benchmarks/results/step_throughput.{md,json}. Inputs are random tensors of the task's
shape, so no dataset is needed. K models train side by side as one batched computation;
samples/s counts samples summed over the K models.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.network import Network
from biohsic.rules import build_rule
from biohsic.train import make_optimizer
from results_io import machine_facts, write_results

SHAPES = {"digits": (64, (128, 64), 10), "fashion-mnist": (784, (128, 64), 10)}


def measure(shape: str, window: int, models: int, modulator: str, memory: str, steps: int) -> float:
    d_in, hidden, classes = SHAPES[shape]
    cfg = TrainConfig(task="digits", window=window, hidden=hidden, modulator=modulator, memory=memory,
                      seeds=models).resolved()
    net = Network([d_in, *hidden, classes], seeds=range(models))
    rule = build_rule(net, cfg)
    optimizer = make_optimizer(rule.trainable_parameters(), cfg)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps + window, models, 1, d_in, generator=gen)
    y = F.one_hot(torch.randint(0, classes, (steps + window, models, 1), generator=gen), classes).float()
    for t in range(window):                      # fill the working memory first
        rule.predict_and_write_grads(x[t], y[t])
    start = time.perf_counter()
    for t in range(window, window + steps):
        rule.predict_and_write_grads(x[t], y[t])
        optimizer.step()
    return steps * models / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer configurations and steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_throughput"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = 300 if args.quick else 1000
    grid = [("digits", 8, 1, "exact", "stored"), ("fashion-mnist", 8, 1, "exact", "stored"),
            ("fashion-mnist", 8, 1, "paper", "stored"), ("fashion-mnist", 8, 1, "exact", "recompute")]
    if not args.quick:
        grid += [("fashion-mnist", n, 1, "exact", "stored") for n in (2, 32, 64)]
        grid += [("fashion-mnist", 64, 1, "exact", "recompute")]
        grid += [("fashion-mnist", 8, k, "exact", "stored") for k in (8, 30)]
    rows = []
    for shape, window, models, modulator, memory in grid:
        rate = measure(shape, window, models, modulator, memory, steps)
        rows.append(dict(shape=shape, window=window, models=models, modulator=modulator, memory=memory,
                         samples_per_second=round(rate, 1)))
        print(f"{shape:14s} N={window:<3d} K={models:<3d} {modulator:6s} {memory:10s} {rate:9.0f} samples/s",
              flush=True)
    lines = ["| input shape | N | K | modulator | memory | samples/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['window']} | {r['models']} | {r['modulator']} | {r['memory']} | "
              f"{r['samples_per_second']:.0f} |" for r in rows]
    meta = machine_facts(threads=args.threads, steps=steps)
    write_results(args.out, lines, meta, rows)


if __name__ == "__main__":
    main()
