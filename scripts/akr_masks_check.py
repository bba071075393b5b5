"""AKR's masks check along a real job: the compiled solver against lowrank on the same inputs.

Issue #28's rule for the default solver: the same masks as the float64 ``lowrank`` solver on
the embedded model, bitwise or differing only where the two are within rounding of a tie. Two
whole prunes (one per solver) cannot answer it: their float64 updates differ by about 1e-14
(summation order), which now and then lands on the other side of a float32 rounding when the
weights are written back, and every later layer is then fitted on other inputs (see
``results/perf/akr_masks_check.md``). This script compares the solvers where the rule is about
them: in every layer of one real job, on the very ``W`` and ``H`` the job hands its solver.

It runs one ordinary job (``python -m benchmark.run`` with the overrides given) whose solver is
the compiled one, wrapped: after each layer's compiled solve, ``akr.obs_prune(impl='lowrank',
dtype=float64)`` solves a sample of the same rows (every ``--stride``-th row, the first row
always) from the same ridge-refit weights, Hessian and options, and the two are compared:

- rows with identical masks and the largest weight difference on them;
- for each differing row, the smallest relative gap between the best two scores over the
  reference's steps (``bench_obs.min_tie_gap``: a flip within rounding of a tie has a gap of
  about 1e-12 or less).

The job writes its record and pruned cache under a scratch folder (``--scratch``; the dense
model is linked from ``.cache/dense``), never into ``results/``. With ``--cached RUN_ID`` the
pruned weights are also compared with those of a committed record's cache entry (is the job
reproducible run to run?).

    python scripts/akr_masks_check.py --stride 8 --cached ead0de215a5b \\
        --out results/perf/akr_masks_layers_875.md -- \\
        experiment=embedded_agnews pruner=akr sparsity=0.875 attack=none \\
        pruner.obs_impl=compiled pruner.obs_workers=1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

os.environ.setdefault("USE_TF", "0")

from benchmark.pruners import _obs_fast, akr  # noqa: E402

log = logging.getLogger("akr_masks_check")

ROWS: list[dict] = []
"""One entry per solved layer, in the job's order."""


def tie_gap(w: torch.Tensor, h: torch.Tensor, k: int, options: dict) -> float:
    """Smallest relative gap between the best two scores over one row's reference steps
    (NaN where the job's OBS options are not the default job's, which the definition uses)."""
    from bench_obs import OPTIONS, min_tie_gap  # the solver benchmark's definition

    ours = {key: options.get(key) for key in OPTIONS}
    if ours != OPTIONS or options.get("nm") is not None:
        return float("nan")
    return min_tie_gap(w, h, (k + 0.5) / w.shape[0])  # int(d * s) = k zeros


def checked_solver(real):
    """``real`` (the compiled driver) followed by the lowrank reference on sampled rows."""

    def solver(w_bar, h, sparsity, **kw):
        pruned, keep, used = real(w_bar, h, sparsity, **kw)
        t0 = time.process_time()
        d_out, d = w_bar.shape
        rows = torch.arange(0, d_out, STRIDE)
        ref_w, ref_keep, _ = akr.obs_prune(
            w_bar[rows], h, sparsity, nm=kw.get("nm"), protect_last=kw.get("protect_last", False),
            impl="lowrank", dtype=torch.float64, chunk_bytes=kw.get("chunk_bytes", 256 * 2**20),
            damp=kw.get("damp", 0.0), zeros_per_row=kw.get("zeros_per_row", "floor"),
            official_damp=kw.get("official_damp"),
        )  # fmt: skip
        same = (ref_keep == keep[rows]).all(1)
        differing = rows[~same].tolist()
        k = int((~ref_keep[0]).sum())
        gaps = [tie_gap(w_bar[r].clone(), h, k, kw) for r in differing]
        wdiff = float((ref_w[same] - pruned[rows][same]).abs().max()) if bool(same.any()) else 0.0
        ROWS.append({
            "layer": len(ROWS), "shape": f"{d_out}x{d}", "zeros_per_row": k,
            "rows_compared": int(rows.numel()), "identical": int(same.sum()),
            "differing": differing, "tie_gaps": gaps, "max_w_diff": wdiff,
            "reference_cpu_s": round(time.process_time() - t0, 2),
        })  # fmt: skip
        log.info("masks check: layer %d (%dx%d): %d/%d rows identical, max |w diff| %.2e",
                 len(ROWS) - 1, d_out, d, int(same.sum()), rows.numel(), wdiff)  # fmt: skip
        return pruned, keep, used

    return solver


def layer_names(prune_info: dict) -> list[str]:
    return list((prune_info.get("method") or {}).get("layers", {}))


def compare_cached(scratch: Path, run_id: str) -> str:
    """The scratch job's pruned weights against a committed record's cache entry."""
    rec = next((ROOT / "results" / "runs").glob(f"*/{run_id}.json"), None)
    if rec is None:
        return f"record {run_id} not found"
    key = json.loads(rec.read_text())["prune_info"]["key"]
    ours = sorted((scratch / "cache" / "pruned").glob("*/weights.pt"))
    theirs = ROOT / ".cache" / "pruned" / key / "weights.pt"
    if not ours or not theirs.exists():
        return f"cache entry pruned/{key} of {run_id} not on this machine"
    a = torch.load(ours[0], map_location="cpu", weights_only=True)
    b = torch.load(theirs, map_location="cpu", weights_only=True)
    a = a.get("state_dict", a)
    b = b.get("state_dict", b)
    names = [n for n in a if n in b and torch.is_tensor(a[n]) and a[n].dtype.is_floating_point]
    differ = [n for n in names if not torch.equal(a[n], b[n])]
    masks = [n for n in names if n.endswith(".weight") and not torch.equal(a[n] == 0, b[n] == 0)]
    return (f"{len(names)} float tensors compared with record {run_id}'s cache entry "
            f"pruned/{key}: {len(names) - len(differ)} bitwise equal, {len(differ)} differ; "
            f"zero patterns differ in {len(masks)} weight tensors")  # fmt: skip


def render(args, overrides, names, wall, cached) -> str:
    total = sum(r["rows_compared"] for r in ROWS)
    same = sum(r["identical"] for r in ROWS)
    gaps = [g for r in ROWS for g in r["tie_gaps"]]
    lines = [
        f"`python scripts/akr_masks_check.py --stride {args.stride}"
        + (f" --cached {args.cached}" if args.cached else "")
        + f" --out {args.out} -- {' '.join(overrides)}`; {wall:.0f} s wall in all, reference "
        f"solves {sum(r['reference_cpu_s'] for r in ROWS):.0f} CPU s. Every "
        f"{args.stride}-th row of every layer solved again by `lowrank` (float64) on the "
        "compiled solve's own inputs.",
        "",
        f"**{same} of {total} rows identical** over {len(ROWS)} layers"
        + (f"; differing rows' smallest tie gaps: {', '.join(f'{g:.1e}' for g in gaps)}"
           if gaps else "; no row differs")
        + f"; largest weight difference on identical rows "
        f"{max((r['max_w_diff'] for r in ROWS), default=0.0):.1e}.",
        "",
    ]  # fmt: skip
    if cached:
        lines += [f"Run to run: {cached}.", ""]
    lines += [
        "| layer | shape (d_out x d) | zeros / row | rows compared | identical | differing rows "
        "(tie gap) | max abs w diff |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for r in ROWS:
        name = names[r["layer"]] if r["layer"] < len(names) else str(r["layer"])
        pairs = zip(r["differing"], r["tie_gaps"], strict=True)
        diff = ", ".join(f"{i} ({g:.1e})" for i, g in pairs) or "-"
        lines.append(
            f"| {name} | {r['shape']} | {r['zeros_per_row']} | {r['rows_compared']} | "
            f"{r['identical']} | {diff} | {r['max_w_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    global STRIDE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stride", type=int, default=8, help="compare every N-th row")
    ap.add_argument("--cached", default=None, help="committed run id to compare weights with")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/akr_masks_check"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="+", help="the job's overrides (after --)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    STRIDE = max(1, args.stride)
    if not any(o.startswith("pruner.obs_impl=compiled") for o in args.overrides):
        ap.error("the job must run the compiled solver: add pruner.obs_impl=compiled")
    cache = args.scratch / "cache"
    (cache / "pruned").mkdir(parents=True, exist_ok=True)
    if not (cache / "dense").exists():
        (cache / "dense").symlink_to(ROOT / ".cache" / "dense")
    _obs_fast.obs_prune = checked_solver(_obs_fast.obs_prune)
    start = time.perf_counter()
    from benchmark import run

    sys.argv = ["benchmark.run", *args.overrides, f"paths.cache_dir={cache}",
                f"paths.results_dir={args.scratch / 'results'}", "force=true"]  # fmt: skip
    try:
        run.main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    wall = time.perf_counter() - start
    recs = sorted((args.scratch / "results").rglob("*.json"), key=os.path.getmtime)
    info = json.loads(recs[-1].read_text())["prune_info"] if recs else {}
    cached = compare_cached(args.scratch, args.cached) if args.cached else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, args.overrides, layer_names(info), wall, cached))
    log.info("%s", args.out.read_text())


STRIDE = 8

if __name__ == "__main__":
    main()
