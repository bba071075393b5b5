"""What a table's caption must say about the records behind it (docs/statistics.md).

- **Threat model**: every attack column names the threat-model hash of its records
  (``threat_model.hash``; :func:`threat_hash`), and the caption gives each hash's one-line
  description (:func:`threat_model_lines`, from ``benchmark.attacks.recipes
  .threat_model_caption``) once. Records of two hashes never share a column: summary columns
  are split by hash, a paper-table cell of another hash than its column's is left out
  (:data:`OTHER_THREAT_MODEL`). Records of one recipe whose only difference is the
  per-example time limit (``null`` on version-1 records, a finite limit on migrated ones) have
  different hashes and are kept apart in the same way.
- **Timing-dependent**: a record with ``n_limit > 0`` (an example stopped by the per-example
  time or query limit) has a number that depends on the machine's speed; every cell or row
  with such a record says :data:`TIMING` (:func:`timing_dependent`).
- **Attack logs left out**: ``load_records`` drops a log that is empty or disagrees with its
  record's counts (``_log_problem``); the caption names each (:func:`log_problem_lines`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

TIMING = "timing-dependent"
TIMING_NOTE = (
    f"`{TIMING}` = some record of the cell or row has `n_limit > 0`: an example was stopped by "
    "the per-example time or query limit, so the number depends on the machine's speed."
)
OTHER_THREAT_MODEL = "other threat model"
PREFIX = "threat_model."


def threat_hash(rec: dict[str, Any] | pd.Series) -> str | None:
    """The threat-model hash of one record (flattened or nested), or ``None`` (no attack)."""
    val = rec.get(PREFIX + "hash")
    if val is None or (isinstance(val, float) and pd.isna(val)):
        block = rec.get("threat_model")
        val = block.get("hash") if isinstance(block, dict) else None
    return None if val is None or (isinstance(val, float) and pd.isna(val)) else str(val)


def threat_hashes(recs: pd.DataFrame) -> list[str]:
    """The distinct threat-model hashes of ``recs`` (records without one left out), sorted."""
    if recs.empty:
        return []
    return sorted({h for h in record_hashes(recs) if h})


def record_hashes(recs: pd.DataFrame) -> list[str | None]:
    """:func:`threat_hash` of every record of ``recs``, in order. Only the columns it reads
    are turned into dicts: a frame of loaded records has hundreds of columns, and converting
    all of them once per table cell was most of a report's time."""
    cols = [c for c in (PREFIX + "hash", "threat_model") if c in recs]
    return [threat_hash(r) for r in recs[cols].to_dict("records")] if cols else [None] * len(recs)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v))


def threat_block(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The record's ``threat_model`` block, rebuilt from ``pd.json_normalize``'s columns."""
    if isinstance(rec.get("threat_model"), dict):
        return rec["threat_model"]
    if not threat_hash(rec):
        return None
    block: dict[str, Any] = {}
    for key, val in rec.items():
        if not key.startswith(PREFIX):
            continue
        parts = key[len(PREFIX) :].split(".")
        node = block
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if isinstance(node.get(parts[-1]), dict) and _missing(val):
            continue  # ``similarity`` None on one record, a dict on another: keep the dict
        if isinstance(val, float) and val.is_integer():  # a column with a missing value is float
            val = int(val)
        node[parts[-1]] = None if _missing(val) else val
    sim = block.get("similarity")
    if isinstance(sim, dict) and all(_missing(v) for v in sim.values()):
        block["similarity"] = None
    return block


def threat_model_lines(recs: pd.DataFrame) -> list[str]:
    """One caption line per (attack, threat-model hash) of ``recs``: ``attack [hash]: ...``."""
    from benchmark.attacks.recipes import threat_model_caption

    if recs.empty or "attack" not in recs:
        return []
    seen: dict[tuple[str, str], str] = {}
    for rec in recs.to_dict("records"):
        h = threat_hash(rec)
        if not h or (str(rec.get("attack")), h) in seen:
            continue
        try:
            text = threat_model_caption(threat_block(rec))
        except (KeyError, TypeError):  # a block without the fields the caption names
            text = f"threat model {h}"
        seen[(str(rec.get("attack")), h)] = text
    return [f"`{a}` [{h}]: {t}" for (a, h), t in sorted(seen.items())]


def timing_dependent(recs: pd.DataFrame) -> bool:
    """Whether any record of ``recs`` hit a per-example limit (``n_limit > 0``)."""
    if recs.empty or "n_limit" not in recs:
        return False
    return bool((pd.to_numeric(recs["n_limit"], errors="coerce").fillna(0) > 0).any())


def log_problem_lines(recs: pd.DataFrame) -> list[str]:
    """``<run_id> (<exp>): <problem>`` for every record whose attack log was left out."""
    if recs.empty or "_log_problem" not in recs:
        return []
    bad = recs[recs["_log_problem"].notna()]
    return sorted({f"{r.get('run_id')} ({r.get('exp_name')}, {r.get('pruner')} at "
                   f"{r.get('sparsity_target')}, {r.get('attack')}): {r['_log_problem']}"
                   for r in bad.to_dict("records")})  # fmt: skip


def caption_notes(recs: pd.DataFrame, threat: bool = True) -> str:
    """The caption paragraphs about ``recs``: threat models, timing, logs left out."""
    parts = []
    if threat:
        lines = threat_model_lines(recs)
        if lines:
            parts.append("Threat models (the hash in brackets names each attack column's):\n\n"
                         + "\n".join(f"- {t}" for t in lines))  # fmt: skip
    if timing_dependent(recs):
        parts.append(TIMING_NOTE)
    problems = log_problem_lines(recs)
    if problems:
        parts.append("Attack logs left out of every paired test and interval (the record's "
                     "counts are used where a number needs no log):\n\n"
                     + "\n".join(f"- warning: {t}" for t in problems))  # fmt: skip
    return "\n\n".join(parts)
