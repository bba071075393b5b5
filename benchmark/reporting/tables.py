"""Paper tables rebuilt from run records, beside the published numbers.

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
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

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
        """Build a spec from its YAML dict; list values in ``rows`` expand as a product."""
        data = dict(raw)
        data["rows"] = list(expand_rows(data.get("rows", [])))
        labels = data.get("labels") or {}
        data["labels"] = {k: {_norm(a): b for a, b in v.items()} for k, v in labels.items()}
        for key in ("metrics", "row_metrics"):
            for m in data.get(key) or []:
                if m not in METRICS:
                    raise ValueError(f"table {data.get('name')}: unknown metric {m!r}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"table {data.get('name')}: unknown keys {sorted(unknown)}")
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
        raise FileNotFoundError(f"no table spec {name_or_path!r}; valid: {valid}")
    spec = TableSpec.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
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
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(sorted(variants))}")
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
            if col == "missing":
                continue
            mask &= df[col] == want if col in df else False
    return mask


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
    """Mean, std, n and interval of a cell's ok records (``aggregate.cell_stats``)."""
    from benchmark.reporting.aggregate import cell_stats

    ok = cell[cell["status"] == "ok"] if "status" in cell else cell
    st = cell_stats(ok, metric.column) if len(ok) else {"n": 0}
    return st


def _ours(
    cell: pd.DataFrame, metric: Metric, spec: TableSpec
) -> tuple[str, float | None, dict[str, Any]]:
    """Text, mean and numbers of our value for a cell's records (or the reason it is empty)."""
    ok = cell[cell["status"] == "ok"] if "status" in cell else cell
    failed = cell[cell["status"] != "ok"] if "status" in cell else cell.iloc[0:0]
    st = _cell_stats(cell, metric) if metric.column in ok else {"n": 0}
    if not st.get("n"):
        if len(ok):
            return "not measured", None, st
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
    configs = _n_configs(ok)
    if configs > 1:
        notes.append(f"{configs} configs")
    if notes:
        text += f" ({', '.join(notes)})"
    return text, mean, st


def _n_configs(ok: pd.DataFrame) -> int:
    """Configurations (without the attack) among a cell's records: > 1 means mixed rows."""
    import json

    if "_identity" not in ok or ok.empty:
        return 1
    seen = set()
    for ident in ok["_identity"].dropna():
        d = json.loads(ident)
        d.pop("attack", None)
        d.pop("_record", None)
        (d.get("choices") or {}).pop("attack", None)
        seen.add(json.dumps(d, sort_keys=True))
    return max(1, len(seen))


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
    metrics: list[str], numeric: dict[str, Any] | None = None,
) -> dict[str, str]:  # fmt: skip
    """The ``ours``/``paper``/``Δ`` columns of the metrics of one cell context.

    ``numeric`` (when given) receives the numbers behind them: ``<head> mean|std|ci_low|
    ci_high|n|ci|paper`` in the paper's units, and ``degenerate`` (OR over the row's cells).
    """
    from benchmark.reporting.aggregate import is_degenerate

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
            ours_text, ours_val, st = _ours(cell, m, spec)
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
            from benchmark.reporting.aggregate import cell_stats

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
        df: records (``aggregate.load_records``): columns exp_name, model, dataset, attack,
            pruner, dense, sparsity_target, seed, status, error and the metric columns. A job
            stored twice counts once (``aggregate.dedupe``).
        spec: the table spec.
        reference: published numbers; ``None`` loads ``benchmark/reference/paper_results.csv``.

    Returns:
        ``(display, numbers)``. ``display``: the row labels (``spec.row_keys``, then
        ``spec.row_info``), ``<metric> ours|paper|Δ`` for each row metric and
        ``<group> <metric> ours|paper|Δ`` per column group and metric, then ``Degenerate``.
        ``ours`` reads ``mean±std [95% interval] (notes)`` in the paper's units. ``numbers``:
        the same rows with ``<head> mean|std|ci_low|ci_high|n|ci|paper`` as separate columns.
    """
    from benchmark.reporting.aggregate import dedupe

    ref = load_reference() if reference is None else reference
    if not df.empty and spec.experiments and "exp_name" in df:
        df = df[df["exp_name"].isin(spec.experiments)]  # before dedupe: keep this table's copy
    if not df.empty and "status" in df:
        df = pd.concat([dedupe(df[df["status"] == "ok"]), df[df["status"] != "ok"]])
    out_rows, num_rows = [], []
    for row in spec.rows:
        ctx_row = {**spec.fixed, **row}
        line: dict[str, str] = {
            k.capitalize(): spec.label(k, row.get(k, "")) for k in spec.row_keys
        }
        line.update(_row_info(ref, spec, ctx_row))
        nums: dict[str, Any] = dict(line)
        line.update(_metric_cells("", df, ref, spec, ctx_row, spec.row_metrics, nums))
        for col in spec.columns:
            ctx = {**ctx_row, **{k: v for k, v in col.items() if k != "label"}}
            group = col.get("label") or " ".join(
                spec.label(k, v) for k, v in col.items() if k != "label"
            )
            line.update(_metric_cells(f"{group} ", df, ref, spec, ctx, spec.metrics, nums))
        degenerate = bool(nums.pop("degenerate", False))
        line["Degenerate"] = "yes" if degenerate else ""
        nums["degenerate"] = degenerate
        out_rows.append(line)
        num_rows.append(nums)
    return pd.DataFrame(out_rows), pd.DataFrame(num_rows)


def build_table(
    df: pd.DataFrame, spec: TableSpec, reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The display table of :func:`build_tables` (string cells)."""
    return build_tables(df, spec, reference)[0]


# ---------------------------------------------------------------------------------------------
# Rendering


def _blank_repeats(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Show a leading row label only where it changes (the papers' grouped rows)."""
    out = table.copy()
    cols = [k.capitalize() for k in keys[:-1] if k.capitalize() in out]
    for i in range(len(out) - 1, 0, -1):
        for j, col in enumerate(cols):
            same_prefix = all(out.iloc[i][c] == table.iloc[i - 1][c] for c in cols[: j + 1])
            if same_prefix:
                out.iloc[i, out.columns.get_loc(col)] = ""
    return out


def render_markdown(table: pd.DataFrame, spec: TableSpec, plots: list[str] | None = None) -> str:
    """Markdown: title, caption, legend, the table, and links to the plots."""
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
        "`k configs` = the cell mixes configurations. See docs/statistics.md.",
        "",
    ]
    if table.empty:
        lines.append("_empty table spec_")
    else:
        lines.append(
            _blank_repeats(table, spec.row_keys).to_markdown(index=False, disable_numparse=True)
        )
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


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


def render_latex(table: pd.DataFrame, spec: TableSpec) -> str:
    """A booktabs ``table`` with one header row per level: group, metric, ours/paper/Δ."""
    shown = _blank_repeats(table, spec.row_keys)
    label_cols = [c for c in shown.columns if not c.endswith((" ours", " paper", " Δ"))]
    value_cols = [c for c in shown.columns if c not in label_cols]
    shown = shown[label_cols + value_cols]
    heads = [c.rsplit(" ", 1) for c in value_cols]  # ("<group> <metric>", kind)
    spans: list[tuple[str, int]] = []
    for head, _ in heads:
        if spans and spans[-1][0] == head:
            spans[-1] = (head, spans[-1][1] + 1)
        else:
            spans.append((head, 1))
    align = "l" * len(label_cols) + "r" * len(value_cols)
    top = [latex_escape(c) for c in label_cols] + [
        rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(h)}}}" for h, n in spans
    ]
    sub = [""] * len(label_cols) + [latex_escape(kind) for _, kind in heads]
    body = [
        " & ".join(latex_escape(v) for v in row) + r" \\" for row in shown.itertuples(index=False)
    ]
    caption = latex_escape(spec.caption.replace("**", "").replace("`", ""))
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\scriptsize",
        rf"\caption{{{latex_escape(spec.title)}. {caption}}}",
        rf"\label{{tab:{spec.name}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
        " & ".join(top) + r" \\", " & ".join(sub) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])  # fmt: skip


def method_of(record: Mapping[str, Any], spec: TableSpec) -> str:
    """The paper method name of a record (reverse of ``spec.methods``; default its pruner)."""
    for method, selector in spec.methods.items():
        if "missing" in selector:
            continue
        if all(record.get(k) == v for k, v in selector.items()):
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
