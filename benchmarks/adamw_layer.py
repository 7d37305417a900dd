"""What one AdamW update of the Fashion-MNIST MLP's first layer (128 × 784) costs on this CPU,
written three ways: the compiled step's own formula (``biohsic.engine.step.adamw_update``
with the layer's local gradient, compiled by inductor, as inside the compiled engine),
PyTorch's fused AdamW kernel (``torch._fused_adamw_``, given the gradient) and, as the floor
of the memory traffic, one in-place pass that reads the gradient and updates the weights.

Run:  python benchmarks/adamw_layer.py [--calls 2000]

One thread, float32 and float64; prints µs per update (median of 5 timings) and saves
benchmarks/results/adamw_layer.{md,json}. The compiled engine's K = 1 step does this update
(plus a forward pass over the same weights, fused into it) once per sample: it bounds
samples/s from above whatever happens around it.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from biohsic.engine.step import OptimizerSettings, adamw_update
from results_io import machine_facts, write_results

ROWS, COLUMNS = 128, 784
SETTINGS = OptimizerSettings("adamw", lr=1e-4, weight_decay=0.01)


def compiled_step(weight, exp_avg, exp_avg_sq, signal, inputs, bias_correction1, bias_correction2):
    """The local gradient of the layer (an outer product) and the engine's AdamW update."""
    adamw_update(weight, signal[:, None] * inputs[None, :], exp_avg, exp_avg_sq, bias_correction1, bias_correction2,
                 SETTINGS)


def timed(update, calls: int) -> float:
    """Median µs per call of ``update`` over 5 timings of ``calls`` calls (after 20 untimed)."""
    for _ in range(20):
        update()
    figures = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            update()
        figures.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(figures)


def measure(dtype: torch.dtype, calls: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(ROWS, COLUMNS, generator=gen, dtype=dtype)
    exp_avg, exp_avg_sq = torch.zeros_like(weight), torch.full_like(weight, 1e-3)
    grad = torch.randn(ROWS, COLUMNS, generator=gen, dtype=dtype)
    signal, inputs = torch.randn(ROWS, generator=gen, dtype=dtype), torch.randn(COLUMNS, generator=gen, dtype=dtype)
    corrections = torch.tensor(0.5, dtype=dtype), torch.tensor(0.01, dtype=dtype)
    step = torch.tensor(10.0)
    compiled = torch.compile(compiled_step, fullgraph=True, dynamic=False)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "compiled step formula": timed(lambda: compiled(weight, exp_avg, exp_avg_sq, signal, inputs, *corrections),
                                       calls),
        "torch fused AdamW": timed(lambda: torch._fused_adamw_(
            [weight], [grad], [exp_avg], [exp_avg_sq], [], [step], lr=SETTINGS.lr, beta1=0.9, beta2=0.999,
            weight_decay=SETTINGS.weight_decay, eps=SETTINGS.eps, amsgrad=False, maximize=False), calls),
        "one pass (weight += grad)": timed(lambda: weight.add_(grad, alpha=1e-12), calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(dtype, args.calls) for dtype in (torch.float32, torch.float64)]
    names = [name for name in rows[0] if name != "dtype"]
    lines = [f"Command: `python benchmarks/adamw_layer.py --calls {args.calls}` — one AdamW update of a "
             f"{ROWS} × {COLUMNS} layer, µs (median of 5), one thread", "",
             "| dtype | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += ["| " + row["dtype"] + " | " + " | ".join(f"{row[name]:.0f}" for name in names) + " |" for row in rows]
    write_results(Path(__file__).parent / "results" / "adamw_layer", lines, machine_facts(calls=args.calls), rows)


if __name__ == "__main__":
    main()
