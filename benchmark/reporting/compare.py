"""Paired comparisons of the rows of one experiment against a reference row.

``python -m benchmark.aggregate --compare EXP --reference PRUNER[@SPARSITY]`` writes
``<results-dir>/tables/compare_<EXP>.{csv,md}``: one row per (pruner, sparsity, attack)
configuration of EXP against the reference configuration of the same attack (same sparsity,
or the reference's only sparsity, e.g. ``none`` at 0.0), on the seeds both have. Runs on the
same seeded sample pair up per example by ``example_index`` from their attack logs:

- ``delta_aua``: row minus reference, mean over examples of the per-example survival
  difference averaged over the shared seeds;
- ``delta_ci_low/high``: paired cluster bootstrap over examples (10,000 resamples, seeded);
- ``p_value``: exact McNemar on the discordant pairs when one seed is shared, else the paired
  sign-flip test on the per-example differences; 1 when no pair is discordant;
- ``p_adjusted``: Holm over the table's rows.

A row without an attack log (records written before logs existed) says so and has no test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.stats import (
    holm_adjust,
    mcnemar_exact,
    paired_cluster_bootstrap,
    paired_example_diffs,
    sign_flip_test,
)

log = logging.getLogger(__name__)

COLUMNS = ["pruner", "sparsity", "attack", "n_pairs", "delta_aua", "delta_ci_low",
           "delta_ci_high", "p_value", "test", "p_adjusted"]  # fmt: skip
EXTRA = ["seeds", "differs", "note"]


def parse_reference(text: str) -> tuple[str, float | None]:
    """``PRUNER`` or ``PRUNER@SPARSITY`` -> (pruner, sparsity or None)."""
    pruner, _, sparsity = text.partition("@")
    if not pruner:
        raise ValueError(f"--reference needs a pruner name, got {text!r}")
    return pruner, (float(sparsity) if sparsity else None)


def survival(rows: list[dict[str, Any]], seed: Any) -> dict[tuple, float]:
    """``{(example_index, seed): 1.0 if the example survived (result failed) else 0.0}``."""
    from benchmark.reporting.aggregate import log_values

    return {(ex, seed): v for ex, v in log_values(rows, "aua")}


def _logs_by_seed(recs: pd.DataFrame) -> dict[Any, list[dict[str, Any]] | None]:
    from benchmark.reporting.aggregate import read_attack_log

    out = {}
    for rec in recs.sort_values("seed").to_dict("records"):
        out.setdefault(rec["seed"], read_attack_log(rec.get("_log")))
    return out


def compare_pair(
    row: pd.DataFrame, ref: pd.DataFrame, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Paired statistics of one configuration's records against the reference's."""
    a_logs, b_logs = _logs_by_seed(row), _logs_by_seed(ref)
    shared = sorted(set(a_logs) & set(b_logs))
    out: dict[str, Any] = {"n_pairs": 0, "delta_aua": np.nan, "delta_ci_low": np.nan,
                           "delta_ci_high": np.nan, "p_value": np.nan, "test": "",
                           "seeds": len(shared), "note": ""}  # fmt: skip
    if not shared:
        out["note"] = "no shared seed"
        return out
    missing = [s for s in shared if a_logs[s] is None or b_logs[s] is None]
    if missing:
        out["note"] = f"attack log missing (seed {', '.join(map(str, missing))})"
        return out
    a: dict[tuple, float] = {}
    b: dict[tuple, float] = {}
    for s in shared:
        a.update(survival(a_logs[s], s))
        b.update(survival(b_logs[s], s))
    delta, low, high, n_pairs = paired_cluster_bootstrap(a, b, n_boot=n_boot, seed=seed)
    if n_pairs == 0:
        out["note"] = "no shared example (different samples?)"
        return out
    out.update(n_pairs=n_pairs, delta_aua=delta, delta_ci_low=low, delta_ci_high=high)
    if len(shared) == 1:
        keys = set(a) & set(b)
        n_b = sum(1 for k in keys if a[k] > b[k])  # only the row survived
        n_c = sum(1 for k in keys if a[k] < b[k])  # only the reference survived
        out.update(p_value=mcnemar_exact(n_b, n_c), test="mcnemar")
    else:
        diffs = list(paired_example_diffs(a, b).values())
        out.update(p_value=sign_flip_test(diffs, seed=seed), test="sign-flip")
    return out


PROTOCOL_KEYS = ("attack", "model", "dataset", "dense", "data_source", "eval_batch_size",
                 "max_eval_examples")  # fmt: skip


def _same_protocol(row_identity: str, ref_identity: str) -> bool:
    """Whether a reference configuration attacked the same sample in the same way (attack
    config incl. sample size, model, data, dense recipe) as the row's configuration."""
    import json

    a, b = json.loads(row_identity), json.loads(ref_identity)
    return all(a.get(k) == b.get(k) for k in PROTOCOL_KEYS)


def _is_default_pruner(identity: str) -> bool:
    """Whether a configuration's pruner section equals its option's defaults
    (``conf/pruner/<name>.yaml``: every key the option sets, interpolations aside)."""
    import json

    from benchmark.records.staleness import _option

    ident = json.loads(identity)
    name = (ident.get("_record") or {}).get("pruner")
    stored = ident.get("pruner")
    option = _option("pruner", str(name)) if name else None
    if not isinstance(stored, dict) or option is None:
        return False
    return all(
        stored.get(k) == v
        for k, v in option.items()
        if k != "defaults" and not (isinstance(v, str) and v.startswith("${"))
    )


def _pick_reference(ref: pd.DataFrame) -> pd.DataFrame:
    """Among several reference configurations on one protocol, the one with the pruner
    option's default settings (e.g. AKR unstructured in float64, not its 2:4 or float32 rows);
    unchanged when there is not exactly one such configuration."""
    idents = ref["_identity"].unique()
    if len(idents) < 2:
        return ref
    default = [i for i in idents if _is_default_pruner(i)]
    return ref[ref["_identity"] == default[0]] if len(default) == 1 else ref


def compare_table(
    df: pd.DataFrame,
    exp: str,
    reference: str,
    n_boot: int = 10_000,
    seed: int = 0,
    reference_exp: str | None = None,
) -> pd.DataFrame:
    """One row per (pruner, sparsity, attack) configuration of ``exp`` against ``reference``.

    ``df`` comes from ``aggregate.load_records``; duplicates count once. The reference is
    looked up among the records of ``reference_exp`` (default: ``exp`` itself), so that a
    preset of new methods can be paired with the seeds' rows of another experiment; pairs are
    only formed on the same protocol (attack and sample, model, data, dense recipe). Where the
    reference has several configurations on that protocol, its option's default one is used.
    """
    from benchmark.reporting.aggregate import _differs, dedupe

    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[:0]
    ok = ok[ok["exp_name"].isin({exp, reference_exp or exp})]
    if ok.empty or not (ok["exp_name"] == exp).any():
        return pd.DataFrame(columns=COLUMNS + EXTRA)
    ok = dedupe(ok)
    ref_pruner, ref_sparsity = parse_reference(reference)
    is_ref = (ok["pruner"] == ref_pruner) & (ok["exp_name"] == (reference_exp or exp))
    if ref_sparsity is not None:
        is_ref &= (ok["sparsity_target"].astype(float) - ref_sparsity).abs() < 1e-9
    refs = ok[is_ref]
    if refs.empty:
        where = reference_exp or exp
        raise ValueError(f"no records of reference {reference!r} in experiment {where!r}")
    rows = []
    others = ok[~is_ref & (ok["exp_name"] == exp)]
    keys = ["pruner", "sparsity_target", "attack"]
    for (pruner, sparsity, attack), group in others.groupby(keys, sort=True):
        idents = sorted(group["_identity"].unique())
        differs = _differs(idents) if len(idents) > 1 else {idents[0]: ""}
        cand = refs[refs["attack"] == attack]
        same = cand[(cand["sparsity_target"].astype(float) - float(sparsity)).abs() < 1e-9]
        if len(same):
            cand = same
        elif cand["sparsity_target"].nunique() != 1:
            cand = cand.iloc[0:0]
        for ident in idents:
            base = {"pruner": pruner, "sparsity": float(sparsity), "attack": attack,
                    "differs": differs[ident]}  # fmt: skip
            # only a reference that attacked the same sample in the same way pairs up
            same_way = np.array([_same_protocol(ident, r) for r in cand["_identity"]], dtype=bool)
            ref = _pick_reference(cand[same_way])
            if ref.empty or ref["_identity"].nunique() != 1:
                if not ref.empty:
                    why = "several reference configurations"
                elif cand.empty:
                    why = "no reference row"
                else:  # e.g. an older reference attacked on 100 sentences, this row on 872
                    why = "no reference row on the same protocol"
                rows.append({**base, "n_pairs": 0, "seeds": 0, "note": why})
                continue
            stats = compare_pair(group[group["_identity"] == ident], ref, n_boot, seed)
            rows.append({**base, **stats})
    table = pd.DataFrame(rows)
    text = ("test", "note", "differs")  # empty, never NaN, where a row has no test or note
    for col in COLUMNS + EXTRA:
        if col in text:
            table[col] = table[col].fillna("") if col in table else ""
        elif col not in table:
            table[col] = np.nan
    table["p_adjusted"] = holm_adjust(table["p_value"].astype(float).tolist())
    return table[COLUMNS + EXTRA]


def _pp(x: float) -> str:
    return "-" if pd.isna(x) else f"{100 * x:+.1f}"


def delta_cells(table: pd.DataFrame) -> list[str]:
    """``Δ Aua [95% CI]`` in signed points per row of a table with ``delta_aua``,
    ``delta_ci_low`` and ``delta_ci_high`` (fractions); ``-`` where there is no pair."""
    return [
        "-" if pd.isna(d) else f"{_pp(d)} [{_pp(lo)}, {_pp(hi)}]"
        for d, lo, hi in zip(table["delta_aua"], table["delta_ci_low"],
                             table["delta_ci_high"], strict=True)
    ]  # fmt: skip


def p_cells(values: pd.Series, digits: int = 4) -> list[str]:
    """p-values with ``digits`` significant digits, ``-`` where there is no test."""
    return ["-" if pd.isna(p) else f"{p:.{digits}g}" for p in values]


def render_markdown(table: pd.DataFrame, exp: str, reference: str, n_boot: int = 10_000) -> str:
    """The comparison as Markdown, with a caption saying what every number is."""
    seeds = sorted({int(s) for s in table["seeds"].dropna()}) if len(table) else []
    caption = (
        f"# Paired comparison: `{exp}` against `{reference}`\n\n"
        f"Rows: every (pruner, sparsity, attack) configuration of `{exp}`, paired with the "
        "reference at the same attack and sparsity (or the reference's only sparsity), on the "
        "seeds both have and the examples both attacked (`example_index`). `Δ Aua` = row minus "
        "reference in percentage points: mean over examples of the per-example survival "
        "difference, averaged over shared seeds; `[95% CI]` = paired cluster bootstrap over "
        f"examples ({n_boot:,} resamples, seed 0). `p` = exact McNemar (one shared seed) or "
        "paired sign-flip test (several; exact up to 20 nonzero differences, else 10,000 "
        "seeded flips); 1 when no pair is discordant. `p (Holm)` = Holm-adjusted over the "
        f"{int(table['p_value'].notna().sum()) if len(table) else 0} rows with a test in this "
        f"table. `n pairs` = distinct examples both rows attacked (each one pair, its difference "
        f"averaged over the shared seeds); `seeds` = shared seeds (values in this table: "
        f"{', '.join(map(str, seeds)) or '-'}).\n"
    )
    if table.empty:
        return caption + "\n_no rows_\n"
    show = pd.DataFrame({
        "pruner": table["pruner"], "sparsity": table["sparsity"], "attack": table["attack"],
        "seeds": table["seeds"].fillna(0).astype(int),
        "n pairs": table["n_pairs"].fillna(0).astype(int),
        "Δ Aua [95% CI]": delta_cells(table),
        "p": p_cells(table["p_value"]),
        "test": table["test"],
        "p (Holm)": p_cells(table["p_adjusted"]),
        "note": table["note"],
    })  # fmt: skip
    if (table["differs"] != "").any():
        show.insert(3, "differs", table["differs"])
    return caption + "\n" + show.to_markdown(index=False, disable_numparse=True) + "\n"


def write_compare(
    df: pd.DataFrame,
    exp: str,
    reference: str,
    results_dir: Path,
    n_boot: int = 10_000,
    reference_exp: str | None = None,
) -> Path:
    """Write ``<results_dir>/tables/compare_<exp>.{csv,md}`` (reference ``none``, the dense
    model) or ``compare_<exp>_vs_<reference>[_in_<reference_exp>].{csv,md}``; return the
    Markdown path."""
    table = compare_table(df, exp, reference, n_boot=n_boot, reference_exp=reference_exp)
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    stem = (
        f"compare_{exp}"
        if reference == "none"
        else (f"compare_{exp}_vs_{reference.replace('@', '_at_')}")
    )
    if reference_exp and reference_exp != exp:
        stem += f"_in_{reference_exp}"
    table.to_csv(out / f"{stem}.csv", index=False)  # fractions, unrounded
    md = out / f"{stem}.md"
    label = (
        reference
        if not reference_exp or reference_exp == exp
        else (f"{reference}` of `{reference_exp}")
    )
    md.write_text(render_markdown(table, exp, label, n_boot), encoding="utf-8")
    log.info("compare %s vs %s: %d rows -> %s/%s.{md,csv}", exp, reference,
             len(table), out, stem)  # fmt: skip
    return md
