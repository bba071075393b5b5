"""Transfer: replay another model's successful adversarial texts on this model.

``attack=transfer attack.options.source=<log>`` takes the per-example log of an attack on a
source model (typically the dense model: ``<run_id>.attack.jsonl.gz``), keeps the examples the
attack broke there (``result == successful``) and classifies their adversarial texts with this
model, forward passes only. An example "survives" when this model still predicts the true
label. This separates robustness from a search that failed: a pruned model whose own attack
fails often but that is fooled by the dense model's adversarial texts is not robust, its
attack's search only found nothing.

The rows go to this job's own log in the usual format (``result``: ``failed`` = the transferred
text did not fool this model, ``successful`` = it did; ``queries`` = 1), so Aua, intervals and
paired comparisons work as for any attack; ``aua`` is the share of transferred texts survived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.errors import UserError
from benchmark.records.logs import content_sha256, read_rows, resolve, run_id_of_log


def source_log(source: str | None) -> Path:
    """The source log a transfer job names (``attack.options.source``): a path to a log in
    either form; ``X.attack.jsonl`` resolves to ``X.attack.jsonl.gz`` once it is compressed."""
    if not source:
        raise UserError("attack=transfer needs attack.options.source=<path of an attack log>")
    path = resolve(source)
    if not path.is_file():
        raise UserError(f"transfer source log {source} not found (attack.options.source)")
    return path


def source_identity(source: str | None) -> dict[str, Any]:
    """What a transfer job's identity holds of its source: the source record's run id (from
    the log's file name) and the SHA-256 of the log's text, not its path, so the same job in
    another clone has the same run id, and a rerun source log makes a new job."""
    path = source_log(source)
    return {"run_id": run_id_of_log(path), "log_sha256": content_sha256(path)}


def source_rows(source: str | None) -> list[dict[str, Any]]:
    """The successful rows of the source log (one line per example)."""
    path = source_log(source)
    rows = [
        row for row in read_rows(path)
        if row.get("result") in ("successful", "success") and row.get("perturbed")
    ]  # fmt: skip
    if not rows:
        raise UserError(f"transfer source log {path} has no successful adversarial example")
    return rows


@torch.inference_mode()
def replay(model, tokenizer, rows: list[dict[str, Any]], max_length: int, device,
           batch_size: int = 64) -> list[dict[str, Any]]:  # fmt: skip
    """This model's verdict on each transferred adversarial text, as log rows."""
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        enc = tokenizer([r["perturbed"] for r in chunk], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt").to(device)  # fmt: skip
        probs = torch.softmax(model(**enc).logits.float(), dim=-1).cpu()
        for r, p in zip(chunk, probs, strict=True):
            pred = int(p.argmax())
            label = int(r["label"])
            out.append({
                "example_index": r["example_index"], "position": len(out), "label": label,
                "result": "failed" if pred == label else "successful", "queries": 1,
                "orig_pred": None, "pert_pred": pred, "orig_true_prob": None,
                "pert_true_prob": float(p[label]), "original": r.get("original"),
                "perturbed": r["perturbed"], "n_words": r.get("n_words"),
                "perturbed_frac": r.get("perturbed_frac") if pred != label else None,
                "char_edit_distance": r.get("char_edit_distance"), "transferred": True,
            })  # fmt: skip
    return out
