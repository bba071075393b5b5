"""Effect tables: a method's configurations side by side, each paired against a reference row.

``python -m benchmark.aggregate --effects NAME`` reads ``conf/effects/NAME.yaml`` and writes
``<results-dir>/tables/effects_NAME.{md,csv}``. A spec names an experiment, one seed, the attack
sample size, the attacks and sparsities, and its rows. A row is a pruner and either

- ``set``: the pruner's CURRENT defaults (``conf/pruner/<pruner>.yaml``) with these values
  changed; a record belongs to the row only when its whole ``cfg.pruner`` equals that (keys in
  the spec's ``ignore``, which do not change results, left out), so a row never mixes
  configurations and a record of an older default is not taken for the current one; or
- ``match``: only these ``cfg.pruner`` values must hold (e.g. ``{version: 1}`` for the records
  an earlier version of a method wrote).

A row may also name ``dense_noise`` (``{scale, seed}``: only records pruned from that perturbed
dense model, :mod:`benchmark.models.noise`; default the spec's, unset = unperturbed records only)
and ``sparsity`` (read at that sparsity on every line, e.g. 0.0 for the dense ``none`` row).
Each row names the row it is compared with (``reference``, default the spec's). Per sparsity and
attack a line shows the record, its actual sparsity, clean accuracy on the whole split,
the attacked sample's Clean / Aua / Suc with Wilson 95% intervals, and against the reference
(same sentences, paired): Δ clean on the attack log's examples (exact McNemar) and Δ Aua
(paired bootstrap interval, exact McNemar p; :func:`benchmark.reporting.compare.compare_pair`),
plus the pruning seconds. A configuration with no record is shown as ``not run``; two records
of one configuration and seed: the newest is used and the caption names the others. When a row
and its reference were pruned from dense models with different cache keys the caption says so
(``scripts/check_dense_reproduced.py`` checks that two such dense models agree).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.reporting.cells import record_interval
from benchmark.reporting.compare import compare_pair
from benchmark.reporting.provenance import TIMING, caption_notes, threat_hash, timing_dependent
from benchmark.reporting.records import read_attack_log
from benchmark.reporting.spec_files import read_spec
from benchmark.reporting.stats import mcnemar_exact

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
EFFECTS_DIR = ROOT / "conf" / "effects"
PRUNER_DIR = ROOT / "conf" / "pruner"
COLUMNS = ["sparsity", "row", "attack", "run_id", "sparsity_actual", "clean_acc",
           "clean_lo", "clean_hi", "attack_clean_acc", "attack_clean_lo", "attack_clean_hi",
           "aua", "aua_lo", "aua_hi", "asr", "asr_lo", "asr_hi", "reference_run",
           "delta_clean", "clean_p", "clean_n", "delta_aua", "delta_lo", "delta_hi", "aua_p",
           "n_pairs", "prune_seconds", "dense_key", "threat_model"]  # fmt: skip


def load_spec(name: str | Path) -> dict[str, Any]:
    """The spec ``conf/effects/<name>.yaml`` (or a path), checked."""
    spec, path = read_spec(name, EFFECTS_DIR, "effects")
    spec.setdefault("name", path.stem)
    ids = [r["id"] for r in spec["rows"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"effects spec {path.name}: row ids repeat: {ids}")
    for r in spec["rows"]:
        if "set" in r and "match" in r:
            raise ValueError(f"effects spec {path.name}, row {r['id']}: set or match, not both")
        ref = r.get("reference", spec.get("reference"))
        if ref is not None and ref not in ids:
            raise ValueError(f"effects spec {path.name}, row {r['id']}: reference {ref!r} is not "
                             f"a row id ({', '.join(ids)})")  # fmt: skip
    return spec


def pruner_defaults(pruner: str) -> dict[str, Any]:
    """The current defaults of ``conf/pruner/<pruner>.yaml`` (``_target_`` left out)."""
    import yaml

    path = PRUNER_DIR / f"{pruner}.yaml"
    if not path.is_file():
        raise ValueError(f"no pruner config {path}")
    conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {k: v for k, v in conf.items() if k not in ("_target_", "defaults")}


def row_matches(row: dict[str, Any], pcfg: dict[str, Any], ignore: set[str]) -> bool:
    """Whether a record's ``cfg.pruner`` belongs to the spec row."""
    if "match" in row:
        return all(pcfg.get(k) == v for k, v in row["match"].items())
    from benchmark.reporting.records import option_defaults

    want = option_defaults(pruner_defaults(row["pruner"]))  # a preset-pinned value counts too
    want.update({k: (v,) for k, v in (row.get("set") or {}).items()})
    keys = (set(want) | set(pcfg)) - ignore - {"_target_", "defaults", "name"}
    return all(pcfg.get(k) in want.get(k, (None,)) for k in keys)


def clean_pairs(rows_a: list[dict], rows_b: list[dict]) -> dict[str, Any]:
    """Clean accuracy of two models on the examples both attack logs hold, and the exact
    McNemar p over the discordant ones (``only_a``: right only under ``a``)."""
    ca = {r["example_index"]: int(r["orig_pred"] == r["label"]) for r in rows_a if "orig_pred" in r}
    cb = {r["example_index"]: int(r["orig_pred"] == r["label"]) for r in rows_b if "orig_pred" in r}
    keys = sorted(set(ca) & set(cb))
    if not keys:
        return {"n": 0, "clean_a": float("nan"), "clean_b": float("nan"), "only_a": 0,
                "only_b": 0, "p_value": float("nan")}  # fmt: skip
    n_a = sum(1 for k in keys if ca[k] > cb[k])
    n_b = sum(1 for k in keys if ca[k] < cb[k])
    return {"n": len(keys), "clean_a": sum(ca[k] for k in keys) / len(keys),
            "clean_b": sum(cb[k] for k in keys) / len(keys), "only_a": n_a, "only_b": n_b,
            "p_value": mcnemar_exact(n_a, n_b)}  # fmt: skip


def _candidates(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The spec's protocol: its experiment, seed, attacks, sparsities and sample size."""
    ok = df[(df["exp_name"] == spec["experiment"]) & (df["status"] == "ok")]
    ok = ok[ok["seed"] == spec.get("seed", 0)]
    ok = ok[ok["attack"].isin(spec["attacks"])]
    wanted = [*spec["sparsities"], *(r["sparsity"] for r in spec["rows"] if "sparsity" in r)]
    ok = ok[ok["sparsity_target"].round(6).isin([round(s, 6) for s in wanted])]
    pruners = {r["pruner"] for r in spec["rows"]}
    ok = ok[ok["pruner"].isin(pruners)].copy()
    cfgs = [json.loads(Path(p).read_text(encoding="utf-8")).get("cfg") or {} for p in ok["_path"]]
    ok["_pcfg"] = [c.get("pruner") or {} for c in cfgs]
    ok["_num_examples"] = [(c.get("attack") or {}).get("num_examples") for c in cfgs]
    want_n = spec.get("num_examples")
    if want_n is not None:
        keep = [n == want_n for n in ok["_num_examples"]]
        ok = ok[keep]
    return ok


def _same_noise(column: Any, want: Any) -> bool:
    """Whether a record's ``dense_noise`` (``load_records``'s ``_dense_noise``: JSON or None) is
    the row's (both unset, or the same scale and seed)."""
    have = json.loads(column) if isinstance(column, str) else None
    if not have or not want:
        return not have and not want
    return float(have["scale"]) == float(want["scale"]) and int(have["seed"]) == int(want["seed"])


def _pick(recs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The newest record (one-row frame) and the run ids of the others."""
    if "started_at" in recs:
        recs = recs.sort_values("started_at", ascending=False, kind="stable")
    return recs.iloc[:1], list(recs["run_id"].iloc[1:])


def _at(recs: pd.DataFrame, sparsity: float, attack: str) -> pd.DataFrame:
    return recs[(recs["attack"] == attack) & ((recs["sparsity_target"] - sparsity).abs() < 1e-9)]


def _describe(x: dict[str, Any]) -> dict[str, Any]:
    """The columns of one record: its numbers and their Wilson intervals."""
    line = {k: x.get(k) for k in ("run_id", "sparsity_actual", "clean_acc", "attack_clean_acc",
                                  "aua", "asr", "prune_seconds")}  # fmt: skip
    line["dense_key"] = x.get("dense_info.key")
    line["threat_model"] = threat_hash(x)
    for metric, pre in (("clean_acc", "clean"), ("attack_clean_acc", "attack_clean"),
                        ("aua", "aua"), ("asr", "asr")):  # fmt: skip
        line[f"{pre}_lo"], line[f"{pre}_hi"] = record_interval(x, metric)
    return line


def _paired(
    rec: pd.DataFrame, ref: pd.DataFrame, where: tuple, notes: list[tuple]
) -> dict[str, Any]:
    """Δ clean and Δ Aua of a record against its reference record, on the same sentences."""
    x, y = rec.iloc[0].to_dict(), ref.iloc[0].to_dict()
    out: dict[str, Any] = {"reference_run": y["run_id"]}
    if x.get("dense_info.key") != y.get("dense_info.key"):
        notes.append((*where, f"dense model {x.get('dense_info.key')}, its reference's "
                      f"{y.get('dense_info.key')}", ()))  # fmt: skip
    logs = read_attack_log(x.get("_log")), read_attack_log(y.get("_log"))
    missing = [run for run, lg in zip((x["run_id"], y["run_id"]), logs, strict=True) if not lg]
    if missing:
        notes.append((*where, "no paired Δ, attack log missing", tuple(missing)))
        return out
    c = clean_pairs(*logs)
    if c["n"]:
        out.update(delta_clean=c["clean_a"] - c["clean_b"], clean_p=c["p_value"], clean_n=c["n"])
    pair = compare_pair(rec, ref)
    if pair["n_pairs"]:
        out.update(delta_aua=pair["delta_aua"], delta_lo=pair["delta_ci_low"],
                   delta_hi=pair["delta_ci_high"], aua_p=pair["p_value"],
                   n_pairs=pair["n_pairs"])  # fmt: skip
    return out


def effects_table(df: pd.DataFrame, spec: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """One line per (sparsity, row, attack) and the caption's notes."""
    cand = _candidates(df, spec)
    ignore = set(spec.get("ignore") or [])
    member = {}
    for r in spec["rows"]:
        noise = r.get("dense_noise", spec.get("dense_noise"))  # unperturbed unless named
        keep = [p == r["pruner"] and row_matches(r, c, ignore) and _same_noise(n, noise)
                for p, c, n in zip(cand["pruner"], cand["_pcfg"], cand["_dense_noise"],
                                   strict=True)]  # fmt: skip
        member[r["id"]] = cand[keep]
    notes: list[tuple] = []  # (row, sparsity, attack, message, record ids)
    rows = {r["id"]: r for r in spec["rows"]}
    out = []
    for s in spec["sparsities"]:
        for r in spec["rows"]:
            for attack in spec["attacks"]:
                line: dict[str, Any] = {
                    "sparsity": r.get("sparsity", s),
                    "row": r["id"],
                    "attack": attack,
                }
                out.append(line)
                sel = _at(member[r["id"]], r.get("sparsity", s), attack)
                if sel.empty:
                    continue
                where = (r["id"], r.get("sparsity", s), attack)
                rec, others = _pick(sel)
                if others:
                    used = rec["run_id"].iloc[0]
                    notes.append((*where, f"newest of {len(others) + 1} records used ({used}; "
                                  f"also {', '.join(others)})", ()))  # fmt: skip
                line.update(_describe(rec.iloc[0].to_dict()))
                if timing_dependent(rec):
                    notes.append((*where, f"{TIMING} (n_limit > 0)", (rec["run_id"].iloc[0],)))
                ref_id = r.get("reference", spec.get("reference"))
                ref = (_at(member[ref_id], rows[ref_id].get("sparsity", s), attack)
                       if ref_id and ref_id != r["id"] else None)  # fmt: skip
                if ref is not None and not ref.empty:
                    ref_rec = _pick(ref)[0]
                    pair = (threat_hash(rec.iloc[0]), threat_hash(ref_rec.iloc[0]))
                    if pair[0] != pair[1]:  # two threat models: never paired
                        notes.append((*where, f"not paired: threat model {pair[0]}, its "
                                      f"reference's {pair[1]}", ()))  # fmt: skip
                        continue
                    line.update(_paired(rec, ref_rec, where, notes))
    return pd.DataFrame(out).reindex(columns=COLUMNS), group_notes(notes)


def group_notes(notes: list[tuple]) -> list[str]:
    """One line per (row, message): the cells it holds for, and the records it names.

    ``notes`` are ``(row, sparsity, attack, message, record ids)``; the same message on several
    cells of a row (a dense-model mismatch under every attack) is said once."""
    groups: dict[tuple[str, str], tuple[dict[float, list[str]], list[str]]] = {}
    for row, s, attack, message, ids in notes:
        cells, runs = groups.setdefault((row, message), ({}, []))
        cells.setdefault(s, []).append(attack)
        runs.extend(i for i in ids if i not in runs)
    lines = []
    for (row, message), (cells, runs) in groups.items():
        attacks = list(cells.values())
        if all(a == attacks[0] for a in attacks):
            where = f"{', '.join(f'{s:g}' for s in cells)} ({', '.join(attacks[0])})"
        else:
            where = ", ".join(f"{s:g} ({', '.join(a)})" for s, a in cells.items())
        tail = f" ({', '.join(runs)})" if runs else ""
        lines.append(f"{row} at {where}: {message}{tail}")
    return lines


def _pct(v: Any, lo: Any = None, hi: Any = None) -> str:
    if v is None or pd.isna(v):
        return ""
    text = f"{100 * v:.1f}"
    if lo is not None and not pd.isna(lo):
        text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return text


def _bracket(h: Any) -> str:
    """`` [<threat-model hash>]`` after an attack's name; empty for a record without one."""
    return "" if h is None or pd.isna(h) or h == "" else f" [{h}]"


def _num(v: Any) -> str:
    return "" if v is None or pd.isna(v) else f"{100 * v:.2f}"


def _delta(v: Any, lo: Any = None, hi: Any = None, p: Any = None) -> str:
    if v is None or pd.isna(v):
        return ""
    text = f"{100 * v:+.2f}"
    if lo is not None and not pd.isna(lo):
        text += f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    if p is not None and not pd.isna(p):
        text += f" (p {p:.2g})"
    return text


def render_markdown(table: pd.DataFrame, spec: dict[str, Any], notes: list[str],
                    records: pd.DataFrame | None = None) -> str:  # fmt: skip
    """The table as Markdown: a caption, then one line per (sparsity, row, attack); then the
    threat models, timing and left-out attack logs of ``records`` (the table's candidates)."""
    labels = {r["id"]: r.get("label", r["id"]) for r in spec["rows"]}
    refs = {r["id"]: r.get("reference", spec.get("reference")) for r in spec["rows"]}
    n = spec.get("num_examples")
    sample = "the whole split" if n == 0 else f"the seeded {n} sentences"
    lines = [
        f"# Effects: {spec.get('title', spec['name'])}",
        "",
        f"Experiment `{spec['experiment']}`, seed {spec.get('seed', 0)}, attacks on {sample}; "
        "clean % = accuracy on the whole validation split, attacked Clean / Aua / Suc % on "
        "the attack's sample, Wilson 95% intervals. Δ = row minus its reference on the same "
        "sentences: clean on the attack log's examples (exact McNemar p), Aua by paired "
        "bootstrap [95% interval] (exact McNemar p); one seed, not adjusted for multiplicity. "
        "Prune s: the job's own wall time (CPU load differs between jobs). "
        f"Generated by `python -m benchmark.aggregate --effects {spec['name']}` from "
        f"`conf/effects/{spec['name']}.yaml`. The attack column names the record's threat "
        "model in brackets (a row and its reference of two threat models are not paired).",
        "",
        "| sparsity | row | vs | attack | record | actual % | clean % | attacked Clean % "
        "| Aua % | Suc % | Δ clean (p) | Δ Aua [95% CI] (p) | prune s |",
        "|---:|---|---|---|---|---:|---|---|---|---|---|---|---:|",
    ]
    for x in table.to_dict("records"):
        ref = refs[x["row"]]
        vs = "" if not ref or ref == x["row"] else labels[ref]
        if pd.isna(x["run_id"]):
            lines.append(f"| {100 * x['sparsity']:g}% | {labels[x['row']]} | {vs} | "
                         f"{x['attack']} | not run | | | | | | | | |")  # fmt: skip
            continue
        secs = "" if pd.isna(x["prune_seconds"]) else f"{x['prune_seconds']:,.0f}"
        lines.append(
            f"| {100 * x['sparsity']:g}% | {labels[x['row']]} | {vs} | {x['attack']}"
            f"{_bracket(x['threat_model'])} | `{x['run_id']}` | {_num(x['sparsity_actual'])} | "
            f"{_pct(x['clean_acc'], x['clean_lo'], x['clean_hi'])} | "
            f"{_pct(x['attack_clean_acc'], x['attack_clean_lo'], x['attack_clean_hi'])} | "
            f"{_pct(x['aua'], x['aua_lo'], x['aua_hi'])} | "
            f"{_pct(x['asr'], x['asr_lo'], x['asr_hi'])} | "
            f"{_delta(x['delta_clean'], p=x['clean_p'])} | "
            f"{_delta(x['delta_aua'], x['delta_lo'], x['delta_hi'], x['aua_p'])} | {secs} |"
        )
    if notes:
        lines += ["", "Notes:", ""] + [f"- {t}" for t in notes]
    if records is not None:
        extra = caption_notes(records)
        if extra:
            lines += ["", extra]
    return "\n".join(lines) + "\n"


def write_effects(df: pd.DataFrame, name: str, results_dir: Path) -> Path:
    """Write ``tables/effects_<name>.{md,csv}``; return the Markdown path."""
    spec = load_spec(name)
    table, notes = effects_table(df, spec)
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"effects_{spec['name']}.csv", index=False)
    md = out / f"effects_{spec['name']}.md"
    md.write_text(render_markdown(table, spec, notes, _candidates(df, spec)), encoding="utf-8")
    return md
