"""The example browser's rows: one attack-log line as the site shows it.

The log keeps the original and the perturbed text whole (``original``, ``perturbed``); the words
an attack changed are found here by aligning the two texts word by word (whitespace-separated
words, :class:`difflib.SequenceMatcher`): a word of the original that was replaced or deleted
and a word of the perturbed text that replaced or was inserted are marked. A character-level
attack (DeepWordBug) changes a word in place, so its word is marked whole.
"""

from __future__ import annotations

import difflib
from typing import Any

RESULTS = ("successful", "failed", "skipped", "limit")


def marked_words(original: str | None, perturbed: str | None) -> tuple[list, list]:
    """``([(word, changed), ...] of the original, [...] of the perturbed text)``.

    A missing perturbed text (a skipped or stopped example) gives the original unmarked and an
    empty list."""
    before = (original or "").split()
    if perturbed is None:
        return [(w, False) for w in before], []
    after = perturbed.split()
    left = [(w, False) for w in before]
    right = [(w, False) for w in after]
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        for i in range(i1, i2):
            left[i] = (before[i], True)
        for j in range(j1, j2):
            right[j] = (after[j], True)
    return left, right


def _prob(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def example_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log's lines as the template shows them: result, label, predictions and the
    probability of the true label before and after, queries, and the marked texts."""
    out = []
    for i, r in enumerate(rows):
        result = str(r.get("result") or "")
        perturbed = r.get("perturbed") if result != "skipped" else None
        left, right = marked_words(r.get("original"), perturbed)
        out.append({
            "index": r.get("example_index", i), "result": result, "label": r.get("label"),
            "orig_pred": r.get("orig_pred"), "pert_pred": r.get("pert_pred"),
            "orig_prob": _prob(r.get("orig_true_prob")),
            "pert_prob": _prob(r.get("pert_true_prob")),
            "queries": "-" if r.get("queries") is None else int(r["queries"]),
            "n_changed": sum(changed for _, changed in right),
            "original": left, "perturbed": right,
            "limit": r.get("limit"),
        })  # fmt: skip
    return out


def result_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many lines of each result a log has (the filter's labels), in ``RESULTS`` order."""
    counts = dict.fromkeys(RESULTS, 0)
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    return {k: v for k, v in counts.items() if v}
