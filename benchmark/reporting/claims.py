"""Pre-written claims judged mechanically from the records.

``python -m benchmark.aggregate --claims NAME`` reads ``conf/claims/NAME.yaml`` (the claims an
experiment tests, written down before it ran) and writes
``<results-dir>/tables/claims_NAME.{md,csv}``: one row per cell (claim, sparsity, attack) with
the paired comparison of the claim's row against its reference on the claim's protocol
(:func:`benchmark.reporting.compare.compare_pair`: same sentences, bootstrap interval, exact
McNemar or sign-flip p), the Holm-adjusted p over the cells of the claims named in ``family``,
and what the cell says; then one verdict per claim:

- ``replicates``: every cell the rule needs ran and holds;
- ``does not replicate``: a cell the rule needs ran, is not degenerate, and does not hold;
- ``pending``: the cells that ran hold, others have not run;
- ``undecidable``: a needed cell ran but its row or reference is degenerate (a near-constant
  classifier, whose Aua is no evidence either way).

Only records of the claim's protocol count: the experiment, the attack sample size
(``num_examples``), the pruner option's default settings (variants such as 2:4 or float32 are
other configurations) and, as in every comparison, the same attack, model, data and dense
recipe on both sides.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.spec_files import read_spec
from benchmark.reporting.stats import holm_adjust

log = logging.getLogger(__name__)

CLAIMS_DIR = Path(__file__).resolve().parents[2] / "conf" / "claims"
KINDS = ("above", "below", "retains", "gap_grows")
COLUMNS = ["claim", "kind", "row", "reference", "sparsity", "attack", "seeds", "n_pairs",
           "delta_aua", "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "cell"]  # fmt: skip


def load_spec(name: str | Path) -> dict[str, Any]:
    """The claims spec ``conf/claims/<name>.yaml`` (or a path), checked."""
    spec, _ = read_spec(name, CLAIMS_DIR, "claims")
    for c in spec["claims"]:
        if c["kind"] not in KINDS:
            raise ValueError(f"claim {c['id']}: kind {c['kind']!r} is not one of {KINDS}")
        if c["kind"] == "gap_grows" and len(c["sparsities"]) != 2:
            raise ValueError(f"claim {c['id']}: gap_grows needs exactly two sparsities")
    return spec


def protocol_records(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The ok records of the spec's experiment, attack sample size and default pruner configs."""
    from benchmark.reporting.aggregate import dedupe
    from benchmark.reporting.compare import _is_default_pruner

    if df.empty:
        return df
    ok = df[(df["status"] == "ok") & (df["exp_name"] == spec["experiment"])]
    if ok.empty:
        return ok
    keep = []
    for ident in ok["_identity"]:
        attack = json.loads(ident).get("attack") or {}
        keep.append(attack.get("num_examples") == spec["num_examples"]
                    and _is_default_pruner(ident))  # fmt: skip
    return dedupe(ok[keep])


def _degenerate(recs: pd.DataFrame) -> bool:
    from benchmark.reporting.aggregate import is_degenerate, record_interval

    return any(
        is_degenerate(recs.iloc[[i]], record_interval(rec, "clean_acc"))
        for i, rec in enumerate(recs.to_dict("records"))
    )


def _cell(recs: pd.DataFrame, claim: dict, sparsity: float, attack: str,
          n_boot: int) -> dict[str, Any]:  # fmt: skip
    """The paired comparison of one cell, or why there is none."""
    from benchmark.reporting.compare import compare_pair

    def pick(pruner: str, dense_ok: bool) -> pd.DataFrame:
        """Records at the cell's sparsity; the reference may be the dense model (0.0)."""
        sub = recs[(recs["pruner"] == pruner) & (recs["attack"] == attack)]
        sparsity_of = sub["sparsity_target"].astype(float)
        same = sub[(sparsity_of - sparsity).abs() < 1e-9]
        if same.empty and dense_ok and len(sub) and (sparsity_of == 0.0).all():
            return sub
        return same

    row, ref = pick(claim["row"], False), pick(claim["reference"], True)
    out = {"claim": claim["id"], "kind": claim["kind"], "row": claim["row"],
           "reference": claim["reference"], "sparsity": sparsity, "attack": attack,
           "seeds": 0, "n_pairs": 0, "delta_aua": np.nan, "delta_ci_low": np.nan,
           "delta_ci_high": np.nan, "p_value": np.nan, "cell": ""}  # fmt: skip
    if row.empty or ref.empty:
        out["cell"] = "not run"
        return out
    if row["_identity"].nunique() > 1 or ref["_identity"].nunique() > 1:
        out["cell"] = "several configurations"
        return out
    stats = compare_pair(row, ref, n_boot=n_boot)
    out.update({k: stats[k] for k in ("seeds", "n_pairs", "delta_aua", "delta_ci_low",
                                      "delta_ci_high", "p_value")})  # fmt: skip
    if not stats["n_pairs"]:
        out["cell"] = stats["note"] or "no pairs"
    elif _degenerate(row) or _degenerate(ref):
        out["cell"] = "degenerate"
    return out


def judge(df: pd.DataFrame, spec: dict[str, Any], n_boot: int = 10_000):
    """(cells table, verdicts table) of the spec's claims on the records ``df``."""
    recs = protocol_records(df, spec)
    cells = [
        _cell(recs, claim, float(s), attack, n_boot)
        for claim in spec["claims"]
        for s in claim["sparsities"]
        for attack in spec["attacks"]
    ]
    table = pd.DataFrame(cells, columns=[c for c in COLUMNS if c != "p_holm"])
    family = table["claim"].isin(spec.get("family", [])) & (table["cell"] == "")
    family &= table["p_value"].notna()
    table["p_holm"] = np.nan
    if family.any():
        table.loc[family, "p_holm"] = holm_adjust(table.loc[family, "p_value"].tolist())
    alpha = float(spec.get("alpha", 0.05))
    verdicts = []
    for claim in spec["claims"]:
        rows = table[table["claim"] == claim["id"]]
        if claim["kind"] == "gap_grows":
            status, detail = _gap_verdict(rows, claim, spec["attacks"])
            run = rows.index[rows["cell"] == ""]
            table.loc[run, "cell"] = "see verdict"
        else:
            for i in rows.index:
                if table.at[i, "cell"] == "":
                    table.at[i, "cell"] = _cell_result(table.loc[i], claim["kind"], alpha)
            rows = table[table["claim"] == claim["id"]]
            needed = rows
            if claim.get("decisive"):
                dec = [float(s) for s in claim["decisive"]]
                needed = rows[rows["sparsity"].astype(float).isin(dec)]
            status = _verdict(needed["cell"].tolist())
            detail = "; ".join(
                f"{100 * r.sparsity:g}% {r.attack}: {r.cell}" for r in needed.itertuples()
            )
        verdicts.append({"claim": claim["id"], "text": claim["text"], "verdict": status,
                         "cells": detail})  # fmt: skip
    return table[COLUMNS], pd.DataFrame(verdicts)


def _cell_result(r: pd.Series, kind: str, alpha: float) -> str:
    d, hi = r["delta_aua"], r["delta_ci_high"]
    if kind == "retains":
        return "holds" if hi >= 0 else "fails: below"
    p = r["p_holm"] if not pd.isna(r["p_holm"]) else r["p_value"]
    sign = 1 if kind == "above" else -1
    if sign * d > 0 and p < alpha:
        return "holds"
    if sign * d < 0 and p < alpha:
        return "fails: opposite, significant"
    return "fails: no significant difference"


def _verdict(cells: list[str]) -> str:
    if any(c.startswith("fails") for c in cells):
        return "does not replicate"
    if any(c in ("degenerate", "several configurations") for c in cells):
        return "undecidable"
    if cells and all(c == "holds" for c in cells):
        return "replicates"
    return "pending"


def _gap_verdict(rows: pd.DataFrame, claim: dict, attacks: list[str]) -> tuple[str, str]:
    lo_s, hi_s = (float(s) for s in claim["sparsities"])
    cells, parts = [], []
    for attack in attacks:
        a = rows[(rows["attack"] == attack) & (rows["sparsity"] == lo_s)].iloc[0]
        b = rows[(rows["attack"] == attack) & (rows["sparsity"] == hi_s)].iloc[0]
        if a["cell"] or b["cell"]:
            cell = a["cell"] or b["cell"]
        elif b["delta_aua"] > a["delta_aua"] and b["delta_ci_low"] > a["delta_ci_high"]:
            cell = "holds"
        elif b["delta_aua"] > a["delta_aua"]:
            cell = "fails: larger gap, intervals overlap"
        else:
            cell = "fails: gap does not grow"
        cells.append(cell)
        parts.append(f"{attack}: {cell}")
    return _verdict(cells), "; ".join(parts)


def render(table: pd.DataFrame, verdicts: pd.DataFrame, spec: dict[str, Any], name: str) -> str:
    """The cells and verdicts as Markdown, with a caption saying what every number is."""
    from benchmark.reporting.compare import delta_cells, p_cells

    n_family = int(table["p_holm"].notna().sum())
    head = (
        f"# Claims `{name}`: judged from the records\n\n"
        f"Experiment `{spec['experiment']}`, attacks {', '.join(spec['attacks'])} on "
        f"{'the whole split' if not spec['num_examples'] else spec['num_examples']} "
        "(pruner options at their defaults). `Δ Aua` = row minus reference in points, "
        "paired over the same sentences, `[95% CI]` paired cluster bootstrap; `p` exact "
        f"McNemar (one seed) or sign-flip (several); `p (Holm)` over the {n_family} cells of "
        f"{', '.join(spec.get('family', []))} with a test; alpha {spec.get('alpha', 0.05)}. "
        "Rules: conf/claims/" + name + ".yaml. Written by `python -m benchmark.aggregate "
        f"--claims {name}`.\n"
    )
    show = pd.DataFrame({
        "claim": table["claim"], "row": table["row"], "reference": table["reference"],
        "sparsity": table["sparsity"], "attack": table["attack"],
        "seeds": table["seeds"].fillna(0).astype(int),
        "n pairs": table["n_pairs"].fillna(0).astype(int),
        "Δ Aua [95% CI]": delta_cells(table),
        "p": p_cells(table["p_value"], 3),
        "p (Holm)": p_cells(table["p_holm"], 3),
        "cell": table["cell"],
    })  # fmt: skip
    ver = verdicts.rename(columns={"cells": "cells the rule needs"})
    return (
        head
        + "\n## Verdicts\n\n"
        + ver.to_markdown(index=False)
        + "\n\n## Cells\n\n"
        + show.to_markdown(index=False, disable_numparse=True)
        + "\n"
    )


def write_claims(df: pd.DataFrame, name: str, results_dir: Path, n_boot: int = 10_000) -> Path:
    """Write ``<results_dir>/tables/claims_<name>.{md,csv}``; return the Markdown path."""
    spec = load_spec(name)
    stem = Path(name).stem
    table, verdicts = judge(df, spec, n_boot=n_boot)
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"claims_{stem}.csv", index=False)
    md = out / f"claims_{stem}.md"
    md.write_text(render(table, verdicts, spec, stem), encoding="utf-8")
    for v in verdicts.itertuples():
        log.info("%s: %s (%s)", v.claim, v.verdict, v.cells)
    return md
