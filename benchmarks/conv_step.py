"""Throughput of the streaming biohsic step on convolutional networks: samples per second of
the whole training step (forward, working memory, modulatory signal, local updates, AdamW
step) for ``small-cnn`` on 1×28×28 inputs (Fashion-MNIST's shape) and the paper's
``paper-cnn`` on 3×32×32 inputs (CIFAR-10's), K = 1 model, working memory N = 4, exact g_N.

Run:  python benchmarks/conv_step.py [--threads 2] [--devices cpu,cuda]
Measures on the CPU, and on CUDA when a GPU is present (or the devices given). Prints a
Markdown table and saves it with the raw figures as benchmarks/results/conv_step.{md,json}
(``--out`` elsewhere). Inputs are random tensors of the task's shape, so no dataset is needed.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.network import Network
from biohsic.rules import build_rule
from biohsic.train import make_optimizer
from results_io import machine_facts, write_results

#: (architecture, input shape, timed steps on a CPU, timed steps on a GPU)
CASES = [("small-cnn", (1, 28, 28), 400, 1000), ("paper-cnn", (3, 32, 32), 20, 400)]
WINDOW, MODELS, CLASSES = 4, 1, 10


def measure(arch: str, shape: tuple[int, ...], steps: int, device: str) -> float:
    """Samples per second of ``steps`` streaming steps after the working memory is full."""
    cfg = TrainConfig(task="cifar10", arch=arch, window=WINDOW, seeds=MODELS, device=device).resolved()
    d_in = math.prod(shape)
    net = Network((d_in, CLASSES), seeds=range(MODELS), architecture=arch, input_shape=shape).to(device)
    rule = build_rule(net, cfg)
    optimizer = make_optimizer(rule.trainable_parameters(), cfg)
    gen = torch.Generator().manual_seed(0)
    warmup = 2 * WINDOW
    x = torch.randn(steps + warmup, MODELS, 1, d_in, generator=gen).to(device)
    y = F.one_hot(torch.randint(0, CLASSES, (steps + warmup, MODELS, 1), generator=gen), CLASSES).float().to(device)
    for t in range(warmup):                      # fill the working memory, warm the kernels up
        rule.predict_and_write_grads(x[t], y[t])
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(warmup, warmup + steps):
        rule.predict_and_write_grads(x[t], y[t])
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * MODELS / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "conv_step"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for device in args.devices.split(","):
        for arch, shape, cpu_steps, gpu_steps in CASES:
            steps = gpu_steps if device.startswith("cuda") else cpu_steps
            rate = measure(arch, shape, steps, device)
            rows.append(dict(arch=arch, input="x".join(map(str, shape)), device=device, window=WINDOW, models=MODELS,
                             steps=steps, samples_per_second=round(rate, 2)))
            print(f"{arch:10s} {rows[-1]['input']:8s} {device:6s} {rate:9.1f} samples/s", flush=True)
    lines = ["| network | input | device | N | K | samples/s | ms per step |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['input']} | {r['device']} | {r['window']} | {r['models']} | "
              f"{r['samples_per_second']:.1f} | {1000 / r['samples_per_second']:.2f} |" for r in rows]
    meta = machine_facts(threads=args.threads, gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    write_results(args.out, lines, meta, rows)


if __name__ == "__main__":
    main()
