r"""Paper tables rebuilt from run records, beside the published numbers.

A table spec (``conf/table/<name>.yaml``) gives the paper's layout: which rows (e.g. sparsity
x method), which column groups (e.g. datasets or attacks), which metrics per group, and how a
paper method name maps to our records (``pruner`` and dense ``recipe``). :func:`build_table`
is a pure function ``(records DataFrame, spec) -> display DataFrame``: every metric cell gets
three columns, ``ours`` (mean±std over seeds [95% interval], in the paper's units; see
docs/statistics.md), ``paper`` (the published value from
``benchmark/reference/paper_results.csv``) and ``Δ`` (ours − paper); :func:`build_tables` also
returns the numbers behind them as separate columns (the CSV). ``Clean%`` is the accuracy on
the attacked sample, ``Acc% (split)`` the accuracy on the whole evaluation split. An empty cell
says why: ``not run``, ``failed: <error>``, or ``n/a: <reason>`` for a method this benchmark
does not implement. :func:`render_markdown` and :func:`render_latex` write it out.

What is shown (:func:`compact_table`, used by both renderers; the CSV keeps every column):

- **Clean once per dataset.** ``Clean%`` is the accuracy on the attacked sample. The sample is
  a fixed, seeded draw of ``attack.num_examples`` examples of the split
  (``data.loading.sample_indices(n, k, seed)``), the same for every attack, and an example
  counts as clean when the model classifies it correctly before the attack (successful,
  failed or limit), so for one model and one sample Clean does not depend on the attack. It
  does differ when attacks ran on different samples (e.g. 872 sentences for the headline
  attacks, 100 for the others) or when a cell mixes other seeds or records. So, among the
  attack columns of one dataset (columns that differ only in ``attack``), those whose Clean
  cells agree in **every** row share one column: ``Clean%`` when all of the dataset's
  attacks agree, ``Clean% (A, B)`` for a subset; an attack whose Clean disagrees with the
  others in any row keeps its own column. Cells agree when their texts are equal (mean, std,
  interval and notes as displayed); a cell without a value (``not run``, ``failed: ...``,
  ``n/a: ...``, which its Aua/Suc cells repeat) agrees with any value, and so do an
  unpublished ``paper`` (``—``) and an empty ``Δ``. ``Acc% (split)`` (the whole split, no
  sample at all) is treated the same way where a spec lists it per attack.
- **Columns empty in every row are left out**: ``paper``/``Δ`` where nothing is published,
  ``#Param``/``Re-T`` without reference values, ``Degenerate`` when no row is.
- Cells are shown as built (intervals, ``n=k/N``, ``k failed``, ``1 of k configs``); a cell
  never averages configurations (:func:`one_configuration`).

The LaTeX is written by pandas' ``Styler.to_latex`` (needs jinja2): booktabs rules, one header
row per level (dataset or attack, metric, ours/paper/Δ) with ``\multicolumn`` spans and
``\cmidrule`` under them, the spec's title and caption, ``\label{tab:<name>[_<variant>]}``;
cells and headers are escaped with :func:`latex_escape` (``%``, ``_``, ``±``, ``Δ``, ...).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.cells import cell_stats, is_degenerate
from benchmark.reporting.provenance import TIMING
from benchmark.reporting.records import dedupe, is_default_pruner, pruner_is

ROOT = Path(__file__).resolve().parents[2]
TABLE_DIR = ROOT / "conf" / "table"
REFERENCE_CSV = Path(__file__).resolve().parents[1] / "reference" / "paper_results.csv"

MISSING_PAPER = "—"  # the paper publishes no number for this cell
CONTEXT_KEYS = ("model", "dataset", "attack", "method", "sparsity")


@dataclass(frozen=True)
class Metric:
    """One reported quantity: record column, scale to the paper's unit, reference column."""

    column: str  # column of the records DataFrame
    reference: str  # column of paper_results.csv
    label: str  # header in the paper's table
    scale: float = 100.0  # fractions -> percent
    decimals: int = 1


METRICS: dict[str, Metric] = {
    # Clean% beside Aua%/Suc%: accuracy on the attacked sample (Aua <= Clean by construction)
    "clean": Metric("attack_clean_acc", "clean", "Clean%"),
    # accuracy on the whole evaluation split (e.g. all 872 SST-2 validation sentences)
    "acc": Metric("clean_acc", "clean", "Acc% (split)"),
    "aua": Metric("aua", "aua", "Aua%"),
    "suc": Metric("asr", "suc", "Suc%"),
    "queries": Metric("avg_queries", "queries", "#Query", scale=1.0),
}

DEFAULT_LABELS: dict[str, dict[Any, str]] = {
    "dataset": {"sst2": "SST-2", "agnews": "AG News", "imdb": "IMDB", "tiny": "tiny"},
    "attack": {
        "textfooler": "TextFooler", "textbugger": "TextBugger", "bertattack": "BERT-Attack",
        "bertattack_robustt": "BERT-Attack (RobustT)", "pwws": "PWWS",
        "deepwordbug": "DeepWordBug", "bae": "BAE",
    },
    "model": {"bert_base_uncased": "BERT-base", "minilm_l6": "MiniLM-L6"},
}  # fmt: skip

ROW_INFO_LABELS = {"params_m": "#Param (M)", "retrain": "Re-T"}


@dataclass
class TableSpec:
    """A paper table's layout and the mapping from its method names to our records."""

    name: str
    title: str
    reference_table: str | None = None  # value of the ``table`` column in paper_results.csv
    caption: str = ""
    experiments: list[str] = field(default_factory=list)  # record exp_name filter ([] = any)
    fixed: dict[str, Any] = field(default_factory=dict)  # context shared by every cell
    row_keys: list[str] = field(default_factory=list)  # row label columns, in order
    rows: list[dict[str, Any]] = field(default_factory=list)  # expanded row contexts
    row_info: list[str] = field(default_factory=list)  # reference-only columns (params_m...)
    row_metrics: list[str] = field(default_factory=list)  # metrics shown once per row
    columns: list[dict[str, Any]] = field(default_factory=list)  # column groups
    metrics: list[str] = field(default_factory=list)  # metrics per column group
    labels: dict[str, dict[Any, str]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: int | None = None  # seeds the protocol asks for (cells with fewer say so)
    substitute: dict[str, dict[str, str]] = field(default_factory=dict)  # variant renames
    variant: str | None = None
    sweeps: list[str] = field(default_factory=list)  # scripts/reproduce.sh: the sweeps behind it
    variant_args: dict[str, str] = field(default_factory=dict)  # extra sweep args per variant
    summaries: list[str] = field(default_factory=list)  # compact summaries rebuilt with it

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TableSpec:
        """Build a spec from its YAML dict; list values in ``rows`` expand as a product. A key
        or value this module would not read raises :class:`SpecError` naming it (see
        :func:`check_spec`)."""
        check_spec(raw, set(cls.__dataclass_fields__))
        data = dict(raw)
        data["rows"] = list(expand_rows(data.get("rows") or []))
        labels = data.get("labels") or {}
        data["labels"] = {k: {_norm(a): b for a, b in v.items()} for k, v in labels.items()}
        return cls(**data)

    def label(self, key: str, value: Any) -> str:
        """Display label of a context value (spec labels, then defaults, then formatted)."""
        v = _norm(value)
        if v in self.labels.get(key, {}):
            return self.labels[key][v]
        if v in DEFAULT_LABELS.get(key, {}):
            return DEFAULT_LABELS[key][v]
        if key == "sparsity" and isinstance(v, float):
            return f"{v * 100:g}%"
        return str(value)

    def record_label(self, key: str, value: Any) -> str:
        """Display label of a record's value: a variant's substitute (e.g. ``minilm_l6``,
        ``textfooler_offline``) reads as the spec's name it stands for, as in the table."""
        back = {_norm(b): a for a, b in self.substitute.get(key, {}).items()}
        return self.label(key, back.get(_norm(value), value))


class SpecError(ValueError):
    """A table spec with a key or value that would be ignored or misread (a typo)."""


# Record columns a ``methods`` selector may test besides the record's own fields: the ones the
# loader adds (benchmark.reporting.records.load_records), ``missing`` (why a method has
# no records: an ``n/a`` cell) and ``settings`` (pruner keys the method sets: its records only).
SELECTOR_EXTRA = ("dense", "budget", "logger_mode", "model_label", "missing", "settings")


def _unknown(what: str, given: Iterable[Any], valid: Iterable[str]) -> None:
    import difflib

    valid = sorted(valid)
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"unknown {what} {key!r}{hint}; valid: {', '.join(valid)}")


def check_spec(raw: Any, fields: set[str]) -> None:
    """Every key of a table spec is one this module reads, where it reads it: the top-level
    keys, the context keys of ``fixed``, ``rows``, ``columns``, ``row_keys`` and ``labels``
    (``model``, ``dataset``, ``attack``, ``method``, ``sparsity``; a column also takes
    ``label``), ``row_info``, the metrics, and the record columns a ``methods`` selector tests.
    A typo would otherwise be dropped silently (a misspelled ``fixed`` key matches every
    record), so it raises :class:`SpecError` naming the key and a close valid one."""
    from benchmark.records.store import RunRecord

    if not isinstance(raw, Mapping):
        raise SpecError(f"a table spec is a mapping of keys, got {type(raw).__name__}")
    _unknown("key", raw, fields)
    for key in ("name", "title"):
        if not raw.get(key):
            raise SpecError(f"missing key {key!r}")
    for key, kind in (("fixed", Mapping), ("labels", Mapping), ("methods", Mapping),
                      ("rows", list), ("columns", list), ("row_keys", list),
                      ("row_info", list), ("metrics", list), ("row_metrics", list)):  # fmt: skip
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            shape = "a mapping" if kind is Mapping else "a list"
            raise SpecError(f"{key} must be {shape}, got {type(raw[key]).__name__}")
    for key in ("rows", "columns"):
        for item in raw.get(key) or []:
            if not isinstance(item, Mapping):
                raise SpecError(f"each entry of {key} is a mapping, got {item!r}")
            extra = ("label",) if key == "columns" else ()
            _unknown(f"key in {key}", item, (*CONTEXT_KEYS, *extra))
    _unknown("key in fixed", raw.get("fixed") or {}, CONTEXT_KEYS)
    _unknown("key in labels", raw.get("labels") or {}, CONTEXT_KEYS)
    _unknown("entry of row_keys", raw.get("row_keys") or [], CONTEXT_KEYS)
    _unknown("entry of row_info", raw.get("row_info") or [], ROW_INFO_LABELS)
    for key in ("metrics", "row_metrics"):
        _unknown(f"metric in {key}", raw.get(key) or [], METRICS)
    columns = (*RunRecord.__dataclass_fields__, *SELECTOR_EXTRA)
    for method, selector in (raw.get("methods") or {}).items():
        if selector is not None and not isinstance(selector, Mapping):
            raise SpecError(f"methods.{method} must be a mapping of record columns")
        _unknown(f"record column in methods.{method}", selector or {}, columns)


def expand_rows(rows: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, Any]]:
    """``{sparsity: 0.5, method: [a, b]}`` -> ``{sparsity: 0.5, method: a}``, ``{..., b}``."""
    for row in rows:
        keys = list(row)
        values = [v if isinstance(v, list) else [v] for v in row.values()]
        for combo in itertools.product(*values):
            yield dict(zip(keys, combo, strict=False))


def load_spec(name_or_path: str | Path, variant: str | None = None) -> TableSpec:
    """Load ``conf/table/<name>.yaml`` (or a path), optionally applying a variant."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = TABLE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            valid = ", ".join(table_names())
            raise SpecError(f"no table spec {str(name_or_path)!r}; valid: {valid}")
    elif not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise SpecError(f"table spec file {path} {what}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = TableSpec.from_dict(raw)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise SpecError(f"table spec {path}{line} is not valid YAML: "
                        f"{getattr(exc, 'problem', None) or exc}") from exc  # fmt: skip
    except (SpecError, UnicodeDecodeError) as exc:
        raise SpecError(f"table spec {path}: {exc}") from exc
    if variant:
        spec = apply_variant(spec, variant)
    return spec


def table_names() -> list[str]:
    """Names of the table specs under ``conf/table`` (files starting with ``_`` excluded)."""
    return sorted(p.stem for p in TABLE_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def apply_variant(spec: TableSpec, variant: str, variants_file: Path | None = None) -> TableSpec:
    """The spec with a variant's renames (e.g. embedded model, offline attacks) and caption."""
    import yaml

    path = variants_file or TABLE_DIR / "_variants.yaml"
    variants = yaml.safe_load(path.read_text(encoding="utf-8"))
    if variant not in variants:
        raise SpecError(f"unknown variant {variant!r}; valid: {', '.join(sorted(variants))}")
    v = variants[variant]
    out = copy.deepcopy(spec)
    out.variant = variant
    out.substitute = {k: dict(m) for k, m in (v.get("substitute") or {}).items()}
    out.caption = f"{spec.caption} **Variant `{variant}`:** {v['caption']}".strip()
    out.title = f"{spec.title} [{variant}]"
    return out


def load_reference(path: Path = REFERENCE_CSV) -> pd.DataFrame:
    """The published numbers (one row per table, dataset, attack, method, sparsity)."""
    return pd.read_csv(path)


def _norm(value: Any) -> Any:
    """Normalise context values so 0.5, '0.5' and 0.50 compare equal."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 6)
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return value


# ---------------------------------------------------------------------------------------------
# Selecting records and reference rows for one cell


def _record_mask(df: pd.DataFrame, spec: TableSpec, ctx: Mapping[str, Any]) -> pd.Series:
    """Boolean mask of the records that belong to a cell context."""
    mask = pd.Series(True, index=df.index)
    if spec.experiments and "exp_name" in df:
        mask &= df["exp_name"].isin(spec.experiments)
    for key in ("model", "dataset", "attack"):
        if key in ctx and key in df:
            mask &= df[key] == spec.substitute.get(key, {}).get(ctx[key], ctx[key])
    if "sparsity" in ctx and "sparsity_target" in df:
        mask &= (df["sparsity_target"].astype(float) - float(ctx["sparsity"])).abs() < 1e-6
    if "method" in ctx:
        selector = method_selector(spec, ctx["method"])
        for col, want in selector.items():
            if col in ("missing", "settings"):
                continue
            mask &= df[col] == want if col in df else False
        if "_identity" in df and _has_settings(selector, spec):
            mask &= np.array([_settings_match(i, selector, spec) for i in df["_identity"]])
    return mask


def _has_settings(selector: Mapping[str, Any], spec: TableSpec) -> bool:
    """Whether the method or another of the same pruner names pruner settings."""
    return "pruner" in selector and any(
        m.get("settings") and m.get("pruner") == selector["pruner"]
        for m in [selector, *spec.methods.values()]
    )


def _settings_match(identity: str, selector: Mapping[str, Any], spec: TableSpec) -> bool:
    """A method with ``settings`` (e.g. ``{calibration: sst2}``) takes only the records of its
    pruner at those settings; a method of the same pruner without settings takes the others."""
    pruner = str(selector["pruner"])
    if selector.get("settings"):
        return pruner_is(identity, pruner, tuple(selector["settings"].items()))
    siblings = [m["settings"] for m in spec.methods.values()
                if m.get("settings") and m.get("pruner") == pruner]  # fmt: skip
    return not any(pruner_is(identity, pruner, tuple(s.items())) for s in siblings)


def method_selector(spec: TableSpec, method: str) -> dict[str, Any]:
    """Record columns identifying a paper method (default: ``pruner == method``)."""
    return dict(spec.methods.get(method) or {"pruner": method})


def _reference_rows(ref: pd.DataFrame, spec: TableSpec, ctx: Mapping[str, Any]) -> pd.DataFrame:
    if ref is None or ref.empty or not spec.reference_table:
        return ref.iloc[0:0] if ref is not None else pd.DataFrame()
    mask = ref["table"] == spec.reference_table
    for key, col in (("dataset", "dataset"), ("attack", "attack"), ("method", "method")):
        if key in ctx:
            mask &= ref[col] == ctx[key]
    if "sparsity" in ctx:
        mask &= (ref["sparsity"].astype(float) - float(ctx["sparsity"])).abs() < 1e-6
    return ref[mask]


# ---------------------------------------------------------------------------------------------
# Formatting


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _fmt_paper(x: float, decimals: int) -> str:
    """A published value as published: at least ``decimals`` places, more if the paper has them."""
    text = _fmt(x, decimals)
    return text if float(text) == x else repr(x)


def _cell_stats(cell: pd.DataFrame, metric: Metric) -> dict[str, Any]:
    """Mean, std, n and interval of a cell's ok records (``cells.cell_stats``)."""
    ok = cell[cell["status"] == "ok"] if "status" in cell else cell
    st = cell_stats(ok, metric.column) if len(ok) else {"n": 0}
    return st


def _why_unmeasured(ok: pd.DataFrame, metric: Metric) -> str:
    """Why a cell's ok records hold no value of ``metric`` (the cell says so, not a bare dash).

    Suc% and #Query are defined over the attacked examples the model classified correctly: when
    it got every one wrong, the attack had nothing to search."""
    if "attack" in ok and (ok["attack"] == "none").all():
        return "no attack ran"
    if metric.column in ("asr", "avg_queries") and {"n_total", "n_skipped"} <= set(ok):
        total, skipped = ok["n_total"].fillna(0), ok["n_skipped"].fillna(0)
        if (total > 0).all() and (skipped == total).all():
            return "every attacked example was already misclassified"
    return f"no {metric.column} in the records"


def _ours(
    cell: pd.DataFrame, metric: Metric, spec: TableSpec, threat: str | None = None,
    shown: list[pd.DataFrame] | None = None,
) -> tuple[str, float | None, dict[str, Any]]:  # fmt: skip
    """Text, mean and numbers of our value for a cell's records (or the reason it is empty).

    ``threat``: the column's threat-model hash; a cell whose records are all of another one is
    left out (``other threat model (<hash>)``), never shown in this column. ``shown`` receives
    the records the value is computed from."""
    from benchmark.reporting.provenance import OTHER_THREAT_MODEL, threat_hash, timing_dependent

    ok = cell[cell["status"] == "ok"] if "status" in cell else cell
    failed = cell[cell["status"] != "ok"] if "status" in cell else cell.iloc[0:0]
    if threat is not None and len(ok):
        hashes = [threat_hash(r) for r in ok.to_dict("records")]
        if threat not in hashes:
            other = ", ".join(sorted({h for h in hashes if h})) or "none"
            return f"{OTHER_THREAT_MODEL} ({other})", None, {"n": 0}
        ok = ok[[h == threat for h in hashes]]
    ok, configs = one_configuration(ok)
    if shown is not None and len(ok):
        shown.append(ok)
    st = _cell_stats(ok, metric) if metric.column in ok else {"n": 0}
    if not st.get("n"):
        if len(ok):
            return f"not measured: {_why_unmeasured(ok, metric)}", None, st
        if len(failed):
            errors = failed["error"].dropna().astype(str) if "error" in failed else []
            msg = errors.iloc[0] if len(errors) else "unknown error"
            msg = msg if len(msg) <= 60 else msg[:57] + "..."
            return f"failed: {msg}", None, st
        return "not run", None, st
    k = metric.scale
    mean = st["mean"] * k
    text = _fmt(mean, metric.decimals)
    if st["n"] > 1 and not pd.isna(st["std"]):
        text += "±" + _fmt(st["std"] * k, metric.decimals)
    lo, hi = st.get("ci_low"), st.get("ci_high")
    if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        text += f" [{_fmt(lo * k, metric.decimals)}, {_fmt(hi * k, metric.decimals)}]"
    notes = []
    if spec.seeds and st["n"] < spec.seeds:
        notes.append(f"n={st['n']}/{spec.seeds}")
    if len(failed):
        notes.append(f"{len(failed)} failed")
    if configs > 1:
        notes.append(f"1 of {configs} configs")
    if timing_dependent(ok):
        notes.append(TIMING)
    if notes:
        text += f" ({', '.join(notes)})"
    return text, mean, st


def _model_key(identity: str) -> str:
    """A configuration without its attack: what the model is (pruner, dense, data, ...)."""
    import json

    d = json.loads(identity)
    d.pop("attack", None)
    d.pop("_record", None)
    (d.get("choices") or {}).pop("attack", None)
    return json.dumps(d, sort_keys=True)


def _attack_key(identity: str) -> str:
    import json

    return json.dumps(json.loads(identity).get("attack"), sort_keys=True, default=str)


def one_configuration(ok: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The records of ONE configuration among a cell's records, and how many the cell had.

    A cell never averages configurations (e.g. a version-1 and a version-2 AKR, or an attack
    on 100 and on all 872 sentences). The configuration shown is, in order: the one whose
    pruner settings are the option's current defaults, then the one attacked on the most
    examples (``n_total``), then the one with the most records; the cell then says
    ``1 of k configs``. A cell over several attacks (the whole split's accuracy) counts only
    the model's configuration, since the attack does not change it.
    """
    if "_identity" not in ok or len(ok) < 2:
        return ok, 1
    ok = ok.assign(_model=[_model_key(i) for i in ok["_identity"]],
                   _attack=[_attack_key(i) for i in ok["_identity"]])  # fmt: skip
    n_configs = ok["_model"].nunique()
    if n_configs > 1:

        def rank(group: pd.DataFrame) -> tuple:
            default = is_default_pruner(group["_identity"].iloc[0])
            size = float(group["n_total"].max()) if "n_total" in group else 0.0
            return (default, 0.0 if pd.isna(size) else size, len(group))

        best = max(ok.groupby("_model", sort=True), key=lambda kv: rank(kv[1]))[0]
        ok = ok[ok["_model"] == best]
    ok, lineages = _one_dense_model(ok)
    n_configs += lineages - 1
    if ok["attack"].nunique() == 1 and ok["_attack"].nunique() > 1:  # one attack, two samples
        n_configs += ok["_attack"].nunique() - 1
        sizes = ok.groupby("_attack")["n_total"].max() if "n_total" in ok else None
        best = sizes.fillna(0).idxmax() if sizes is not None else sorted(ok["_attack"])[0]
        ok = ok[ok["_attack"] == best]
    return ok.drop(columns=["_model", "_attack"]), n_configs


def _one_dense_model(ok: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The records of one configuration pruned from ONE dense model per seed, and how many
    such lineages there were.

    The same configuration run by two versions of the code (the first 100-sentence records and
    the full-split rerun) can have the same identity but different dense models
    (``dense_info.key``) for one seed; a cell must not average the two. Lineages are told
    apart by ``schema_version`` when that separates the dense models, else by the dense model;
    the one shown has the largest attacked sample, then the most records, then the newest
    schema.
    """
    col = "dense_info.key"
    if col not in ok or ok[col].isna().all() or len(ok) < 2:
        return ok, 1
    seed = ok["seed"].astype(str) if "seed" in ok else pd.Series("0", index=ok.index)
    dense = ok[col].astype(str)
    if (dense.groupby(seed).nunique() <= 1).all():
        return ok, 1
    schema = ok["schema_version"] if "schema_version" in ok else pd.Series(0, index=ok.index)
    by_schema = pd.DataFrame({"s": seed, "v": schema.astype(str), "d": dense})
    if (by_schema.groupby(["s", "v"])["d"].nunique() <= 1).all():
        lineage = schema.astype(str)
    else:
        lineage = dense
    size = ok["n_total"] if "n_total" in ok else pd.Series(0.0, index=ok.index)
    ranked = []
    for name, idx in ok.groupby(lineage.to_numpy(), sort=True).groups.items():
        sub = ok.loc[idx]
        top = size.loc[idx].max()
        newest = pd.to_numeric(schema.loc[idx], errors="coerce").max()
        ranked.append(((0.0 if pd.isna(top) else float(top), len(sub),
                        0.0 if pd.isna(newest) else float(newest), str(name)), idx))  # fmt: skip
    best = max(ranked, key=lambda t: t[0])[1]
    return ok.loc[best], len(ranked)


def _paper(rows: pd.DataFrame, metric: Metric) -> float | None:
    if rows.empty or metric.reference not in rows:
        return None
    vals = rows[metric.reference].dropna()
    return float(vals.iloc[0]) if len(vals) else None


def _delta(ours: float | None, paper: float | None, decimals: int) -> str:
    if ours is None or paper is None or math.isnan(paper):
        return ""
    return f"{ours - paper:+.{decimals}f}"


def _metric_cells(
    prefix: str, df: pd.DataFrame, ref: pd.DataFrame, spec: TableSpec, ctx: dict[str, Any],
    metrics: list[str], numeric: dict[str, Any] | None = None, threat: str | None = None,
    shown: list[pd.DataFrame] | None = None,
) -> dict[str, str]:  # fmt: skip
    """The ``ours``/``paper``/``Δ`` columns of the metrics of one cell context.

    ``numeric`` (when given) receives the numbers behind them: ``<head> mean|std|ci_low|
    ci_high|n|ci|paper`` in the paper's units, and ``degenerate`` (OR over the row's cells).
    """
    out: dict[str, str] = {}
    method = ctx.get("method")
    missing = method_selector(spec, method).get("missing") if method else None
    cell = df[_record_mask(df, spec, ctx)] if not df.empty else df
    ref_rows = _reference_rows(ref, spec, ctx)
    for name in metrics:
        m = METRICS[name]
        head = f"{prefix}{m.label}"
        st: dict[str, Any] = {}
        if missing:
            ours_text, ours_val = f"n/a: {missing}", None
        else:
            ours_text, ours_val, st = _ours(cell, m, spec, threat, shown)
        paper_val = _paper(ref_rows, m)
        out[f"{head} ours"] = ours_text
        out[f"{head} paper"] = (
            MISSING_PAPER if paper_val is None else _fmt_paper(paper_val, m.decimals)
        )
        out[f"{head} Δ"] = _delta(ours_val, paper_val, m.decimals)
        if numeric is not None:
            for part in ("mean", "std", "ci_low", "ci_high"):
                v = st.get(part)
                numeric[f"{head} {part}"] = float("nan") if v is None or pd.isna(v) else v * m.scale
            numeric[f"{head} n"] = st.get("n", 0)
            numeric[f"{head} ci"] = st.get("ci", "")
            numeric[f"{head} paper"] = float("nan") if paper_val is None else paper_val
    if numeric is not None and not missing and len(cell):
        ok = cell[cell["status"] == "ok"] if "status" in cell else cell
        if len(ok) and "clean_acc" in ok:
            clean = cell_stats(ok, "clean_acc")
            if is_degenerate(ok, (clean["ci_low"], clean["ci_high"])):
                numeric["degenerate"] = True
    return out


def _row_info(ref: pd.DataFrame, spec: TableSpec, ctx: dict[str, Any]) -> dict[str, str]:
    """Reference-only row columns (#Param, Re-T) from any dataset of the row."""
    out = {}
    rows = _reference_rows(ref, spec, {k: v for k, v in ctx.items() if k in ("method", "sparsity")})
    for key in spec.row_info:
        vals = rows[key].dropna() if key in rows else []
        val = vals.iloc[0] if len(vals) else None
        if isinstance(val, float) and val.is_integer():
            val = int(val)
        out[ROW_INFO_LABELS.get(key, key)] = MISSING_PAPER if val is None else str(val)
    return out


def build_tables(
    df: pd.DataFrame, spec: TableSpec, reference: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's table from records: the display table (string cells) and its numbers.

    Args:
        df: records (``records.load_records``): columns exp_name, model, dataset, attack,
            pruner, dense, sparsity_target, seed, status, error and the metric columns. A job
            stored twice counts once (``records.dedupe``).
        spec: the table spec.
        reference: published numbers; ``None`` loads ``benchmark/reference/paper_results.csv``.

    Returns:
        ``(display, numbers)``. ``display``: the row labels (``spec.row_keys``, then
        ``spec.row_info``), ``<metric> ours|paper|Δ`` for each row metric and
        ``<group> <metric> ours|paper|Δ`` per column group and metric, then ``Degenerate``.
        ``ours`` reads ``mean±std [95% interval] (notes)`` in the paper's units. ``numbers``:
        the same rows with ``<head> mean|std|ci_low|ci_high|n|ci|paper`` as separate columns.
    """
    ref = load_reference() if reference is None else reference
    if not df.empty and spec.experiments and "exp_name" in df:
        df = df[df["exp_name"].isin(spec.experiments)]  # before dedupe: keep this table's copy
    if not df.empty and "status" in df:
        df = pd.concat([dedupe(df[df["status"] == "ok"]), df[df["status"] != "ok"]])
    out_rows, num_rows = [], []
    threats = [_column_threat(df, spec, col) for col in spec.columns]
    shown: dict[str, list[pd.DataFrame]] = {_group_label(spec, c): [] for c in spec.columns}
    for row in spec.rows:
        ctx_row = {**spec.fixed, **row}
        line: dict[str, str] = {
            k.capitalize(): spec.label(k, row.get(k, "")) for k in spec.row_keys
        }
        line.update(_row_info(ref, spec, ctx_row))
        nums: dict[str, Any] = dict(line)
        line.update(_metric_cells("", df, ref, spec, ctx_row, spec.row_metrics, nums))
        for col, threat in zip(spec.columns, threats, strict=True):
            ctx = {**ctx_row, **{k: v for k, v in col.items() if k != "label"}}
            group = _group_label(spec, col)
            line.update(_metric_cells(f"{group} ", df, ref, spec, ctx, spec.metrics, nums,
                                      threat, shown[group]))  # fmt: skip
        degenerate = bool(nums.pop("degenerate", False))
        line["Degenerate"] = "yes" if degenerate else ""
        nums["degenerate"] = degenerate
        out_rows.append(line)
        num_rows.append(nums)
    display, numbers = pd.DataFrame(out_rows), pd.DataFrame(num_rows)
    # strings only: pandas copies and compares ``attrs`` along with the frame
    display.attrs["threats"] = {g: t for g, t in zip(shown, threats, strict=True) if t}
    display.attrs["columns_note"] = _columns_note(shown, dict(zip(shown, threats, strict=True)),
                                                  df)  # fmt: skip
    return display, numbers


def _column_threat(df: pd.DataFrame, spec: TableSpec, col: Mapping[str, Any]) -> str | None:
    """The threat model of an attack column: the hash of the configuration most of its cells
    would show (ties: the largest attacked sample); ``None`` for a column without attack."""
    from benchmark.reporting.provenance import threat_hash

    if "attack" not in col or df.empty:
        return None
    votes: dict[str, list[float]] = {}
    for row in spec.rows:
        ctx = {**spec.fixed, **row, **{k: v for k, v in col.items() if k != "label"}}
        cell = df[_record_mask(df, spec, ctx)]
        ok = cell[cell["status"] == "ok"] if "status" in cell else cell
        if ok.empty:
            continue
        ok, _ = one_configuration(ok)
        for h in {threat_hash(r) for r in ok.to_dict("records")} - {None}:
            size = float(ok["n_total"].max()) if "n_total" in ok else 0.0
            votes.setdefault(h, []).append(0.0 if pd.isna(size) else size)
    if not votes:
        return None
    return max(votes, key=lambda h: (len(votes[h]), max(votes[h]), h))


def build_table(
    df: pd.DataFrame, spec: TableSpec, reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The display table of :func:`build_tables` (string cells)."""
    return build_tables(df, spec, reference)[0]


def _group_label(spec: TableSpec, col: Mapping[str, Any]) -> str:
    """Header of a column group: its ``label``, else its context's display labels."""
    return col.get("label") or " ".join(spec.label(k, v) for k, v in col.items() if k != "label")


# ---------------------------------------------------------------------------------------------
# Rendering


KINDS = ("ours", "paper", "Δ")
ATTACK_INDEPENDENT = ("acc", "clean")  # given the model and the attacked sample
NO_VALUE = ("not run", "failed: ", "n/a: ")  # ours cells that every metric of the cell repeats


def _is_no_value(text: str) -> bool:
    return text == NO_VALUE[0] or text.startswith(NO_VALUE[1:])


def _merge_cells(
    a: list[tuple[str, str, str]], b: list[tuple[str, str, str]], lenient: bool
) -> list[tuple[str, str, str]] | None:
    """Row-wise union of two ``(ours, paper, Δ)`` columns, or ``None`` where a row disagrees.

    Equal texts agree; a cell without a value (``lenient``: when another metric of the same
    attack repeats it), an unpublished ``paper`` and an empty ``Δ`` agree with anything.
    """
    empty = (
        (lambda t: lenient and _is_no_value(t)),
        (lambda t: t == MISSING_PAPER),
        (lambda t: t == ""),
    )  # fmt: skip
    out = []
    for ra, rb in zip(a, b, strict=True):
        row = []
        for x, y, is_empty in zip(ra, rb, empty, strict=True):
            if x == y or is_empty(y):
                row.append(x)
            elif is_empty(x):
                row.append(y)
            else:
                return None
        out.append(tuple(row))
    return out


def _shared_columns(
    table: pd.DataFrame, spec: TableSpec
) -> tuple[dict[int, list[tuple[tuple[str, str], list[tuple[str, str, str]]]]], set]:
    """Attack-independent metrics shared by attack columns of one dataset (module docstring).

    Returns ``(at, merged)``: ``at[i]``: the shared columns ``((group, metric header), rows)``
    to show before column group ``i``; ``merged``: the ``(i, metric)`` cells they replace.
    """
    families: dict[tuple, list[int]] = {}
    for i, col in enumerate(spec.columns):
        if "attack" in col:
            rest = tuple((k, _norm(v)) for k, v in col.items() if k not in ("label", "attack"))
            families.setdefault(rest, []).append(i)
    lenient = any(m not in ATTACK_INDEPENDENT for m in spec.metrics)
    at: dict[int, list] = {}
    merged: set[tuple[int, str]] = set()
    for rest, idxs in families.items():
        if len(idxs) < 2:
            continue
        family = " ".join(spec.label(k, v) for k, v in rest)
        for name in spec.metrics:
            m = METRICS[name]
            if name not in ATTACK_INDEPENDENT or (not family and name in spec.row_metrics):
                continue
            classes: list[tuple[list[int], list[tuple[str, str, str]]]] = []
            for i in idxs:
                head = f"{_group_label(spec, spec.columns[i])} {m.label}"
                rows = list(zip(*(table[f"{head} {k}"] for k in KINDS), strict=True))
                for members, cls_rows in classes:
                    union = _merge_cells(cls_rows, rows, lenient)
                    if union is not None:
                        members.append(i)
                        cls_rows[:] = union
                        break
                else:
                    classes.append(([i], rows))
            for members, rows in classes:
                if len(members) < 2:
                    continue
                header = m.label
                if len(members) < len(idxs):
                    names = ", ".join(_attack_label(spec, spec.columns[i]) for i in members)
                    header = f"{m.label} ({names})"
                at.setdefault(idxs[0], []).append(((family, header), rows))
                merged |= {(i, name) for i in members}
    return at, merged


def _attack_label(spec: TableSpec, col: Mapping[str, Any]) -> str:
    return col.get("label") or spec.label("attack", col["attack"])


def compact_table(table: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The display table as shown: shared Clean columns, no empty columns (module docstring).

    Columns are three-level tuples ``(group, metric, ours|paper|Δ)``; row labels, row info and
    ``Degenerate`` are ``(name, "", "")``. Joining a tuple's non-empty parts with spaces gives
    :func:`build_tables`' column name wherever nothing was merged.
    """
    if table.empty:
        return table
    cols: dict[tuple[str, str, str], list[str]] = {}
    labels = [k.capitalize() for k in spec.row_keys]
    labels += [ROW_INFO_LABELS.get(k, k) for k in spec.row_info]
    for name in labels:
        if name in table:
            cols[(name, "", "")] = list(table[name])
    for name in spec.row_metrics:
        m = METRICS[name]
        for kind in KINDS:
            cols[("", m.label, kind)] = list(table[f"{m.label} {kind}"])
    at, merged = _shared_columns(table, spec)
    for i, col in enumerate(spec.columns):
        for (family, header), rows in at.get(i, []):
            for j, kind in enumerate(KINDS):
                cols[(family, header, kind)] = [r[j] for r in rows]
        group = _group_label(spec, col)
        for name in spec.metrics:
            if (i, name) in merged:
                continue
            m = METRICS[name]
            for kind in KINDS:
                cols[(group, m.label, kind)] = list(table[f"{group} {m.label} {kind}"])
    if "Degenerate" in table:
        cols[("Degenerate", "", "")] = list(table["Degenerate"])
    row_keys = {(name, "", "") for name in labels[: len(spec.row_keys)]}
    keep = {
        k: v
        for k, v in cols.items()
        if k in row_keys or any(x not in ("", MISSING_PAPER) for x in v)
    }
    out = pd.DataFrame(keep, index=table.index)
    out.columns = pd.MultiIndex.from_tuples(list(keep))
    return out


def _flat(column: tuple[str, ...]) -> str:
    return " ".join(p for p in column if p)


def _blank_repeats(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Show a leading row label only where it changes (the papers' grouped rows)."""
    out = table.copy()
    names = [k.capitalize() for k in keys[:-1]]
    cols = [c for c in out.columns if (c[0] if isinstance(c, tuple) else c) in names]
    for i in range(len(out) - 1, 0, -1):
        for j, col in enumerate(cols):
            same_prefix = all(out.iloc[i][c] == table.iloc[i - 1][c] for c in cols[: j + 1])
            if same_prefix:
                out.iloc[i, out.columns.get_loc(col)] = ""
    return out


def render_markdown(table: pd.DataFrame, spec: TableSpec, plots: list[str] | None = None) -> str:
    """Markdown: title, caption, legend, the table (:func:`compact_table`), links to plots."""
    lines = [f"# {spec.title}", ""]
    if spec.caption:
        lines += [spec.caption.strip(), ""]
    lines += [
        "`ours` = mean over seeds (±sample std when there are several) [95% interval] of our "
        "records; `paper` = published value; `Δ` = ours − paper. Intervals: one seed -> Wilson "
        "score interval from the record's counts; several seeds -> cluster bootstrap over the "
        "examples of the attack logs (10,000 resamples, seed 0; all seeds of an example drawn "
        "together), or the mean of the per-seed Wilson bounds where logs are missing and for "
        "`Acc% (split)`. `Clean%` = accuracy on the attacked sample (beside Aua%/Suc%); "
        "`Acc% (split)` = accuracy on the whole evaluation split. "
        f"{_seed_note(table, spec)}`Degenerate` = yes when clean accuracy lies within its "
        "interval of the majority-class rate (or >= 95% of predictions in one class): such a "
        "model's Aua says nothing about robustness. "
        f"`{MISSING_PAPER}` = not published; `not run` = no record; "
        "`failed: ...` = every record of the cell failed; `n/a` = not in this benchmark; "
        "`not measured: <why>` = the cell's records hold no value of this metric; "
        "`1 of k configs` = the cell's records are of k configurations (e.g. two method "
        "versions, or attacks on 100 and on all sentences); it shows one, never their average: "
        "the option's current defaults, then the largest attacked sample. Attacks of one "
        "dataset whose Clean% agrees in every row (same attacked sample) share one `Clean%` "
        "column (`Clean% (A, B)` for some of them); columns empty in every row are left out "
        "(the CSV has them all). `other threat model (<hash>)` = the cell's records are of "
        "another threat model than its column's (below): left out, never mixed into the column. "
        f"`{TIMING}` = a record of the cell hit a per-example time or query limit "
        "(`n_limit > 0`): its number depends on the machine's speed. See docs/statistics.md.",
        "",
    ]
    columns_note = table.attrs.get("columns_note")
    if columns_note:
        lines += [columns_note, ""]
    if table.empty:
        lines.append("_empty table spec_")
    else:
        shown = _blank_repeats(compact_table(table, spec), spec.row_keys)
        shown.columns = [_flat(c) for c in shown.columns]
        lines.append(shown.to_markdown(index=False, disable_numparse=True))
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _seed_list(seeds: list[int]) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _columns_note(
    shown: dict[str, list[pd.DataFrame]], threats: dict[str, str | None], records: pd.DataFrame
) -> str:
    """What each attack column shows, from the records behind its cells (``shown``): its
    threat model (hash and one-line description), the attacked sample sizes and seeds; then the
    attack logs left out (``_log_problem``) of the table's ``records``."""
    from benchmark.reporting.provenance import log_problem_lines, threat_model_lines

    lines = []
    for group, frames in shown.items():
        threat = threats.get(group)
        if threat is None or not frames:
            continue
        recs = pd.concat(frames)
        if "_path" in recs:
            recs = recs.drop_duplicates(subset="_path")
        sizes = sorted({int(n) for n in recs["n_total"].dropna()}) if "n_total" in recs else []
        seeds = sorted({int(x) for x in recs["seed"].dropna()}) if "seed" in recs else []
        tm = [t for t in threat_model_lines(recs) if f"[{threat}]" in t]
        sample = " or ".join(map(str, sizes)) or "?"
        lines.append(f"- `{group}`: {sample} attacked sentences, {_seed_list(seeds)}; "
                     + (tm[0] if tm else f"threat model {threat}"))  # fmt: skip
    out = []
    if lines:
        out.append("Attack columns (the records shown; threat model as `attack [hash]: ...`):"
                   "\n\n" + "\n".join(lines))  # fmt: skip
    problems = log_problem_lines(records) if len(records) else []
    if problems:
        out.append("Attack logs left out (empty or disagreeing with the record's counts):\n\n"
                   + "\n".join(f"- warning: {t}" for t in problems))  # fmt: skip
    return "\n\n".join(out)


def _seed_note(table: pd.DataFrame, spec: TableSpec) -> str:
    """``n = 1-3 seeds per cell (the protocol asks for 5). `` from the cells' ``(n=k/N)``."""
    asked = f" (the protocol asks for {spec.seeds})" if spec.seeds else ""
    return f"Seeds per cell: shown as `n=k/{spec.seeds}` when fewer{asked}. " if spec.seeds else ""


LATEX_SPECIAL = {
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "[": "[", "]": "]", "≤": r"$\leq$", "—": "--", "−": "-",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters of a cell."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _cmidrules(columns: list[tuple[str, str, str]], level: int) -> str:
    r"""``\cmidrule(lr){a-b}`` under each non-empty header span of ``level`` (value columns)."""
    rules, start = [], 0
    for j in range(1, len(columns) + 1):
        if j == len(columns) or columns[j][: level + 1] != columns[start][: level + 1]:
            wide = j - start > 1 or level == 0  # a single metric column needs no rule
            if columns[start][level] and columns[start][level + 1] and wide:
                rules.append(rf"\cmidrule(lr){{{start + 1}-{j}}}")
            start = j
    return " ".join(rules)


def render_latex(table: pd.DataFrame, spec: TableSpec) -> str:
    """A booktabs ``table`` by ``Styler.to_latex``: group, metric, ours/paper/Δ header rows."""
    label = f"tab:{spec.name}" + (f"_{spec.variant}" if spec.variant else "")
    caption = latex_escape(spec.caption.replace("**", "").replace("`", ""))
    caption = f"{latex_escape(spec.title)}. {caption}".strip()
    threats = [f"{g}: {t}" for g, t in (table.attrs.get("threats") or {}).items()]
    if threats:
        caption += " " + latex_escape("Threat models (hash per attack column): "
                                      + "; ".join(threats) + ".")  # fmt: skip
    shown = compact_table(table, spec)
    if shown.empty:
        shown = pd.DataFrame({("empty table spec", "", ""): []})
        shown.columns = pd.MultiIndex.from_tuples(list(shown.columns))
    shown = _blank_repeats(shown, spec.row_keys)
    columns = list(shown.columns)
    styler = (
        shown.style.hide(axis="index")
        .format(latex_escape)
        .format_index(latex_escape, axis="columns")
        .set_table_styles([{"selector": "scriptsize", "props": ":;"}], overwrite=False)
    )
    tex = styler.to_latex(
        column_format="".join("r" if c[1] else "l" for c in columns), position="t",
        position_float="centering", hrules=True, label=label, caption=caption,
        multicol_align="c", environment="table",
    )  # fmt: skip
    lines = tex.splitlines()
    top = lines.index(r"\toprule")
    for level in (1, 0):  # bottom-up so the line numbers of the earlier rows hold
        rules = _cmidrules(columns, level)
        if rules:
            lines.insert(top + 2 + level, rules)
    return "\n".join(lines) + "\n"


def method_of(record: Mapping[str, Any], spec: TableSpec) -> str:
    """The paper method name of a record (reverse of ``spec.methods``; default its pruner)."""
    ident = record.get("_identity")
    for method, selector in spec.methods.items():
        if "missing" in selector:
            continue
        if all(record.get(k) == v for k, v in selector.items() if k != "settings") and (
            not isinstance(ident, str) or not _has_settings(selector, spec)
            or _settings_match(ident, selector, spec)
        ):  # fmt: skip
            return method
    pruner = record.get("pruner")
    return str(record.get("dense")) if pruner == "none" else str(pruner)


def spec_records(df: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The ok records a spec draws on (its experiments and fixed model), with a method column."""
    if df.empty:
        return df.assign(method=pd.Series(dtype=str))
    mask = df["status"] == "ok"
    if spec.experiments and "exp_name" in df:
        mask &= df["exp_name"].isin(spec.experiments)
    if "model" in spec.fixed and "model" in df:
        model = spec.fixed["model"]
        mask &= df["model"] == spec.substitute.get("model", {}).get(model, model)
    sub = df[mask].copy()
    sub["method"] = [method_of(r, spec) for r in sub.to_dict("records")]
    return sub
