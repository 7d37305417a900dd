"""Where the time of the streaming step goes, per engine: ``torch.profiler`` over chunks of
samples after the warm-up of ``engine_speed.py`` (same shapes, same setup, one thread).

Run:  python benchmarks/engine_profile.py [--units rate|leaky] [--samples 512]

Prints, per engine, the wall time per sample without the profiler, the share of the
profiled time spent inside compiled graphs (``Torch-Compiled Region``), inside the kernels
inductor generated (each recorded by ``torch._inductor.config.cpp.enable_kernel_profile``),
and in the compiled call's guard checks (``TorchDynamo Cache Lookup``), and the operations
with the most self CPU time. Saves it as
benchmarks/results/engine_profile_<units>.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from engine_speed import SHAPES, run_chunks, warmed_up

REGIONS = {"compiled graphs": "Torch-Compiled Region", "generated kernels": "graph_",
           "guard checks": "TorchDynamo Cache Lookup"}


def profile_engine(units: str, engine: str, window: int, samples: int) -> list[str]:
    torch._inductor.config.cpp.enable_kernel_profile = True
    runner, _, x, y = warmed_up(units, 1, window, engine, 2 * samples, None)
    start = time.perf_counter()
    run_chunks(runner, x[:, :samples], y[:, :samples])
    per_sample = (time.perf_counter() - start) / samples
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run_chunks(runner, x[:, samples:], y[:, samples:])
        profiled = time.perf_counter() - start
    events = prof.key_averages()
    lines = [f"### {units} units, N = {window}, {engine} engine", "",
             f"- wall time per sample, no profiler: {1e6 * per_sample:.0f} µs ({1 / per_sample:.0f} samples/s)",
             f"- profiled wall time per sample: {1e6 * profiled / samples:.0f} µs"]
    for name, key in REGIONS.items():
        total = sum(e.cpu_time_total for e in events if e.key.startswith(key))
        if total:
            lines.append(f"- {name}: {total / 1e6 / profiled:.0%} of the profiled wall time "
                         f"({total / samples:.0f} µs per sample)")
    lines += ["", "| operation | calls per sample | self CPU µs per sample |", "|---|---|---|"]
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]:
        lines.append(f"| `{e.key[:60]}` | {e.count / samples:.1f} | {e.self_cpu_time_total / samples:.1f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", choices=tuple(SHAPES), default="rate")
    parser.add_argument("--samples", type=int, default=512, help="samples timed, then profiled, per engine")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    window = 8 if args.units == "rate" else 10
    samples = args.samples if args.units == "rate" else max(args.samples // 8, 64)
    lines = [f"Command: `python benchmarks/engine_profile.py --units {args.units} --samples {args.samples}` "
             f"(torch {torch.__version__}, one thread, K = 1)", ""]
    for engine in ("eager", "compiled"):
        lines += profile_engine(args.units, engine, window, samples)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out) / f"engine_profile_{args.units}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
