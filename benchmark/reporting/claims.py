"""Pre-written claims judged mechanically from the records.

``python -m benchmark.aggregate --claims NAME`` reads ``conf/claims/NAME.yaml`` (the claims an
experiment tests, written down before it ran) and writes
``<results-dir>/tables/claims_NAME.{md,csv}``: one row per cell (claim, sparsity, attack) with
the paired comparison of the claim's row against its reference on the claim's protocol
(:func:`benchmark.reporting.compare.compare_pair`), judged twice by the registered rule:

- over seeds (the unit of a method claim; CSV ``delta_ci_low/high``, ``p_value``, ``p_holm``,
  ``cell``): the per-seed paired deltas (``seed_deltas``), their random-effects t-interval and
  one-sample t-test (S - 1 degrees of freedom), Holm over the registered family;
- conditional on these fine-tunes (the unit is the sentence; CSV ``*_conditional``): paired
  bootstrap over sentences, exact McNemar or exact sign-flip p, Holm over the same family.

The Holm family is every registered cell of the claims named in ``family`` (claims x
sparsities x attacks, as written in the spec; ``family`` may also be a list of such lists,
each adjusted on its own); a cell without a test (not run, degenerate, one seed for the
seed-level test) counts in m with p = 1. Kinds: ``above`` / ``below`` (one direction, p
two-sided with the delta's sign), ``retains`` (the interval reaches 0), ``gap_grows`` and
``differs`` (two-sided: a significant difference either way, its sign in the delta). A cell
reads ``holds`` only when the rule holds on both intervals; ``not robust to seed variance
(conditional: <verdict>)`` where the two disagree; ``<verdict> (one seed, conditional only)``
with one seed. One verdict per claim:

- ``replicates``: every cell the rule needs ran and holds (on both intervals, so with
  several seeds);
- ``does not replicate``: a cell the rule needs ran, is not degenerate, and does not hold on
  one of its intervals (a wider interval never turns a failed claim into a replicated one);
- ``consistent with the paper on one fine-tune``: every needed cell ran and holds, some on
  one seed only (sentence-level interval alone): what one fine-tune can show, not a
  replication;
- ``pending``: no needed cell fails, but some have not run;
- ``undecidable``: a needed cell ran but its row or reference is degenerate (a near-constant
  classifier, whose Aua is no evidence either way).

Only records of the claim's protocol count: the experiment, the attack sample size
(``num_examples``), the pruner option's default settings (variants such as 2:4 or float32 are
other configurations) unless the claim names a side's settings (``row_settings:
{calibration: sst2}``: that option's defaults with those keys set) and, as in every
comparison, the same attack, model, data and dense recipe on both sides.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.cells import is_degenerate, record_interval, seed_delta_text, seed_points
from benchmark.reporting.provenance import TIMING, caption_notes, threat_hashes, timing_dependent
from benchmark.reporting.records import dedupe, is_default_pruner, pruner_is
from benchmark.reporting.spec_files import read_spec
from benchmark.reporting.stats import holm_adjust

log = logging.getLogger(__name__)

CLAIMS_DIR = Path(__file__).resolve().parents[2] / "conf" / "claims"
KINDS = ("above", "below", "retains", "gap_grows", "differs")
COLUMNS = ["claim", "kind", "row", "reference", "sparsity", "attack", "seeds", "n_pairs",
           "delta_aua", "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "cell",
           "seed_deltas", "delta_ci_low_conditional", "delta_ci_high_conditional",
           "p_value_conditional", "p_holm_conditional", "cell_conditional", "threat_model",
           "timing_dependent"]  # fmt: skip
SEVERAL_THREAT_MODELS = "several threat models"
ONE_SEED = " (one seed, conditional only)"
# every needed cell holds, some on one seed only: never "replicates" (no seed-level interval)
ONE_FINE_TUNE = "consistent with the paper on one fine-tune"
NOT_ROBUST = "not robust to seed variance"


def load_spec(name: str | Path) -> dict[str, Any]:
    """The claims spec ``conf/claims/<name>.yaml`` (or a path), checked."""
    spec, _ = read_spec(name, CLAIMS_DIR, "claims")
    for c in spec["claims"]:
        if c["kind"] not in KINDS:
            raise ValueError(f"claim {c['id']}: kind {c['kind']!r} is not one of {KINDS}")
        if c["kind"] == "gap_grows" and len(c["sparsities"]) != 2:
            raise ValueError(f"claim {c['id']}: gap_grows needs exactly two sparsities")
        for side in ("row", "reference"):
            _check_settings(c, side)
    ids = {c["id"] for c in spec["claims"]}
    for fam in families(spec):
        if set(fam) - ids:
            raise ValueError(f"family names claims that the spec does not have: "
                             f"{sorted(set(fam) - ids)}")  # fmt: skip
    return spec


def families(spec: dict[str, Any]) -> list[list[str]]:
    """The spec's Holm families: ``family`` is one list of claim ids, or a list of such lists
    (each adjusted separately, e.g. the paper's claims and an exploratory two-sided one)."""
    fam = spec.get("family") or []
    if fam and all(isinstance(f, list) for f in fam):
        return [list(f) for f in fam]
    return [list(fam)] if fam else []


def _check_settings(claim: dict, side: str) -> None:
    """``<side>_settings``: pruner keys set instead of the option's defaults; each must be a
    key of ``conf/pruner/<pruner>.yaml`` (a typo would silently match nothing)."""
    from benchmark.records.staleness import option_file

    settings = claim.get(f"{side}_settings")
    if not settings:
        return
    option = option_file("pruner", str(claim[side])) or {}
    unknown = sorted(set(settings) - set(option))
    if unknown:
        raise ValueError(f"claim {claim['id']}: {side}_settings {unknown} are not keys of "
                         f"conf/pruner/{claim[side]}.yaml")  # fmt: skip


def side_label(claim: dict, side: str) -> str:
    """``akr`` or, with settings, ``akr (calibration=sst2)``."""
    settings = claim.get(f"{side}_settings") or {}
    extra = ", ".join(f"{k}={v}" for k, v in settings.items())
    return f"{claim[side]} ({extra})" if extra else str(claim[side])


def _matches(identity: str, pruner: str, settings: dict | None) -> bool:
    """A record of ``pruner`` at its option's defaults, with ``settings`` set instead."""
    return pruner_is(identity, pruner, tuple((settings or {}).items()))


def protocol_records(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The ok records of the spec's experiment and attack sample size, whose pruner is at its
    option's defaults or at the settings a claim names (``row_settings``/``reference_settings``)."""
    if df.empty:
        return df
    ok = df[(df["status"] == "ok") & (df["exp_name"] == spec["experiment"])]
    if ok.empty:
        return ok
    variants = _variants(spec)
    keep = []
    for ident in ok["_identity"]:
        attack = json.loads(ident).get("attack") or {}
        config = is_default_pruner(ident) or any(_matches(ident, p, s) for p, s in variants)
        keep.append(attack.get("num_examples") == spec["num_examples"] and config)
    return dedupe(ok[keep])


def _variants(spec: dict[str, Any]) -> list[tuple[str, dict]]:
    """(pruner, settings) of every claim side that names pruner settings."""
    return [(c[side], c[f"{side}_settings"]) for c in spec["claims"]
            for side in ("row", "reference") if c.get(f"{side}_settings")]  # fmt: skip


def _degenerate(recs: pd.DataFrame) -> bool:
    # the fields record_interval reads for clean accuracy, not every column (record_hashes)
    cols = [c for c in ("clean_acc", "clean_acc_ci_low", "clean_acc_ci_high", "n_eval")
            if c in recs]  # fmt: skip
    return any(
        is_degenerate(recs.iloc[[i]], record_interval(rec, "clean_acc"))
        for i, rec in enumerate(recs[cols].to_dict("records"))
    )


def _cell(recs: pd.DataFrame, claim: dict, sparsity: float, attack: str,
          n_boot: int, variants: list[tuple[str, dict]] = ()) -> dict[str, Any]:  # fmt: skip
    """The paired comparison of one cell, or why there is none (``status``; empty when the
    cell has a test and is not degenerate). ``variants``: the (pruner, settings) that claims
    of the spec name; a side without settings never takes their records."""
    from benchmark.reporting.compare import compare_pair

    def pick(side: str, dense_ok: bool) -> pd.DataFrame:
        """Records at the cell's sparsity; the reference may be the dense model (0.0)."""
        pruner, settings = claim[side], claim.get(f"{side}_settings")
        sub = recs[(recs["pruner"] == pruner) & (recs["attack"] == attack)]
        if settings:  # the configuration the claim names
            keep = [_matches(i, pruner, settings) for i in sub["_identity"]]
        else:  # not one that another claim names
            named = [s for p, s in variants if p == pruner]
            keep = [not any(_matches(i, pruner, s) for s in named) for i in sub["_identity"]]
        sub = sub.loc[np.array(keep, dtype=bool)]
        sparsity_of = sub["sparsity_target"].astype(float)
        same = sub[(sparsity_of - sparsity).abs() < 1e-9]
        if same.empty and dense_ok and len(sub) and (sparsity_of == 0.0).all():
            return sub
        return same

    row, ref = pick("row", False), pick("reference", True)
    out = {"claim": claim["id"], "kind": claim["kind"], "row": side_label(claim, "row"),
           "reference": side_label(claim, "reference"), "sparsity": sparsity, "attack": attack,
           "seeds": 0, "n_pairs": 0, "delta_aua": np.nan, "delta_ci_low": np.nan,
           "delta_ci_high": np.nan, "p_value": np.nan, "seed_deltas": "",
           "delta_ci_low_conditional": np.nan, "delta_ci_high_conditional": np.nan,
           "p_value_conditional": np.nan, "status": "", "threat_model": "",
           "timing_dependent": False}  # fmt: skip
    if row.empty or ref.empty:
        out["status"] = "not run"
        return out
    hashes = sorted(set(threat_hashes(row)) | set(threat_hashes(ref)))
    out["threat_model"] = ",".join(hashes)
    out["timing_dependent"] = timing_dependent(row) or timing_dependent(ref)
    if row["_identity"].nunique() > 1 or ref["_identity"].nunique() > 1:
        out["status"] = "several configurations"
        return out
    if len(hashes) > 1:  # a row and its reference attacked under two threat models: no pair
        out["status"] = SEVERAL_THREAT_MODELS
        return out
    st = compare_pair(row, ref, n_boot=n_boot)
    out.update(seeds=st["seeds"], n_pairs=st["n_pairs"], delta_aua=st["delta_aua"],
               delta_ci_low=st["seed_ci_low"], delta_ci_high=st["seed_ci_high"],
               p_value=st["seed_p"], seed_deltas=seed_delta_text(st["seed_deltas"]),
               delta_ci_low_conditional=st["delta_ci_low"],
               delta_ci_high_conditional=st["delta_ci_high"],
               p_value_conditional=st["p_value"])  # fmt: skip
    if not st["n_pairs"]:
        out["status"] = st["note"] or "no pairs"
    elif _degenerate(row) or _degenerate(ref):
        out["status"] = "degenerate"
    return out


def _holm_family(table: pd.DataFrame, family: pd.Series, col: str) -> pd.Series:
    """Holm over the registered family: every cell in ``family`` counts in m, those without
    a test (``status`` set, or no p in ``col``) as p = 1; adjusted p where there is a test."""
    out = pd.Series(np.nan, index=table.index)
    tested = family & (table["status"] == "") & table[col].notna()
    m = int(family.sum())
    if m:
        out[tested] = holm_adjust(table.loc[tested, col].astype(float).tolist(), m=m)
    return out


def judge(df: pd.DataFrame, spec: dict[str, Any], n_boot: int = 10_000):
    """(cells table, verdicts table) of the spec's claims on the records ``df``."""
    recs = protocol_records(df, spec)
    cells = [
        _cell(recs, claim, float(s), attack, n_boot, _variants(spec))
        for claim in spec["claims"]
        for s in claim["sparsities"]
        for attack in spec["attacks"]
    ]
    table = pd.DataFrame(cells)
    table["p_holm"] = np.nan
    table["p_holm_conditional"] = np.nan
    for fam in families(spec):
        member = table["claim"].isin(fam)
        for col in ("p_value", "p_value_conditional"):
            adjusted = _holm_family(table, member, col)
            target = col.replace("p_value", "p_holm")
            table.loc[member, target] = adjusted[member]
    table["cell"] = table["status"]
    table["cell_conditional"] = table["status"]
    alpha = float(spec.get("alpha", 0.05))
    verdicts = []
    for claim in spec["claims"]:
        rows = table[table["claim"] == claim["id"]]
        if claim["kind"] == "gap_grows":
            status, detail = _gap_verdict(rows, claim, spec["attacks"])
            run = rows.index[rows["status"] == ""]
            table.loc[run, ["cell", "cell_conditional"]] = "see verdict"
        else:
            for i in rows.index:
                if table.at[i, "status"] == "":
                    r = table.loc[i]
                    cond = _cell_result(r, claim["kind"], alpha, "_conditional")
                    seed = _cell_result(r, claim["kind"], alpha) if r["seeds"] > 1 else None
                    table.at[i, "cell_conditional"] = cond
                    table.at[i, "cell"] = combine(seed, cond)
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


def combine(seed: str | None, conditional: str) -> str:
    """What a cell says from the rule's result over seeds (``None``: one seed) and
    conditional on these fine-tunes: ``holds`` only when both hold."""
    if seed is None:
        return conditional + ONE_SEED
    if seed == conditional:
        return seed
    if "holds" in (seed, conditional):
        return f"{NOT_ROBUST} (conditional: {conditional})"
    return f"{seed} (conditional: {conditional})"


def _cell_result(r: pd.Series, kind: str, alpha: float, suffix: str = "") -> str:
    """The registered rule on one interval: over seeds (``suffix`` empty) or conditional on
    these fine-tunes (``_conditional``). Holm-adjusted p where the cell is in the family."""
    d, hi = r["delta_aua"], r[f"delta_ci_high{suffix}"]
    if kind == "retains":
        return "holds" if hi >= 0 else "fails: below"
    p = r[f"p_holm{suffix}"]
    p = r[f"p_value{suffix}"] if pd.isna(p) else p
    if kind == "differs":  # two-sided: a difference either way, its sign in the delta
        return "holds" if p < alpha else "fails: no significant difference"
    sign = 1 if kind == "above" else -1
    if sign * d > 0 and p < alpha:
        return "holds"
    if sign * d < 0 and p < alpha:
        return "fails: opposite, significant"
    return "fails: no significant difference"


def _verdict(cells: list[str]) -> str:
    """A claim's verdict from what its needed cells say (:func:`combine`)."""
    if any(c.startswith(("fails", NOT_ROBUST)) for c in cells):
        return "does not replicate"
    if any(c in ("degenerate", "several configurations", SEVERAL_THREAT_MODELS) for c in cells):
        return "undecidable"
    if cells and all(c == "holds" for c in cells):
        return "replicates"
    if cells and all(c in ("holds", "holds" + ONE_SEED) for c in cells):
        return ONE_FINE_TUNE
    return "pending"


def _gap_rule(a: pd.Series, b: pd.Series, suffix: str = "") -> str:
    """gap_grows on one kind of interval: larger at the last sparsity, intervals disjoint."""
    if b["delta_aua"] > a["delta_aua"] and (
        b[f"delta_ci_low{suffix}"] > a[f"delta_ci_high{suffix}"]
    ):
        return "holds"
    if b["delta_aua"] > a["delta_aua"]:
        return "fails: larger gap, intervals overlap"
    return "fails: gap does not grow"


def _gap_verdict(rows: pd.DataFrame, claim: dict, attacks: list[str]) -> tuple[str, str]:
    lo_s, hi_s = (float(s) for s in claim["sparsities"])
    cells, parts = [], []
    for attack in attacks:
        a = rows[(rows["attack"] == attack) & (rows["sparsity"] == lo_s)].iloc[0]
        b = rows[(rows["attack"] == attack) & (rows["sparsity"] == hi_s)].iloc[0]
        if a["status"] or b["status"]:
            cell = a["status"] or b["status"]
        else:
            seeded = a["seeds"] > 1 and b["seeds"] > 1
            cell = combine(_gap_rule(a, b) if seeded else None, _gap_rule(a, b, "_conditional"))
        cells.append(cell)
        parts.append(f"{attack}: {cell}")
    return _verdict(cells), "; ".join(parts)


def display_tables(
    table: pd.DataFrame, verdicts: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(verdicts, cells) as shown: deltas and intervals in signed points, p-values rounded,
    a cell's timing note appended. The Markdown table and the static site show these."""
    from benchmark.reporting.compare import delta_cells, p_cells

    seed_ci = [
        "-" if pd.isna(lo) else f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        for d, lo, hi in zip(table["delta_aua"], table["delta_ci_low"], table["delta_ci_high"],
                             strict=True)
    ]  # fmt: skip
    cond = pd.DataFrame({"delta_aua": table["delta_aua"],
                         "delta_ci_low": table["delta_ci_low_conditional"],
                         "delta_ci_high": table["delta_ci_high_conditional"]})  # fmt: skip
    show = pd.DataFrame({
        "claim": table["claim"], "row": table["row"], "reference": table["reference"],
        "sparsity": table["sparsity"], "attack": table["attack"],
        "seeds": table["seeds"].fillna(0).astype(int),
        "n pairs": table["n_pairs"].fillna(0).astype(int),
        "per-seed Δ": [seed_points(t) for t in table["seed_deltas"]],
        "Δ Aua [t 95% CI]": seed_ci,
        "p (t)": p_cells(table["p_value"], 3),
        "p (t, Holm)": p_cells(table["p_holm"], 3),
        "Δ Aua [95% CI], conditional": delta_cells(cond),
        "p": p_cells(table["p_value_conditional"], 3),
        "p (Holm)": p_cells(table["p_holm_conditional"], 3),
        "threat model": table["threat_model"],
        "cell": [c + (f" ({TIMING})" if t else "")
                 for c, t in zip(table["cell"], table["timing_dependent"], strict=True)],
    })  # fmt: skip
    return verdicts.rename(columns={"cells": "cells the rule needs"}), show


def render(table: pd.DataFrame, verdicts: pd.DataFrame, spec: dict[str, Any], name: str,
           records: pd.DataFrame | None = None) -> str:  # fmt: skip
    """The cells and verdicts as Markdown, with a caption saying what every number is;
    ``records`` (the protocol's records) give its threat models and left-out attack logs."""
    holm = (
        "; ".join(
            f"the {int(table['claim'].isin(fam).sum())} registered cells of {', '.join(fam)}"
            for fam in families(spec)
        )
        or "no family (unadjusted)"
    )
    if len(families(spec)) > 1:
        holm = "each family separately: " + holm
    head = (
        f"# Claims `{name}`: judged from the records\n\n"
        f"Experiment `{spec['experiment']}`, attacks {', '.join(spec['attacks'])} on "
        f"{'the whole split' if not spec['num_examples'] else spec['num_examples']} "
        "(pruner options at their defaults unless a row names its settings). `Δ Aua` = row "
        "minus reference in points, paired over the same sentences. Seeds are the unit of a "
        "method claim: `per-seed Δ` = each seed's paired delta (its own dense fine-tune), "
        "`[t 95% CI]` = their "
        "random-effects t-interval (S - 1 degrees of freedom: 2 with three seeds), `p (t)` = "
        "one-sample t-test. Conditional on these fine-tunes (the unit is the sentence): "
        "`[95% CI], conditional` = paired cluster bootstrap over sentences, `p` = exact "
        f"McNemar (one seed) or exact sign-flip (several), two-sided. Both `Holm` columns: over "
        f"{holm} (a cell without a test, e.g. degenerate, "
        f"not run, or one seed for `p (t)`, counts as p = 1); alpha {spec.get('alpha', 0.05)}. "
        "A cell `holds` only when the rule holds on both intervals; `not robust to seed "
        "variance` where they disagree (the conditional verdict in brackets); `(one seed, "
        "conditional only)` where there is no seed-level interval. A claim replicates only when "
        "every cell it needs holds. Rules: conf/claims/" + name + ".yaml. Written by "
        f"`python -m benchmark.aggregate --claims {name}`. `threat model` = the hash of the "
        f"cell's threat model (a row and a reference of two threat models are never paired: "
        f"`{SEVERAL_THREAT_MODELS}`); `{TIMING}` after a cell = a record hit a per-example "
        "limit (`n_limit > 0`).\n"
    )
    if records is not None:
        extra = caption_notes(records)
        if extra:
            head += "\n" + extra + "\n"
    ver, show = display_tables(table, verdicts)
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
    recs = protocol_records(df, spec)
    if not recs.empty:
        recs = recs[recs["pruner"].isin({c[k] for c in spec["claims"]
                                         for k in ("row", "reference")})]  # fmt: skip
        recs = recs[recs["attack"].isin(spec["attacks"])]
    md.write_text(render(table, verdicts, spec, stem, recs), encoding="utf-8")
    for v in verdicts.itertuples():
        log.info("%s: %s (%s)", v.claim, v.verdict, v.cells)
    return md
