"""Measured training cost per phase of the training-based pruners, from their run records.

Every training phase a pruner runs records its optimiser steps and wall seconds in
``prune_info`` (mask learning, ticket fine-tune, IMP rounds, candidates, stages...). This
script collects them per (pruner, sparsity) from the records of one experiment and prints a
Markdown table with seconds per step, the basis for extrapolating a run at the papers' budgets
(docs/methods/training_based.md, "What a real run costs").

    python scripts/training_costs.py --exp embedded_training_reduced [--results-dir results]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def phases(info: Any, path: str = "") -> Iterator[tuple[str, int, float]]:
    """(phase path, steps, seconds) for every dict in ``info`` that has both keys."""
    if isinstance(info, dict):
        if "steps" in info and "seconds" in info:
            yield path or "all", int(info["steps"]), float(info["seconds"])
        for key, value in info.items():
            yield from phases(value, f"{path}.{key}" if path else str(key))
    elif isinstance(info, list):
        for i, value in enumerate(info):
            yield from phases(value, f"{path}[{i}]")


def collect(results_dir: Path, exp: str) -> list[dict[str, Any]]:
    """One row per phase of each distinct pruning (records of the same pruning share it)."""
    rows, seen = [], set()
    for path in sorted((results_dir / "runs" / exp).glob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        if rec.get("status") != "ok":
            continue
        key = (rec["pruner"], rec["sparsity_target"], rec["seed"])
        info = rec.get("prune_info") or {}
        if key in seen or info.get("cached"):
            continue  # the attack jobs after the first load the pruned weights from the cache
        seen.add(key)
        for name, steps, seconds in phases(info.get("method") or {}):
            rows.append({
                "pruner": key[0], "sparsity": key[1], "phase": name, "steps": steps,
                "seconds": seconds, "total_prune_s": rec.get("prune_seconds"),
            })  # fmt: skip
    return sorted(rows, key=lambda r: (r["pruner"], r["sparsity"], r["phase"]))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table."""
    lines = ["| pruner | sparsity | phase | steps | seconds | s / step | pruning s (all) |",
             "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        per = r["seconds"] / r["steps"] if r["steps"] else float("nan")
        lines.append(
            f"| {r['pruner']} | {r['sparsity']} | {r['phase']} | {r['steps']} | "
            f"{r['seconds']:.0f} | {per:.2f} | {r['total_prune_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the table for one experiment's records."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp", required=True, help="experiment name (results/runs/<exp>/)")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "results")
    args = ap.parse_args(argv)
    rows = collect(args.results_dir, args.exp)
    if not rows:
        sys.stderr.write(f"no training phases in {args.results_dir}/runs/{args.exp}\n")
        return 2
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
