"""Samples per second of the streaming biohsic rule per engine (eager, compiled), with the
compile time and the peak memory of each measurement, and a paired comparison with the
authors' JAX code where its environment exists.

Run:  python benchmarks/engine_speed.py [--quick] [--authors-rounds 3]    (or: make bench)

Each measurement is a fresh process (so its peak RSS and its compile time are its own):
random inputs of the task's shape, the working memory filled, one chunk of 128 samples to
warm up (compiling, for the compiled engine: cold or warm depending on the graph cache),
then ``--samples`` samples timed. Samples/s counts the samples of all K models together.
Shapes: ``rate`` = Fashion-MNIST MLP 784-128-64-10; ``leaky`` = XOR 2-10-4-2, 20 time steps
per sample (the paper's leaky-integrator setting). The authors' code is timed with
``authors-bench`` (``$AUTHORS_BENCH``, default /work/shared/anchors/authors-bench) in rounds
alternating with ours, so that both see the same load: the ratio quoted is the median of
the rounds' ratios. Prints a Markdown table and saves it with the raw figures as
benchmarks/results/engine_speed.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from biohsic.config import TrainConfig
from biohsic.engine import CompiledEngine, EagerEngine
from biohsic.network import Network
from biohsic.rules import build_rule
from biohsic.train import make_optimizer

SHAPES = {"rate": (784, (128, 64), 10, "rate"), "leaky": (2, (10, 4), 2, "leaky")}
AUTHORS_BENCH = os.environ.get("AUTHORS_BENCH", "/work/shared/anchors/authors-bench")
WARMUP = 128


def warmed_up(units: str, models: int, window: int, engine: str, samples: int, steps_per_call: int | None):
    """An engine of the given kind on one thread, its working memory filled and one chunk of
    ``WARMUP`` samples run (compiling, for the compiled engine); returns it, the time the
    warm-up took, and ``samples`` more random samples ``(x, y)`` of the task's shape."""
    torch.set_num_threads(1)
    d_in, hidden, classes, neuron = SHAPES[units]
    cfg = TrainConfig(task="xor", window=window, hidden=hidden, seeds=models, neuron=neuron, lr=1e-4).resolved()
    network = Network([d_in, *hidden, classes], seeds=range(models))
    rule = build_rule(network, cfg)
    optimizer = make_optimizer(rule.trainable_parameters(), cfg)
    runner = EagerEngine(rule, optimizer) if engine == "eager" else \
        CompiledEngine(rule, optimizer, steps_per_call=steps_per_call)
    gen = torch.Generator().manual_seed(0)
    total = window + WARMUP + samples
    x = torch.rand(models, total, d_in, generator=gen)
    y = F.one_hot(torch.randint(0, classes, (models, total), generator=gen), classes).float()
    start = time.perf_counter()
    run_chunks(runner, x[:, :window + WARMUP], y[:, :window + WARMUP])
    return runner, time.perf_counter() - start, x[:, window + WARMUP:], y[:, window + WARMUP:]


def run_chunks(runner, x: torch.Tensor, y: torch.Tensor) -> None:
    """Train on ``(x, y)`` in chunks of 128 samples, as the trainer does."""
    for first in range(0, x.shape[1], 128):
        runner.train_chunk(x[:, first:first + 128], y[:, first:first + 128])
        runner.first_nonfinite()


def measure(units: str, models: int, window: int, engine: str, samples: int, steps_per_call: int | None) -> dict:
    """One measurement in this process (see the module docstring)."""
    runner, warmup_seconds, x, y = warmed_up(units, models, window, engine, samples, steps_per_call)
    start = time.perf_counter()
    run_chunks(runner, x, y)
    seconds = time.perf_counter() - start
    return {"units": units, "K": models, "N": window, "engine": engine, "samples": samples,
            "samples_per_second": samples * models / seconds, "compile_seconds": runner.compile_seconds,
            "warmup_seconds": warmup_seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "steps_per_call": getattr(runner, "steps_per_call", None)}


def measured(units: str, models: int, window: int, engine: str, samples: int, steps_per_call: int | None) -> dict:
    """:func:`measure` in a fresh process."""
    command = [sys.executable, __file__, "--one", json.dumps([units, models, window, engine, samples, steps_per_call])]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def authors(task: str, steps: int) -> float | None:
    """The authors' samples/s from ``authors-bench`` (``None`` when its environment is missing)."""
    if not (Path("/tmp/authors").is_dir() and Path(AUTHORS_BENCH).exists()):
        return None
    done = subprocess.run([AUTHORS_BENCH, task, str(steps)], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("samples_per_s=")]
    return float(lines[-1].split("=", 1)[1]) if done.returncode == 0 and lines else None


def paired(rounds: int, samples: int, steps_per_call: int | None) -> list[dict]:
    """Ours (compiled and eager) against the authors', alternating, ``rounds`` times, for
    their Fashion-MNIST MLP (N = 6) and their leaky XOR (N = 10)."""
    rows = []
    for units, task, window, steps in (("rate", "fmnist", 6, 2000), ("leaky", "xor", 10, 900)):
        figures: dict[str, list[float]] = {"authors": [], "compiled": [], "eager": []}
        for _ in range(rounds):
            theirs = authors(task, steps)
            if theirs is None:
                return rows
            figures["authors"].append(theirs)
            for engine in ("compiled", "eager"):
                figure = measured(units, 1, window, engine, samples, steps_per_call)
                figures[engine].append(figure["samples_per_second"])
        ratios = {engine: statistics.median(a / b for a, b in zip(figures[engine], figures["authors"]))
                  for engine in ("compiled", "eager")}
        rows.append({"units": units, "task": task, "N": window, "rounds": rounds, "figures": figures,
                     "compiled_over_authors": ratios["compiled"], "eager_over_authors": ratios["eager"]})
    return rows


def markdown(rows: list[dict], pairs: list[dict], command: str) -> str:
    lines = [f"Command: `{command}` — {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{os.cpu_count()} cores, one torch thread, shared machine (figures vary with its load).", "",
             "| units | K | N | engine | samples/s | compiled / eager | compile s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    eager = {(r["units"], r["K"], r["N"]): r["samples_per_second"] for r in rows if r["engine"] == "eager"}
    for r in rows:
        ratio = r["samples_per_second"] / eager[(r["units"], r["K"], r["N"])] if r["engine"] == "compiled" else 1.0
        lines.append(f"| {r['units']} | {r['K']} | {r['N']} | {r['engine']} | {r['samples_per_second']:.0f} | "
                     f"{ratio:.2f} | {r['compile_seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    if pairs:
        lines += ["", "Paired with the authors' code (K = 1; median of the rounds' ratios):", "",
                  "| units | task | N | rounds | authors samples/s | compiled samples/s | compiled / authors | "
                  "eager / authors |", "|---|---|---|---|---|---|---|---|"]
        for p in pairs:
            f = p["figures"]
            lines.append(f"| {p['units']} | {p['task']} | {p['N']} | {p['rounds']} | "
                         f"{statistics.median(f['authors']):.0f} | {statistics.median(f['compiled']):.0f} | "
                         f"{p['compiled_over_authors']:.1f} | {p['eager_over_authors']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K = 1 and N = 8 only (rate), N = 10 (leaky)")
    parser.add_argument("--samples", type=int, default=1024, help="samples timed per measurement")
    parser.add_argument("--steps-per-call", type=int, help="updates per compiled call (default: the engine's)")
    parser.add_argument("--authors-rounds", type=int, default=3, help="paired rounds with the authors' code (0: none)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_speed"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    if args.quick:
        grid = [("rate", 1, 8), ("leaky", 1, 10)]
    else:
        grid = [(units, k, n) for units in ("rate", "leaky") for k in (1, 8, 30) for n in (2, 8, 32, 64)]
    rows = []
    for units, models, window in grid:
        for engine in ("eager", "compiled"):
            samples = args.samples if units == "rate" else max(args.samples // 8, 64)
            rows.append(measured(units, models, window, engine, samples, args.steps_per_call))
            print(json.dumps(rows[-1]), flush=True)
    pairs = paired(args.authors_rounds, args.samples, args.steps_per_call) if args.authors_rounds else []
    command = "python benchmarks/engine_speed.py " + " ".join(sys.argv[1:])
    table = markdown(rows, pairs, command.strip())
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "rows": rows, "paired": pairs},
                                                   indent=2) + "\n")
    out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
