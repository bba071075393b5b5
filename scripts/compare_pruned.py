"""Compare two pruned models of one dense model: weights, masks, cost, clean and Aua.

    python scripts/compare_pruned.py --exp embedded_post_training --a RUN_ID --b RUN_ID \
        [--results-dir results] [--cache-dir .cache] [--markdown FILE] [--no-weights] [--layers]

``--a`` and ``--b`` are run ids of two ok records of the same dense model and attack protocol
(e.g. AKR with ``obs_dtype=float64`` and ``float32``). Their pruned weights are found in the
pruned cache (``<cache-dir>/pruned/<key>/``: the record's ``prune_info.key``, or for older
records the entry whose ``info.json`` holds the record's pruning time and method info). The
script prints, and writes as Markdown with ``--markdown``:

- the share of identical mask entries (zero / non-zero) over the prunable linears, overall and
  for the worst layer, and the largest absolute weight difference (not with ``--no-weights``,
  which reads only the records and attack logs: no pruned cache needed); with ``--layers``,
  per layer in the model's order, and the first layer where the two differ;
- the pruning wall seconds of both jobs and their ratio (the jobs ran at different times: on a
  shared CPU the ratio carries the load of the moment, which the text says);
- clean accuracy of both on the attack log's examples with the paired McNemar test (when the
  attack covers the whole split the logs hold every example's clean prediction), and the paired
  Aua difference with its bootstrap interval and McNemar p-value
  (``benchmark.reporting.compare.compare_pair``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.reporting.compare import compare_pair  # noqa: E402
from benchmark.reporting.effects import clean_pairs  # noqa: E402
from benchmark.reporting.records import load_records, read_attack_log  # noqa: E402

log = logging.getLogger("compare_pruned")


def find_cache(cache_dir: Path, record: dict) -> Path:
    """The pruned-cache folder whose info matches the record's pruning (time and method)."""
    want = record.get("prune_info") or {}
    if want.get("key") and (cache_dir / "pruned" / want["key"] / "weights.pt").is_file():
        return cache_dir / "pruned" / want["key"]  # records since prune_info.key exists
    for info_path in sorted((cache_dir / "pruned").glob("*/info.json")):
        info = json.loads(info_path.read_text())
        if info.get("seconds") == want.get("seconds") and info.get("method") == want.get("method"):
            return info_path.parent
    raise SystemExit(
        f"error: no pruned-cache entry under {cache_dir}/pruned matches run "
        f"{record['run_id']} (pruning {want.get('seconds')} s); rerun the job with "
        "cache_pruned=true"
    )


def weight_stats(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Mask agreement and max weight difference over the 2-D encoder linear weights."""
    total = same = 0
    worst = (1.0, "")
    max_diff = 0.0
    for name, wa in a.items():
        if wa.ndim != 2 or "encoder" not in name or not name.endswith("weight"):
            continue
        wb = b[name]
        ma, mb = wa != 0, wb != 0
        eq = int((ma == mb).sum())
        total += ma.numel()
        same += eq
        share = eq / ma.numel()
        if share < worst[0]:
            worst = (share, name)
        max_diff = max(max_diff, float((wa.double() - wb.double()).abs().max()))
    return {"mask_agreement": same / total, "entries": total, "worst_layer": worst[1],
            "worst_layer_agreement": worst[0], "max_abs_weight_diff": max_diff}  # fmt: skip


def layer_rows(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[dict]:
    """Per 2-D encoder linear weight, in the model's order: differing mask entries, rows with a
    differing entry, and the largest weight difference. For a greedy layer-wise method (AKR,
    SparseGPT) the first layer with a differing row is where the two runs parted: the layers
    before it agree, and every later layer sees other inputs."""
    out = []
    for name, wa in a.items():
        if wa.ndim != 2 or "encoder" not in name or not name.endswith("weight"):
            continue
        wb = b[name]
        diff = (wa != 0) != (wb != 0)
        out.append({"layer": name, "entries": int(diff.sum()), "rows": int(diff.any(1).sum()),
                    "of_rows": wa.shape[0],
                    "max_dw": float((wa.double() - wb.double()).abs().max())})  # fmt: skip
    return out


def layer_table(rows: list[dict]) -> str:
    """Markdown: the layers up to the first differing one, then every later layer."""
    first = next((i for i, r in enumerate(rows) if r["entries"]), None)
    lines = ["| layer | differing mask entries | rows with one | max abs weight difference |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['layer']} | {r['entries']:,} | {r['rows']} / {r['of_rows']} | "
                     f"{r['max_dw']:.3g} |")  # fmt: skip
    if first is None:
        lines.append("\nEvery mask is identical.")
    else:
        before = max((r["max_dw"] for r in rows[:first]), default=0.0)
        lines.append(f"\nFirst differing layer: {rows[first]['layer']} ({rows[first]['rows']} "
                     f"row(s)); the {first} layers before it have identical masks, their weights "
                     f"differ by at most {before:.3g}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--a", required=True, help="run id of the first record")
    ap.add_argument("--b", required=True, help="run id of the second record")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "results")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument(
        "--layers",
        action="store_true",
        help="add the per-layer mask differences and the first differing layer",
    )
    ap.add_argument(
        "--no-weights",
        action="store_true",
        help="compare records and attack logs only (no pruned cache needed): "
        "cost, clean and Aua, without the mask and weight rows",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    df = load_records(args.results_dir)
    df = df[(df["exp_name"] == args.exp) & (df["status"] == "ok")]
    recs = {}
    for side, run_id in (("a", args.a), ("b", args.b)):
        hit = df[df["run_id"] == run_id]
        if hit.empty:
            raise SystemExit(f"error: no ok record {run_id!r} in experiment {args.exp!r}")
        recs[side] = hit.iloc[:1]
    ra, rb = (recs[s].iloc[0].to_dict() for s in ("a", "b"))
    folder = args.results_dir / "runs" / args.exp
    full = {
        s: json.loads((folder / f"{r}.json").read_text()) for s, r in (("a", args.a), ("b", args.b))
    }
    w, layers = None, ""
    if not args.no_weights:
        wa = torch.load(find_cache(args.cache_dir, full["a"]) / "weights.pt", map_location="cpu")
        wb = torch.load(find_cache(args.cache_dir, full["b"]) / "weights.pt", map_location="cpu")
        w = weight_stats(wa, wb)
        layers = layer_table(layer_rows(wa, wb)) if args.layers else ""
    logs = read_attack_log(ra.get("_log")), read_attack_log(rb.get("_log"))
    clean = clean_pairs(*logs) if all(logs) else None
    aua = compare_pair(recs["a"], recs["b"])
    ta, tb = ra["prune_seconds"], rb["prune_seconds"]

    def pct(x: float) -> str:
        return f"{100 * x:.2f}%"

    lines = [
        f"| quantity | {args.a} | {args.b} | b vs a |",
        "|---|---:|---:|---|",
        f"| pruning wall s (own job) | {ta:.0f} | {tb:.0f} | ratio b/a {tb / ta:.2f} |",
    ]
    if w is not None:
        lines += [
            f"| identical mask entries | | | {pct(w['mask_agreement'])} of {w['entries']:,} "
            f"(worst layer {w['worst_layer']}: {pct(w['worst_layer_agreement'])}) |",
            f"| max abs weight difference | | | {w['max_abs_weight_diff']:.3g} |",
        ]
    if clean:
        lines.append(
            f"| clean accuracy ({clean['n']} examples) | {pct(clean['clean_a'])} | "
            f"{pct(clean['clean_b'])} | {100 * (clean['clean_b'] - clean['clean_a']):+.2f} "
            f"points; {clean['only_a']} / {clean['only_b']} discordant, McNemar p = "
            f"{clean['p_value']:.3g} |"
        )
    if aua["n_pairs"]:
        # compare_pair gives row (a) minus reference (b); the table shows b minus a
        lines.append(
            f"| Aua ({ra['attack']}, {aua['n_pairs']} pairs) | {pct(ra['aua'])} | "
            f"{pct(rb['aua'])} | {-100 * aua['delta_aua']:+.2f} points "
            f"[{-100 * aua['delta_ci_high']:+.2f}, {-100 * aua['delta_ci_low']:+.2f}], "
            f"McNemar p = {aua['p_value']:.3g} |"
        )
    text = "\n".join(lines) + "\n"
    if w is not None and layers:
        text += "\n" + layers
    log.info("%s", text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
