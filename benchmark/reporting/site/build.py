"""``python -m benchmark.aggregate --site DIR``: the records as a static site.

Every page is a plain HTML file with its stylesheet and script beside it (``assets/``): no
server, no CDN, nothing fetched at view time, so the folder opens from disk and from any static
host. The numbers are the reporting code's, not recomputed here:

- ``index.html``: the leaderboard (:func:`benchmark.reporting.leaderboard.leaderboard`), one
  table per (model, dataset, attack), sortable by any column and filterable by text, model,
  dataset, attack and the degenerate flag;
- ``claims.html``: every pre-registered claims spec (``conf/claims/``) whose experiment has
  records, judged by :func:`benchmark.reporting.claims.judge`;
- ``compare.html``: every paired comparison declared under ``conf/compare/`` whose experiments
  have records (:func:`benchmark.reporting.compare.compare_table`);
- ``plots.html``: clean accuracy and Aua against sparsity with 95% intervals per (model,
  dataset, attack) (:func:`benchmark.reporting.plots.plot_sparsity_curves`);
- ``config/<id>.html``: one configuration: its records (config, provenance, threat model,
  numbers per seed), its plot, and an example browser over each seed's attack log (original
  and perturbed text with the changed words marked, predictions, probability of the true
  label, queries), filterable by result. ``records/<exp>/<run_id>.json``: the records as
  written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark.reporting.cells import format_cell
from benchmark.reporting.leaderboard import leaderboard
from benchmark.reporting.plots import file_slug, plot_sparsity_curves
from benchmark.reporting.provenance import TIMING, threat_block
from benchmark.reporting.records import dedupe, load_records, read_attack_log
from benchmark.reporting.site.examples import example_rows, result_counts

log = logging.getLogger(__name__)

PCT = (("clean_acc", "Clean %"), ("aua", "Aua %"), ("asr", "Suc %"))


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("benchmark.reporting.site", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, NaN)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(v) else v


def _cell(row: pd.Series, metric: str, scale: float = 100.0, fmt: str = "{:.1f}") -> dict:
    """``{"text", "sort", "title"}`` of one leaderboard cell: mean [95% interval]."""
    mu = _num(row.get(f"{metric}_mean"))
    sd = _num(row.get(f"{metric}_std"))
    lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    text = format_cell(mu, None, lo, hi, scale, fmt)
    title = "" if sd is None else f"std over seeds {fmt.format(sd * scale)}"
    return {"text": text, "sort": "" if mu is None else f"{mu * scale:.6g}", "title": title}


def page_id(row: pd.Series) -> str:
    """The file name (without ``.html``) of a configuration's page: a hash of what shows the
    configuration in the leaderboard, so that a new seed keeps the page where it was."""
    keys = ("model", "dense", "dataset", "pruner", "budget", "sparsity_target", "attack",
            "differs")  # fmt: skip
    text = json.dumps([str(row.get(k, "")) for k in keys])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def method_label(row: pd.Series) -> str:
    """How a configuration is named in a plot legend: the pruner, its training budget when it
    is not ``paper``, and what separates it from configurations of the same pruner."""
    label = str(row["pruner"])
    if str(row.get("budget", "paper")) not in ("paper", "nan", "None"):
        label += f" [{row['budget']}]"
    differs = row.get("differs")
    if isinstance(differs, str) and differs:
        label += f" ({differs})"
    return label


def configurations(board: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per leaderboard row: its page, keys, formatted cells and run ids."""
    out = []
    for _, row in board.iterrows():
        target = _num(row["sparsity_target"])
        actual = _num(row.get("sparsity_actual_mean"))
        prune = _num(row.get("prune_seconds_mean"))
        out.append({
            "page": page_id(row), "model": str(row["model"]), "dense": str(row.get("dense")),
            "dataset": str(row["dataset"]), "attack": str(row["attack"]),
            "pruner": str(row["pruner"]), "budget": str(row.get("budget")),
            "differs": row.get("differs") if isinstance(row.get("differs"), str) else "",
            "method": method_label(row), "n": int(row["n"]),
            "sparsity": {"text": f"{100 * target:g}%" if target is not None else "-",
                         "sort": target if target is not None else ""},
            "actual": {"text": "-" if actual is None else f"{100 * actual:.1f}",
                       "sort": "" if actual is None else f"{100 * actual:.6g}"},
            "prune": {"text": "-" if prune is None else f"{prune:.1f}",
                      "sort": "" if prune is None else f"{prune:.6g}"},
            "cells": {m: _cell(row, m) for m, _ in PCT},
            "degenerate": bool(row.get("degenerate")),
            "timing": bool(row.get("timing_dependent")),
            "threat_model": str(row.get("threat_model") or ""),
            "interval": str(row.get("ci_method") or ""),
            "logs": str(row.get("attack_logs") or ""),
            "run_ids": list(row["run_ids"]),
        })  # fmt: skip
    return out


def groups(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaderboard's tables: configurations by (model, dataset, attack), sorted."""
    by: dict[tuple, list] = {}
    for c in configs:
        by.setdefault((c["model"], c["dataset"], c["attack"]), []).append(c)
    return [{"model": m, "dataset": d, "attack": a,
             "rows": sorted(rows, key=lambda c: (c["pruner"], c["sparsity"]["sort"] or 0))}
            for (m, d, a), rows in sorted(by.items())]  # fmt: skip


def _plots(ok: pd.DataFrame, configs: list[dict[str, Any]], out: Path) -> dict[tuple, str]:
    """Write the robustness-vs-sparsity plots; ``(model, dataset, attack) -> relative path``."""
    label = {rid: c["method"] for c in configs for rid in c["run_ids"]}
    paths: dict[tuple, str] = {}
    recs = ok[ok["run_id"].isin(label)].copy()
    if recs.empty:
        return paths
    recs["method"] = recs["run_id"].map(label)
    recs["model"] = (
        recs["model_label"].fillna(recs["model"]) if "model_label" in recs else recs["model"]
    )
    for model, part in recs.groupby("model", sort=True):
        prefix = file_slug(str(model))
        written = {p.name for p in plot_sparsity_curves(part, out, prefix, str(model))}
        for dataset, attack in part.groupby(["dataset", "attack"]).groups:
            name = f"{prefix}_{file_slug(dataset)}_{file_slug(attack)}.png"
            if name in written:
                paths[(str(model), str(dataset), str(attack))] = f"plots/{name}"
    return paths


def _claims(df: pd.DataFrame, n_boot: int) -> list[dict[str, Any]]:
    """Every claims spec whose experiment has records, judged (verdicts and cells, shown)."""
    from benchmark.reporting.claims import CLAIMS_DIR, display_tables, families, judge, load_spec

    exps = set(df["exp_name"].dropna()) if "exp_name" in df else set()
    out = []
    for path in sorted(CLAIMS_DIR.glob("*.yaml")):
        spec = load_spec(path.stem)
        if spec["experiment"] not in exps:
            continue
        log.info("site: judging claims %s", path.stem)
        table, verdicts = judge(df, spec, n_boot=n_boot)
        ver, cells = display_tables(table, verdicts)
        out.append({"name": path.stem, "experiment": spec["experiment"],
                    "attacks": spec["attacks"], "family": [", ".join(f) for f in families(spec)],
                    "alpha": spec.get("alpha", 0.05), "verdicts": ver.to_dict("records"),
                    "cells": _html_table(cells)})  # fmt: skip
    return out


def _comparisons(df: pd.DataFrame, n_boot: int) -> list[dict[str, Any]]:
    """Every comparison declared under ``conf/compare/`` whose experiments have records."""
    from benchmark.reporting.compare import (
        COMPARE_DIR,
        compare_table,
        display_table,
        family_caption,
        load_families,
    )

    exps = set(df["exp_name"].dropna()) if "exp_name" in df else set()
    out = []
    for path in sorted(COMPARE_DIR.glob("*.yaml")):
        fam = load_families(path.stem)
        exp, ref, ref_exp = fam["experiment"], fam["reference"], fam.get("reference_exp")
        if exp not in exps or (ref_exp or exp) not in exps:
            continue
        log.info("site: comparing %s", path.stem)
        entry = {"name": path.stem, "experiment": exp, "reference": ref,
                 "reference_exp": ref_exp or exp}  # fmt: skip
        try:
            table = compare_table(df, exp, ref, n_boot=n_boot, reference_exp=ref_exp,
                                  families=fam)  # fmt: skip
        except ValueError as exc:  # e.g. no records of the reference
            out.append({**entry, "error": str(exc), "caption": "", "table": ""})
            continue
        out.append({**entry, "error": "", "caption": family_caption(table, fam),
                    "table": _html_table(display_table(table))})  # fmt: skip
    return out


def _html_table(frame: pd.DataFrame) -> str:
    """A display frame as an HTML table the site's script can sort and filter (pandas'
    ``to_html``: escaped cells, no index)."""
    return frame.to_html(index=False, border=0, na_rep="-", classes="sortable filterable")


def _record_view(rec: dict[str, Any], row: pd.Series) -> dict[str, Any]:
    """What a configuration page shows of one record: numbers, provenance, threat model."""
    from benchmark.attacks.recipes import threat_model_caption

    block = rec.get("threat_model") or threat_block(row.to_dict())
    try:
        caption = threat_model_caption(block) if block else "no attack"
    except (KeyError, TypeError):
        caption = f"threat model {block.get('hash')}" if isinstance(block, dict) else ""
    dense = rec.get("dense_info") or {}
    prune = rec.get("prune_info") or {}
    provenance = {
        "run id": rec.get("run_id"), "experiment": rec.get("exp_name"),
        "seed": rec.get("seed"), "started": rec.get("started_at"),
        "duration s": _fmt(rec.get("duration_s"), "{:.0f}"),
        "device": rec.get("device"), "precision": rec.get("precision"),
        "git": f"{rec.get('git_sha')}{' (dirty)' if rec.get('git_dirty') else ''}",
        "schema version": rec.get("schema_version"),
        "pruner version": rec.get("pruner_version"), "attack version": rec.get("attack_version"),
        "versions": ", ".join(f"{k} {v}" for k, v in (rec.get("versions") or {}).items()),
        "threads": (rec.get("compute") or {}).get("torch_threads"),
        "dense model": f"{dense.get('key') or dense.get('checkpoint')} (accuracy "
                       f"{_fmt(dense.get('dense_acc'), '{:.4f}')})",
        "pruned weights": f".cache/pruned/{prune.get('key')}" if prune.get("key") else "-",
        "sources": json.dumps(rec.get("sources"), sort_keys=True),
        "warnings": "; ".join(rec.get("warnings") or []) or "-",
        "migrated from": ", ".join(rec.get("migrated_from") or []) or "-",
    }  # fmt: skip
    numbers = {
        "clean %": _pct(rec, "clean_acc"), "attacked clean %": _pct(rec, "attack_clean_acc"),
        "Aua %": _pct(rec, "aua"), "Suc %": _pct(rec, "asr"),
        "sparsity %": _fmt(rec.get("sparsity_actual"), "{:.2%}"),
        "prune s": _fmt(rec.get("prune_seconds"), "{:.1f}"),
        "queries": _fmt(rec.get("avg_queries"), "{:.1f}"),
        "attacked": rec.get("n_total"), "broken": rec.get("n_success"),
        "survived": rec.get("n_failed"), "skipped": rec.get("n_skipped"),
        "limit": rec.get("n_limit"),
    }  # fmt: skip
    return {"run_id": rec.get("run_id"), "exp": rec.get("exp_name"), "seed": rec.get("seed"),
            "provenance": provenance, "numbers": numbers, "threat": block,
            "threat_caption": caption,
            "cfg": yaml.safe_dump(rec.get("cfg") or {}, sort_keys=False, allow_unicode=True),
            "log_problem": row.get("_log_problem") if isinstance(row.get("_log_problem"), str)
            else ""}  # fmt: skip


def _fmt(value: Any, fmt: str) -> str:
    v = _num(value)
    return "-" if v is None else fmt.format(v)


def _pct(rec: dict[str, Any], metric: str) -> str:
    return format_cell(_num(rec.get(metric)), None, rec.get(f"{metric}_ci_low"),
                       rec.get(f"{metric}_ci_high"))  # fmt: skip


def build_site(
    results_dir: Path, out_dir: Path, board: pd.DataFrame | None = None,
    df: pd.DataFrame | None = None, n_boot: int = 10_000,
) -> Path:  # fmt: skip
    """Write the site of the records under ``results_dir`` into ``out_dir``; return the path
    of its ``index.html``. ``board`` (a leaderboard with ``run_ids``) and ``df`` (the loaded
    records) are reused when the caller has them."""
    results_dir, out = Path(results_dir), Path(out_dir)
    df = load_records(results_dir) if df is None else df
    if board is None or "run_ids" not in board:
        board = leaderboard(df, n_boot=n_boot, with_runs=True)
    ok = dedupe(df[df["status"] == "ok"]) if "status" in df else df.iloc[0:0]
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("config", "plots", "records", "assets"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir()
    static = resources.files("benchmark.reporting.site") / "static"
    for item in static.iterdir():
        if item.name.endswith((".css", ".js")):
            (out / "assets" / item.name).write_bytes(item.read_bytes())
    configs = configurations(board) if not board.empty else []
    plots = _plots(ok, configs, out / "plots")
    env = _environment()
    common = {"timing": TIMING, "n_records": len(ok), "n_configs": len(configs)}

    def write(name: str, template: str, root: str = "", **context: Any) -> None:
        html = env.get_template(template).render(root=root, **common, **context)
        (out / name).write_text(html, encoding="utf-8")

    facets = {key: sorted({c[key] for c in configs}) for key in ("model", "dataset", "attack")}
    write("index.html", "leaderboard.html", groups=groups(configs), facets=facets,
          page="leaderboard")  # fmt: skip
    by_run = {str(r["run_id"]): r for _, r in ok.iterrows()}
    for c in configs:
        views = []
        for rid in c["run_ids"]:
            row = by_run[rid]
            rec = json.loads(Path(row["_path"]).read_text(encoding="utf-8"))
            dest = out / "records" / str(rec.get("exp_name")) / f"{rid}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(row["_path"], dest)
            view = _record_view(rec, row)
            rows = read_attack_log(row.get("_log")) or []
            view["examples"] = example_rows(rows)
            view["counts"] = result_counts(view["examples"])
            view["record_file"] = f"records/{rec.get('exp_name')}/{rid}.json"
            views.append(view)
        views.sort(key=lambda v: (str(v["seed"]), str(v["run_id"])))
        write(f"config/{c['page']}.html", "config.html", root="../", config=c, records=views,
              plot=plots.get((c["model"], c["dataset"], c["attack"])), page="config")  # fmt: skip
    write("claims.html", "claims.html", specs=_claims(df, n_boot), page="claims")
    write("compare.html", "compare.html", comparisons=_comparisons(df, n_boot), page="compare")
    plot_list = [{"model": m, "dataset": d, "attack": a, "path": p}
                 for (m, d, a), p in sorted(plots.items())]  # fmt: skip
    write("plots.html", "plots.html", plots=plot_list, page="plots")
    log.info("site: %d configurations from %d records -> %s/index.html", len(configs), len(ok),
             out)  # fmt: skip
    return out / "index.html"
