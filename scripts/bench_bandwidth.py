"""How close AKR's low-rank OBS solver runs to this machine's memory bandwidth.

1. One-thread streaming bandwidth: the triad ``a = b + s * c`` on arrays far larger than the
   caches, best of N, in numpy and torch (STREAM's convention: 24 bytes per element for the
   one-pass torch triad; numpy has no fused triad, so its two passes ``a = s * c; a += b``
   are counted as the 40 bytes per element they move). A one-thread batched DGEMM of the
   shape the blocked solver uses gives the compute roof.
2. For every AKR layer shape of MiniLM-L6 at 50% (bias column included): the bytes
   ``akr._obs_rows_lowrank`` moves per row, from its access pattern (formula in the output),
   divided by the measured seconds per row on ONE thread, as a fraction of the triad
   bandwidth; and the same rows through ``_obs_fast``'s blocked solver.
3. ``--compare``: ``akr.obs_prune`` (lowrank) against ``_obs_fast.obs_prune`` (blocked, two
   workers) on the 384 x 1537 output layer, float64 and float32, in the same run.

Prints Markdown (or writes it to --out). Shared machine: the load average is printed; compare
the ratios of one run, not absolute times across runs.

    python scripts/bench_bandwidth.py --compare --out /tmp/bandwidth.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.pruners import _obs_fast, akr
from benchmark.pruners._layerwise import inverse_spd

# (name, d_out, d_in + bias column) of one MiniLM-L6 block, in AKR's order
SHAPES = [
    ("query / key / value / attention.output", 384, 385),
    ("intermediate", 1536, 385),
    ("output", 384, 1537),
]
VECTOR_PASSES = 31  # d-length float passes per greedy step outside the U stream (see text)


def best_of(fn, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def triad(n: int, repeats: int) -> dict[str, float]:
    """One-thread triad bandwidth in GB/s (1e9 bytes/s)."""
    s = 3.0
    a, b, c = (np.full(n, v) for v in (0.0, 1.0, 2.0))

    def np_triad():
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)

    ta, tb, tc = (torch.from_numpy(x.copy()) for x in (a, b, c))
    out = {
        "numpy": 40 * n / best_of(np_triad, repeats) / 1e9,
        "torch": 24 * n / best_of(lambda: torch.add(tb, tc, alpha=s, out=ta), repeats) / 1e9,
    }
    return out


def gemm_gflops(repeats: int, d: int = 1537, block: int = 64, rows: int = 4) -> float:
    """One-thread GFLOP/s of the blocked solver's refresh ``M -= U^T U`` (float64)."""
    m = torch.randn(rows, d, d, dtype=torch.float64)
    u = torch.randn(rows, block, d, dtype=torch.float64)
    t = best_of(lambda: m.baddbmm_(u.transpose(1, 2), u, alpha=-1.0), repeats)
    return 2 * rows * d * d * block / t / 1e9


def random_layer(d_out: int, d: int, seed: int = 0):
    """Random weights and an H of random inputs with a ones column (its inverse)."""
    g = torch.Generator().manual_seed(seed)
    n = max(2 * d, 1000)
    x = torch.cat([torch.randn(n, d - 1, generator=g, dtype=torch.float64),
                   torch.ones(n, 1, dtype=torch.float64)], 1)  # fmt: skip
    w = torch.randn(d_out, d, generator=g, dtype=torch.float64)
    hinv, _ = inverse_spd(x.T @ x / n, 0.0, 1e-10)
    return w, hinv


def lowrank_bytes(d: int, k: int) -> tuple[float, float]:
    """(bytes of U streamed, bytes of everything) per row for ``akr._obs_rows_lowrank``."""
    u_stream = 8 * d * k * (k - 1) / 2  # step t reads u[:, :t]: t * d float64
    other = 8 * d * k * (VECTOR_PASSES + 1) + 64 * k * (k - 1) / 2  # + zeroing U, coef lines
    return u_stream, u_stream + other


def time_rows(solver, w, hinv, k) -> tuple[float, float]:
    """(wall, process CPU) seconds per row of ``solver`` on all rows of ``w`` (one thread)."""
    t0, c0 = time.perf_counter(), time.process_time()
    solver(w.clone(), hinv, k, None, True)
    return ((time.perf_counter() - t0) / w.shape[0], (time.process_time() - c0) / w.shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2**24, help="triad array length (float64)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows-small", type=int, default=128, help="rows timed, d_in = 385 layers")
    ap.add_argument(
        "--rows-large",
        type=int,
        default=13,
        help="rows timed, 1537-input layer (13 = one blocked chunk at 256 MiB)",
    )
    ap.add_argument("--compare", action="store_true", help="also old vs new on 384 x 1537")
    ap.add_argument("--compare-rows", type=int, default=26)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    bw = triad(args.n, args.repeats)
    roof = gemm_gflops(max(2, args.repeats // 2))
    ref_bw = max(bw.values())
    lines = [
        "# AKR's OBS solver against memory bandwidth",
        "",
        f"Generated by `python scripts/bench_bandwidth.py {' '.join(sys.argv[1:])}`. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, numpy "
        f"{np.__version__}; ONE torch thread unless said. 1-minute load average "
        f"{load0[0]:.2f} before (other jobs share the cores: read ratios within this page).",
        "",
        "## One-thread streaming bandwidth and compute roof",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| triad a = b + s*c, torch (one pass, 24 B/element) | {bw['torch']:.1f} GB/s |",
        f"| triad, numpy (two passes a = s*c; a += b, 40 B/element) | {bw['numpy']:.1f} GB/s |",
        f"| batched DGEMM M -= U^T U (4 x 1537 x 1537, rank 64) | {roof:.1f} GFLOP/s |",
        "",
        f"Arrays of {args.n:,} float64 ({args.n * 8 / 2**20:.0f} MiB each), best of "
        f"{args.repeats}. The fractions below use the better triad, {ref_bw:.1f} GB/s.",
        "",
        "## Bytes per row of the low-rank solver at 50%",
        "",
        "`akr._obs_rows_lowrank`, per row with d = d_in + 1 inputs and k = int(d_in / 2) steps:",
        "step t forms column p of the current inverse as `G[p] - U[:t, p]^T U[:t]`, which reads",
        "the row's t x d float64 factor U once (8 t d bytes); everything else in the step",
        f"(candidate score, argmin, column, weight and diagonal updates) is about {VECTOR_PASSES}",
        "d-length float64 passes (read or write), plus one 64-byte line per coefficient gathered",
        "from U. Per row:",
        "",
        f"    bytes = 8 d k (k - 1) / 2  +  8 d k ({VECTOR_PASSES} + 1)  +  64 k (k - 1) / 2",
        "",
        "(the first term is the U stream; its share is in the table). A chunk's U is rows x k x d",
        "float64 (0.6 MiB a row for d = 385, 9.4 MiB for d = 1537; 227 MiB for the 384-row",
        "chunk of a 385-input layer, 256 MiB for a 1537-input chunk), far larger than the",
        "32 MiB L3 of this machine, so it comes from memory every step.",
        "",
        "| layer | d_out x d | k | rows timed | MB/row (U stream) | MB/row (all) | "
        "lowrank s/row, wall / CPU | GB/s (all bytes / CPU s) | share of triad | "
        "blocked s/row, wall / CPU | blocked / lowrank (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d_out, d in SHAPES:
        rows = args.rows_large if d > 1000 else args.rows_small
        k = int((d - 1) * 0.5)
        w, hinv = random_layer(rows, d)
        w_low, c_low = time_rows(akr._obs_rows_lowrank, w, hinv, k)
        w_blk, c_blk = time_rows(
            lambda wc, hi, kk, nm, pl: _obs_fast._obs_rows_blocked(wc, hi, kk, nm, pl, 64),
            w, hinv, k,
        )  # fmt: skip
        u_b, all_b = lowrank_bytes(d, k)
        gbs = all_b / c_low / 1e9
        lines.append(
            f"| {name} | {d_out}x{d} | {k} | {rows} | {u_b / 1e6:.0f} ({u_b / all_b:.0%}) | "
            f"{all_b / 1e6:.0f} | {w_low:.4f} / {c_low:.4f} | {gbs:.1f} | {gbs / ref_bw:.0%} | "
            f"{w_blk:.4f} / {c_blk:.4f} | {c_blk / c_low:.2f} |"
        )
    lines += [
        "",
        "Timed once on the first rows of a random layer (the bytes do not depend on the data);",
        "the bandwidth uses process CPU seconds, the time the solver actually ran (wall time",
        "also counts the time other jobs held the core). The",
        "blocked solver (`_obs_fast`, refresh every 64 steps) performs 2 d^2 k flops per row in",
        "GEMMs, which run near the compute roof above instead of the bandwidth.",
    ]
    if args.compare:
        lines += ["", *compare(args.compare_rows, max(2, threads_before))]
    load1 = os.getloadavg()
    lines += ["", f"1-minute load average after: {load1[0]:.2f}."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


def compare(rows: int, threads: int, chunk_mb: int = 128) -> list[str]:
    """Old (akr.obs_prune, lowrank) vs new (_obs_fast.obs_prune, blocked) on 384 x 1537 rows.

    Old with 1 and ``threads`` intra-op threads, new with 1 and ``threads`` workers; the
    same ``chunk_mb`` for both, small enough that ``rows`` make several chunks.
    """
    g = torch.Generator().manual_seed(1)
    n, d = 3000, 1537
    x = torch.cat([torch.randn(n, d - 1, generator=g, dtype=torch.float64),
                   torch.ones(n, 1, dtype=torch.float64)], 1)  # fmt: skip
    h = x.T @ x / n
    w = torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.05
    budget = chunk_mb * 2**20
    out = [
        f"## Old against new on the 384 x 1537 output layer ({rows} rows, k = 768)",
        "",
        "`akr.obs_prune(impl='lowrank')` (torch intra-op threads) against "
        "`_obs_fast.obs_prune(impl='blocked')` (row chunks over single-threaded workers), "
        f"same rows, same H, chunk budget {chunk_mb} MiB for both, all in this run. Wall "
        "seconds and process CPU seconds (the CPU column is less sensitive to other jobs).",
        "",
        "| dtype | solver | threads / workers | wall s | CPU s | wall / old 1-thread | "
        "CPU / old 1-thread | masks equal to old | max abs w diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dtype in (torch.float64, torch.float32):
        base = None
        for label, nthreads in (("old", 1), ("old", threads), ("new", 1), ("new", threads)):
            before = torch.get_num_threads()
            torch.set_num_threads(nthreads)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                if label == "old":
                    res = akr.obs_prune(w, h, 0.5, protect_last=True, impl="lowrank",
                                        dtype=dtype, chunk_bytes=budget)  # fmt: skip
                else:
                    damp = 0.0 if dtype == torch.float64 else None
                    res = _obs_fast.obs_prune(w, h, 0.5, protect_last=True, dtype=dtype,
                                              chunk_bytes=budget, workers=nthreads,
                                              damp=damp)  # fmt: skip
            finally:
                torch.set_num_threads(before)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if base is None:
                base = (wall, cpu, res)
            agree = float((res[1] == base[2][1]).double().mean())
            diff = float((res[0] - base[2][0]).abs().max())
            out.append(
                f"| {str(dtype).replace('torch.', '')} | {label} | {nthreads} | {wall:.2f} | "
                f"{cpu:.2f} | {wall / base[0]:.2f} | {cpu / base[1]:.2f} | {agree:.4f} | "
                f"{diff:.2e} |"
            )
    out += [
        "",
        "float32: the old solver runs undamped (1e-6 pivot floor), the new one with the",
        "official code's 2e-4 relative damping, so their masks differ by the damping as well",
        "as by rounding (tests/test_obs_fast.py compares float32 and float64 at equal damping).",
    ]
    return out


if __name__ == "__main__":
    main()
