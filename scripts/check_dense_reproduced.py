"""Check that a dense model fine-tuned again reproduces the one behind a committed record.

    python scripts/check_dense_reproduced.py --record results/runs/EXP/RUN_ID.json \
        [--cache-dir .cache] [--batch-size 64]

The dense cache (``<cache-dir>/dense/<key>/``) lives on the machine that fine-tuned it; a new
machine fine-tunes again under the same key, and CPU floating point need not be bitwise equal
across machines. Before new prunings of that dense model are paired with a record made from the
old one, this script replays the record's attack log originals (``original``, one per example)
on the cached model and compares, example by example, the prediction (``orig_pred``) and the
probability of the true label (``orig_true_prob``); it also prints both fine-tunes' final loss
and split accuracy (the record's ``dense_info`` against the cache's ``info.json``). Forward
passes only: seconds on one CPU thread.

Exit status 0 when every prediction matches, 1 otherwise.
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

from benchmark.reporting.records import attack_log_path, read_attack_log  # noqa: E402
from benchmark.training.loop import encode  # noqa: E402

log = logging.getLogger("check_dense_reproduced")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", required=True, type=Path, help="an ok record with an attack log")
    ap.add_argument("--cache-dir", default=Path(".cache"), type=Path)
    ap.add_argument("--batch-size", default=64, type=int)
    ap.add_argument(
        "--dense-key",
        default=None,
        help="cache entry to check (default: the record's dense_info.key; a record "
        "whose dense model was reused under another key names the old one)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    record = json.loads(args.record.read_text())
    key = args.dense_key or (record.get("dense_info") or {}).get("key")
    if not key:
        ap.error(f"{args.record} has no dense_info.key")
    model_dir = args.cache_dir / "dense" / key
    if not (model_dir / "info.json").exists():
        ap.error(f"no dense cache entry {model_dir} (fine-tune it first: any job of that seed)")
    log_path = attack_log_path(args.record)
    rows = read_attack_log(log_path)
    if not rows:
        ap.error(f"no attack log {log_path}")
    max_length = int(((record.get("cfg") or {}).get("dataset") or {}).get("max_length") or 512)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    same, max_diff = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(rows), args.batch_size):
            batch = rows[i : i + args.batch_size]
            enc = encode(tok, [r["original"] for r in batch], max_length, torch.device("cpu"))
            probs = model(**enc).logits.softmax(-1)
            for r, p in zip(batch, probs, strict=True):
                same += int(p.argmax()) == r["orig_pred"]
                max_diff = max(max_diff, abs(float(p[r["label"]]) - r["orig_true_prob"]))

    old = record["dense_info"]
    new = json.loads((model_dir / "info.json").read_text())
    log.info("dense key %s", key)
    old_loss, new_loss = old["train"]["final_loss"], new["train"]["final_loss"]
    log.info("final loss: record %r, cache %r", old_loss, new_loss)
    log.info("split accuracy: record %r, cache %r", old["dense_acc"], new["dense_acc"])
    log.info(
        "predictions equal on %d of %d attacked originals; "
        "max |true-label probability difference| %.3g",
        same,
        len(rows),
        max_diff,
    )
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
