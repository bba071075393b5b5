"""Paired comparisons of the rows of one experiment against a reference row.

``python -m benchmark.aggregate --compare EXP --reference PRUNER[@SPARSITY]`` writes
``<results-dir>/tables/compare_<EXP>.{csv,md}``: one row per (pruner, sparsity, attack)
configuration of EXP against the reference configuration of the same attack (same sparsity,
or the reference's only sparsity, e.g. ``none`` at 0.0), on the seeds both have. Runs on the
same seeded sample pair up per example by ``example_index`` from their attack logs.

Conditional on these fine-tunes (the unit is the sentence; the dense models at hand are fixed):

- ``delta_aua``: row minus reference, mean over examples of the per-example survival
  difference averaged over the shared seeds;
- ``delta_ci_low/high``: paired cluster bootstrap over examples (10,000 resamples, seeded);
- ``p_value``: exact McNemar on the discordant pairs when one seed is shared, else the exact
  paired sign-flip test on the per-example differences; 1 when no pair is discordant.

Over seeds (the unit is the seed, one dense fine-tune each; only with two or more shared
seeds): ``seed_deltas`` (the per-seed paired deltas), ``seed_ci_low/high`` (random-effects
t-interval, S - 1 degrees of freedom) and ``seed_p`` (one-sample t-test).

``p_adjusted`` / ``seed_p_adjusted``: Holm within the row's comparison family, declared in
``conf/compare/<stem>.yaml`` before the rows (``family`` names it; a declared cell that did not
run counts in the family as p = 1). A row in no declared family is not adjusted; a comparison
without a spec falls back to Holm over the table's rows, and the caption says it is post hoc.

A row without an attack log (records written before logs existed) says so and has no test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.cells import seed_delta_text, seed_points
from benchmark.reporting.provenance import (
    TIMING,
    caption_notes,
    threat_hash,
    threat_hashes,
    timing_dependent,
)
from benchmark.reporting.records import (
    dedupe,
    identity_differences,
    is_default_pruner,
    log_values,
    pruner_is,
    read_attack_log,
)
from benchmark.reporting.spec_files import read_spec
from benchmark.reporting.stats import (
    holm_adjust,
    mcnemar_exact,
    paired_cluster_bootstrap,
    paired_example_diffs,
    per_seed_deltas,
    seed_t_test,
    sign_flip_test,
)

log = logging.getLogger(__name__)

COMPARE_DIR = Path(__file__).resolve().parents[2] / "conf" / "compare"
COLUMNS = ["pruner", "sparsity", "attack", "n_pairs", "delta_aua", "delta_ci_low",
           "delta_ci_high", "p_value", "test", "p_adjusted"]  # fmt: skip
EXTRA = ["seeds", "seed_deltas", "seed_ci_low", "seed_ci_high", "seed_p", "seed_p_adjusted",
         "family", "differs", "note", "threat_model", "timing_dependent"]  # fmt: skip
POST_HOC = "post hoc: the rows of this table"  # the family when no spec declares one


def parse_reference(text: str) -> tuple[str, float | None]:
    """``PRUNER`` or ``PRUNER@SPARSITY`` -> (pruner, sparsity or None)."""
    pruner, _, sparsity = text.partition("@")
    if not pruner:
        raise ValueError(f"--reference needs a pruner name, got {text!r}")
    return pruner, (float(sparsity) if sparsity else None)


def survival(rows: list[dict[str, Any]], seed: Any) -> dict[tuple, float]:
    """``{(example_index, seed): 1.0 if the example survived (result failed) else 0.0}``."""
    return {(ex, seed): v for ex, v in log_values(rows, "aua")}


def _logs_by_seed(recs: pd.DataFrame) -> dict[Any, list[dict[str, Any]] | None]:
    out = {}
    cols = [c for c in ("seed", "_log") if c in recs]  # the two it reads: see record_hashes
    for rec in recs[cols].sort_values("seed").to_dict("records"):
        out.setdefault(rec["seed"], read_attack_log(rec.get("_log")))
    return out


def compare_pair(
    row: pd.DataFrame, ref: pd.DataFrame, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Paired statistics of one configuration's records against the reference's.

    Conditional on these fine-tunes: ``delta_aua``, ``delta_ci_low/high`` (bootstrap over
    sentences), ``p_value`` (McNemar or exact sign-flip, ``test``). Over seeds, with two or
    more shared: ``seed_deltas`` ({seed: paired delta}), ``seed_ci_low/high`` (t-interval) and
    ``seed_p`` (t-test); NaN with one seed.
    """
    a_logs, b_logs = _logs_by_seed(row), _logs_by_seed(ref)
    shared = sorted(set(a_logs) & set(b_logs))
    out: dict[str, Any] = {"n_pairs": 0, "delta_aua": np.nan, "delta_ci_low": np.nan,
                           "delta_ci_high": np.nan, "p_value": np.nan, "test": "",
                           "seeds": len(shared), "seed_deltas": {}, "seed_ci_low": np.nan,
                           "seed_ci_high": np.nan, "seed_p": np.nan, "note": ""}  # fmt: skip
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
        out.update(p_value=sign_flip_test(diffs), test="sign-flip")
    deltas = per_seed_deltas(a, b)
    out["seed_deltas"] = deltas
    if len(deltas) > 1:
        _, s_low, s_high, s_p = seed_t_test(list(deltas.values()))
        out.update(seed_ci_low=s_low, seed_ci_high=s_high, seed_p=s_p)
    return out


PROTOCOL_KEYS = ("attack", "model", "dataset", "dense", "data_source", "eval_batch_size",
                 "max_eval_examples")  # fmt: skip


def _same_protocol(row_identity: str, ref_identity: str) -> bool:
    """Whether a reference configuration attacked the same sample in the same way (attack
    config incl. sample size, model, data, dense recipe) as the row's configuration."""
    import json

    a, b = json.loads(row_identity), json.loads(ref_identity)
    return all(a.get(k) == b.get(k) for k in PROTOCOL_KEYS)


def _pick_reference(ref: pd.DataFrame) -> pd.DataFrame:
    """Among several reference configurations on one protocol, the one with the pruner
    option's default settings (e.g. AKR unstructured in float64, not its 2:4 or float32 rows);
    unchanged when there is not exactly one such configuration."""
    idents = ref["_identity"].unique()
    if len(idents) < 2:
        return ref
    default = [i for i in idents if is_default_pruner(i)]
    return ref[ref["_identity"] == default[0]] if len(default) == 1 else ref


def load_families(name: str | Path) -> dict[str, Any]:
    """The comparison families ``conf/compare/<name>.yaml`` (or a path), checked.

    A spec names the comparison (``experiment``, ``reference``, optional ``reference_exp``
    and ``num_examples``) and its ``families``, each a ``name``, a ``text``, whether it is
    ``exploratory``, and ``cells``: lists of ``pruners`` x ``sparsities`` x ``attacks``, with
    ``set`` (pruner options changed from the option's defaults; default: none changed).
    """
    spec, path = read_spec(name, COMPARE_DIR, "compare")
    names = [f["name"] for f in spec.get("families") or []]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"compare spec {path.name}: families need distinct names, got {names}")
    seen: dict[tuple, str] = {}
    for fam in spec["families"]:
        for key in declared_cells(fam):
            if key in seen:
                raise ValueError(f"compare spec {path.name}: cell {key} is in families "
                                 f"{seen[key]!r} and {fam['name']!r}")  # fmt: skip
            seen[key] = fam["name"]
    return spec


def declared_cells(family: dict[str, Any]) -> list[tuple]:
    """The cells a family declares: ``(pruner, set as sorted items, sparsity, attack)``."""
    out = []
    for block in family.get("cells") or []:
        changed = tuple(sorted((block.get("set") or {}).items()))
        for pruner in block["pruners"]:
            for s in block["sparsities"]:
                for attack in block["attacks"]:
                    out.append((str(pruner), changed, round(float(s), 6), str(attack)))
    return out


def _num_examples(identity: str) -> Any:
    import json

    return (json.loads(identity).get("attack") or {}).get("num_examples")


def apply_families(table: pd.DataFrame, identities: list[str | None],
                   spec: dict[str, Any] | None) -> pd.DataFrame:  # fmt: skip
    """Name each row's family and Holm-adjust ``p_value`` and ``seed_p`` within it.

    With a spec, a row belongs to the family that declares its (pruner with its settings,
    sparsity, attack) on the spec's ``num_examples``; the family's size m is the number of
    cells it declares (a declared cell without a test counts as p = 1), so rows added later
    in other families never move its adjusted p. A row in no family is not adjusted. Without
    a spec: Holm over the table's rows with a test (:data:`POST_HOC`).
    """
    table = table.copy()
    table["p_adjusted"] = np.nan
    table["seed_p_adjusted"] = np.nan
    if spec is None:
        table["family"] = POST_HOC
        table["p_adjusted"] = holm_adjust(table["p_value"].astype(float).tolist())
        table["seed_p_adjusted"] = holm_adjust(table["seed_p"].astype(float).tolist())
        return table
    want_n = spec.get("num_examples")
    cells = {key: fam["name"] for fam in spec["families"] for key in declared_cells(fam)}
    size = {fam["name"]: len(declared_cells(fam)) for fam in spec["families"]}
    families = []
    for r, ident in zip(table.to_dict("records"), identities, strict=True):
        name = ""
        if ident and (want_n is None or _num_examples(ident) == want_n):
            for (pruner, changed, s, attack), fam in cells.items():
                if (
                    r["pruner"] == pruner
                    and round(float(r["sparsity"]), 6) == s
                    and r["attack"] == attack
                    and pruner_is(ident, pruner, changed)
                ):
                    name = fam
                    break
        families.append(name)
    table["family"] = families
    for name, m in size.items():
        rows = table.index[table["family"] == name]
        if len(rows) > m:  # two configurations matched one declared cell: never undercount
            log.warning("compare family %s: %d rows for %d declared cells", name, len(rows), m)
        for col, adj in (("p_value", "p_adjusted"), ("seed_p", "seed_p_adjusted")):
            p = table.loc[rows, col].astype(float).tolist()
            table.loc[rows, adj] = holm_adjust(p, m=max(m, len(rows)))
    return table


def compare_table(
    df: pd.DataFrame,
    exp: str,
    reference: str,
    n_boot: int = 10_000,
    seed: int = 0,
    reference_exp: str | None = None,
    families: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per (pruner, sparsity, attack) configuration of ``exp`` against ``reference``.

    ``df`` comes from ``records.load_records``; duplicates count once. The reference is
    looked up among the records of ``reference_exp`` (default: ``exp`` itself), so that a
    preset of new methods can be paired with the seeds' rows of another experiment; pairs are
    only formed on the same protocol (attack and sample, model, data, dense recipe). Where the
    reference has several configurations on that protocol, its option's default one is used.
    ``families`` (:func:`load_families`) declares the Holm families (:func:`apply_families`).
    """
    if families is not None:
        declared = (families.get("experiment"), families.get("reference"),
                    families.get("reference_exp") or families.get("experiment"))  # fmt: skip
        if declared != (exp, reference, reference_exp or exp):
            raise ValueError(f"compare spec declares {declared}, not "
                             f"{(exp, reference, reference_exp or exp)}")  # fmt: skip

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
        differs = identity_differences(idents) if len(idents) > 1 else {idents[0]: ""}
        cand = refs[refs["attack"] == attack]
        same = cand[(cand["sparsity_target"].astype(float) - float(sparsity)).abs() < 1e-9]
        if len(same):
            cand = same
        elif cand["sparsity_target"].nunique() != 1:
            cand = cand.iloc[0:0]
        for ident in idents:
            mine = group[group["_identity"] == ident]
            base = {"pruner": pruner, "sparsity": float(sparsity), "attack": attack,
                    "differs": differs[ident], "_identity": ident,
                    "threat_model": ",".join(threat_hashes(mine)),
                    "timing_dependent": timing_dependent(mine)}  # fmt: skip
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
            stats = compare_pair(mine, ref, n_boot, seed)
            if timing_dependent(ref):
                base["timing_dependent"] = True
            if base["timing_dependent"]:
                stats["note"] = "; ".join(x for x in (stats.get("note"), TIMING) if x)
            rows.append({**base, **stats})
    table = pd.DataFrame(rows)
    identities = table.pop("_identity").tolist()
    table["seed_deltas"] = [
        seed_delta_text(d) for d in table.get("seed_deltas", [None] * len(table))
    ]
    text = ("test", "note", "differs", "seed_deltas", "threat_model")  # empty, never NaN
    if "timing_dependent" in table:
        table["timing_dependent"] = [bool(x) and not pd.isna(x) for x in table["timing_dependent"]]
    for col in COLUMNS + EXTRA:
        if col in text:
            table[col] = table[col].fillna("") if col in table else ""
        elif col not in table:
            table[col] = np.nan
    table = apply_families(table, identities, families)
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


def family_caption(table: pd.DataFrame, families: dict[str, Any] | None) -> str:
    """What the Holm families of a table are, for its caption."""
    if families is None:
        n = int(table["p_value"].notna().sum()) if len(table) else 0
        return (f"Holm family: {POST_HOC} ({n} rows with a test; no spec under conf/compare/ "
                "declares one, so adding a row moves every adjusted p).")  # fmt: skip
    parts = []
    for fam in families["families"]:
        kind = "exploratory" if fam.get("exploratory") else "registered"
        n_rows = int((table["family"] == fam["name"]).sum()) if len(table) else 0
        parts.append(f"`{fam['name']}` ({kind}, {len(declared_cells(fam))} declared cells, "
                     f"{n_rows} in this table: {fam.get('text', '').strip()})")  # fmt: skip
    loose = int(((table["family"] == "") & table["p_value"].notna()).sum()) if len(table) else 0
    tail = (f" {loose} tested row(s) in no declared family: not adjusted (`p (Holm)` -)."
            if loose else "")  # fmt: skip
    return (
        "Holm families, declared before the rows (a declared cell that did not run counts "
        "as p = 1): " + "; ".join(parts) + "." + tail
    )


def render_markdown(
    table: pd.DataFrame, exp: str, reference: str, n_boot: int = 10_000,
    families: dict[str, Any] | None = None, spec_name: str | None = None,
    records: pd.DataFrame | None = None,
) -> str:  # fmt: skip
    """The comparison as Markdown, with a caption saying what every number is; ``records``
    (the ok records of the experiments compared) give the threat models, timing and left-out
    attack logs of the caption."""
    seeds = sorted({int(s) for s in table["seeds"].dropna()}) if len(table) else []
    where = f" (`conf/compare/{spec_name}.yaml`)" if families is not None and spec_name else ""
    caption = (
        f"# Paired comparison: `{exp}` against `{reference}`\n\n"
        f"Rows: every (pruner, sparsity, attack) configuration of `{exp}`, paired with the "
        "reference at the same attack and sparsity (or the reference's only sparsity), on the "
        "seeds both have and the examples both attacked (`example_index`). `Δ Aua` = row minus "
        "reference in percentage points: mean over examples of the per-example survival "
        "difference, averaged over shared seeds. Conditional on these fine-tunes (the unit is "
        f"the sentence): `[95% CI]` = paired cluster bootstrap over examples ({n_boot:,} "
        "resamples, seed 0); `p` = exact McNemar (one shared seed) or exact paired sign-flip "
        "test (several: the per-sentence seed means are multiples of 1/S and their null "
        "distribution is computed exactly); 1 when no pair is discordant. Over seeds (the unit "
        "is the seed, one dense fine-tune each; two or more shared seeds): `per-seed Δ` = each "
        "seed's paired delta, `Δ over seeds [t 95% CI]` = their mean with the random-effects "
        "t-interval (S - 1 degrees of freedom: 2 with three seeds), `p (t)` = one-sample "
        "t-test; a method claim needs this interval as well. `p (Holm)` / `p (t, Holm)` = "
        f"Holm-adjusted within the row's `family`{where}. "
        + family_caption(table, families)
        + " `n pairs` = distinct examples both rows attacked (each one pair, its difference "
        "averaged over the shared seeds); `seeds` = shared seeds (values in this table: "
        f"{', '.join(map(str, seeds)) or '-'}). `threat model` = the hash of the row's (and "
        "its reference's) threat model: a row and its reference pair only on the same one.\n"
    )
    extra = caption_notes(records) if records is not None else ""
    if extra:
        caption += "\n" + extra + "\n"
    if table.empty:
        return caption + "\n_no rows_\n"
    show = display_table(table)
    return caption + "\n" + show.to_markdown(index=False, disable_numparse=True) + "\n"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as shown: deltas and intervals in signed points, p-values rounded,
    ``differs`` only where some row has it. The Markdown table and the static site show it."""
    show = pd.DataFrame({
        "pruner": table["pruner"], "sparsity": table["sparsity"], "attack": table["attack"],
        "threat model": table["threat_model"], "family": table["family"],
        "seeds": table["seeds"].fillna(0).astype(int),
        "n pairs": table["n_pairs"].fillna(0).astype(int),
        "Δ Aua [95% CI], conditional": delta_cells(table),
        "p": p_cells(table["p_value"]),
        "test": table["test"],
        "p (Holm)": p_cells(table["p_adjusted"]),
        "per-seed Δ": [seed_points(t) for t in table["seed_deltas"]],
        "Δ over seeds [t 95% CI]": seed_cells(table),
        "p (t)": p_cells(table["seed_p"]),
        "p (t, Holm)": p_cells(table["seed_p_adjusted"]),
        "note": table["note"],
    })  # fmt: skip
    if (table["differs"] != "").any():
        show.insert(3, "differs", table["differs"])
    return show


def seed_cells(table: pd.DataFrame) -> list[str]:
    """``Δ [t 95% CI]`` over seeds in signed points; ``-`` where fewer than two seeds."""
    return [
        "-" if pd.isna(lo) else f"{_pp(d)} [{_pp(lo)}, {_pp(hi)}]"
        for d, lo, hi in zip(table["delta_aua"], table["seed_ci_low"], table["seed_ci_high"],
                             strict=True)
    ]  # fmt: skip


def spec_stem(exp: str, reference: str, reference_exp: str | None = None) -> str:
    """``<exp>`` (reference ``none``) or ``<exp>_vs_<reference>[_in_<reference_exp>]``: the
    name of the table (``compare_<stem>``) and of its families' spec (``conf/compare/``)."""
    stem = exp if reference == "none" else f"{exp}_vs_{reference.replace('@', '_at_')}"
    if reference_exp and reference_exp != exp:
        stem += f"_in_{reference_exp}"
    return stem


def write_compare(
    df: pd.DataFrame,
    exp: str,
    reference: str,
    results_dir: Path,
    n_boot: int = 10_000,
    reference_exp: str | None = None,
) -> Path:
    """Write ``<results_dir>/tables/compare_<exp>.{csv,md}`` (reference ``none``, the dense
    model) or ``compare_<exp>_vs_<reference>[_in_<reference_exp>].{csv,md}``, with the Holm
    families of ``conf/compare/<same stem>.yaml`` when there is one; return the Markdown
    path."""
    name = spec_stem(exp, reference, reference_exp)
    families = load_families(name) if (COMPARE_DIR / f"{name}.yaml").is_file() else None
    if families is None:
        log.warning("compare %s: no conf/compare/%s.yaml; Holm over the table's rows (post "
                    "hoc)", name, name)  # fmt: skip
    table = compare_table(df, exp, reference, n_boot=n_boot, reference_exp=reference_exp,
                          families=families)  # fmt: skip
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{name}"
    table.to_csv(out / f"{stem}.csv", index=False)  # fractions, unrounded
    md = out / f"{stem}.md"
    label = (
        reference
        if not reference_exp or reference_exp == exp
        else (f"{reference}` of `{reference_exp}")
    )
    ref_pruner = parse_reference(reference)[0]
    scope = df[
        (df["exp_name"] == exp)
        | ((df["exp_name"] == (reference_exp or exp)) & (df["pruner"] == ref_pruner))
    ]
    scope = scope[scope["status"] == "ok"] if "status" in scope else scope
    used = {h for x in table["threat_model"] for h in str(x).split(",") if h}
    scope = scope[[threat_hash(r) in used or threat_hash(r) is None
                   for r in scope.to_dict("records")]]  # fmt: skip
    md.write_text(render_markdown(table, exp, label, n_boot, families, name, scope),
                  encoding="utf-8")  # fmt: skip
    log.info("compare %s vs %s: %d rows -> %s/%s.{md,csv}", exp, reference,
             len(table), out, stem)  # fmt: skip
    return md
