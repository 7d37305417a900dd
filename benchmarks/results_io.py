"""Where a benchmark leaves its figures: ``<out>.md`` (the table and the run's facts) and
``<out>.json`` (the same, machine-readable); the table is printed too."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def machine_facts(**extra) -> dict:
    """torch's version, the machine and the processor, and the benchmark's own settings."""
    return dict(torch=torch.__version__, machine=platform.machine(), processor=platform.processor(), **extra)


def write_results(out: str | Path, table: list[str], meta: dict, rows: list[dict]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(table) + f"\n\n{json.dumps(meta)}\n")
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print("\n".join(table))
