"""Paper tables from records: golden layouts, cell semantics, variants, plots, CLI, presets.

Golden files live in ``tests/data/golden/``; regenerate them after an intended layout change
with ``UPDATE_GOLDEN=1 pytest tests/test_tables.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from benchmark.reporting import aggregate
from benchmark.reporting.mirror import log_table_to_wandb
from benchmark.reporting.plots import plot_sparsity_curves, sparsity_figure
from benchmark.reporting.records import load_records
from benchmark.reporting.stats import wilson_interval
from benchmark.reporting.summary import summary_table
from benchmark.reporting.tables import (
    apply_variant,
    build_table,
    build_tables,
    compact_table,
    load_reference,
    load_spec,
    method_selector,
    one_configuration,
    render_latex,
    render_markdown,
    spec_records,
    table_names,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
PAPER_TABLES = ["akr_table1", "akr_table2", "akr_table6", "robustt_table1", "robustt_table3"]
RECORD_KEYS = ("model", "dataset", "attack", "sparsity")


def _cell_contexts(spec) -> list[dict[str, Any]]:
    """Every (row, column group) context of a spec, in table order."""
    cols = spec.columns or [{}]
    out = []
    for row in spec.rows:
        for col in cols:
            out.append({**spec.fixed, **row, **{k: v for k, v in col.items() if k != "label"}})
    return out


def synthetic_records(spec, seeds: int = 3) -> pd.DataFrame:
    """Deterministic fake records for a spec: most cells filled, one failed, one not run.

    Metric values are simple functions of the cell index and seed, so means and stds are
    exact; they are not results of anything.
    """
    rows = []
    contexts = [
        c for c in _cell_contexts(spec) if "missing" not in method_selector(spec, c["method"])
    ]
    for i, ctx in enumerate(contexts):
        if i == len(contexts) - 1:
            continue  # the last cell: "not run"
        selector = method_selector(spec, ctx["method"])
        base = {
            "exp_name": spec.experiments[0], "model": ctx.get("model", "bert_base_uncased"),
            "dataset": ctx["dataset"], "attack": ctx.get("attack", "textfooler"),
            "sparsity_target": float(ctx["sparsity"]), "pruner": selector.get("pruner"),
            "dense": selector.get("dense", "finetune"),
        }  # fmt: skip
        if i == 0:  # the first cell: every seed failed
            rows.append({**base, "seed": 0, "status": "failed", "error": "RuntimeError: boom"})
            continue
        for seed in range(seeds):
            # counts of 1000 examples: failed (survived) 300+2i+20s, successful 500-i-10s,
            # skipped the rest; clean accuracy on a 1000-sentence split 850+i+10s
            n_failed, n_success = 300 + 2 * i + 20 * seed, 500 - i - 10 * seed
            rows.append({
                **base, "seed": seed, "status": "ok", "error": None, "n_eval": 1000,
                "clean_acc": (850 + i + 10 * seed) / 1000, "n_total": 1000,
                "n_failed": n_failed, "n_success": n_success,
                "n_skipped": 1000 - n_failed - n_success,
                "attack_clean_acc": (n_failed + n_success) / 1000, "aua": n_failed / 1000,
                "asr": n_success / (n_success + n_failed), "avg_queries": 100.0 + i + 10 * seed,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file"


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_table_layout_matches_golden(name: str) -> None:
    spec = load_spec(name)
    table, numbers = build_tables(synthetic_records(spec), spec)
    _check_golden(f"{name}.md", render_markdown(table, spec, [f"plots/{name}_sst2_x.png"]))
    _check_golden(f"{name}.csv", numbers.to_csv(index=False))
    if name == "akr_table1":
        _check_golden(f"{name}.tex", render_latex(table, spec))


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_every_published_number_has_a_cell(name: str) -> None:
    """The layout covers every row of the paper's table in paper_results.csv."""
    spec = load_spec(name)
    ref = load_reference()
    ref = ref[ref["table"] == spec.reference_table]
    assert len(ref), f"no reference rows for {spec.reference_table}"
    cells = {
        (c["dataset"], c.get("attack"), c["method"], round(float(c["sparsity"]), 6))
        for c in _cell_contexts(spec)
    }  # fmt: skip
    for r in ref.itertuples():
        assert (r.dataset, r.attack, r.method, round(float(r.sparsity), 6)) in cells, r


def test_cell_semantics() -> None:
    spec = load_spec("akr_table1")
    spec.seeds = 5
    recs = synthetic_records(spec)
    table = build_table(recs, spec)
    first = table.iloc[0]  # Dense / finetune: failed, SST-2
    assert first["SST-2 Clean% ours"] == "failed: RuntimeError: boom"
    assert first["SST-2 Clean% paper"] == "92.3" and first["SST-2 Clean% Δ"] == ""
    # AG News cell of the first row: i = 1, three seeds: attacked-sample accuracy
    # (301 + 499 + 20 s) / 1000 -> mean 0.811, std 0.01; no attack logs, so the interval is the
    # mean of the per-seed Wilson bounds of 811, 821, 831 of 1000.
    bounds = [wilson_interval(k, 1000) for k in (801, 811, 821)]
    lo, hi = (100 * sum(b[j] for b in bounds) / 3 for j in (0, 1))
    assert first["AG News Clean% ours"] == f"81.1±1.0 [{lo:.1f}, {hi:.1f}] (n=3/5)"
    assert first["AG News Clean% Δ"] == f"{81.1 - 94.7:+.1f}"
    # the whole split's accuracy is its own column: (850 + 1 + 10 s) / 1000 -> 86.1
    assert first["AG News Acc% (split) ours"].startswith("86.1±1.0 [")
    _, numbers = build_tables(recs, spec)
    assert numbers.iloc[0]["AG News Clean% mean"] == pytest.approx(81.1)
    assert numbers.iloc[0]["AG News Clean% ci_low"] == pytest.approx(lo)
    assert numbers.iloc[0]["AG News Clean% n"] == 3
    assert numbers.iloc[0]["AG News Clean% ci"] == "wilson-mean"
    superticket = table[table["Method"] == "SuperTicket"].iloc[0]
    assert superticket["SST-2 Aua% ours"] == "n/a: not implemented"
    assert superticket["SST-2 Aua% paper"] == "14.3"
    assert superticket["#Param (M)"] == "72" and superticket["Re-T"] == "Y"
    assert table.iloc[-1]["IMDB Suc% ours"] == "not run"


def test_row_metric_counts_seeds_not_records() -> None:
    """Clean% shown once per row (RobustT Table 1) averages per seed across the attacks."""
    spec = load_spec("robustt_table1")
    recs = synthetic_records(spec, seeds=1)
    table = build_table(recs, spec)
    lth = table[(table["Dataset"] == "AG News") & (table["Method"] == "LTH")].iloc[0]
    cell = lth["Acc% (split) ours"]
    assert "n=" not in cell and "±" not in cell
    # one seed: Wilson of a record's counts (clean accuracy k of n_eval = 1000); the synthetic
    # records of the row's three attacks differ slightly (real ones share the split accuracy)
    mine = recs[(recs["dataset"] == "agnews") & (recs["pruner"] == "lth")]
    ks = sorted(round(1000 * c) for c in mine["clean_acc"])
    assert len(ks) == 3 and cell.startswith(f"{sum(ks) / 30:.1f} [")
    walls = [wilson_interval(k, 1000) for k in ks]
    assert any(cell.endswith(f"[{100 * lo:.1f}, {100 * hi:.1f}]") for lo, hi in walls)
    assert lth["Acc% (split) paper"] == "93.7"
    assert lth["BERT-Attack #Query paper"] == "394.4"


def test_variant_reads_substituted_records_and_says_so() -> None:
    spec = load_spec("akr_table1", variant="embedded")
    assert (
        "embedded" in spec.caption and spec.substitute["model"]["bert_base_uncased"] == "minilm_l6"
    )
    plain = synthetic_records(load_spec("akr_table1"))
    assert build_table(plain, spec).iloc[1]["SST-2 Clean% ours"] == "not run"
    swapped = plain.assign(
        model="minilm_l6", attack=plain["attack"].replace({"textfooler": "textfooler_offline"})
    )  # fmt: skip
    table = build_table(swapped, spec)
    assert table.iloc[1]["SST-2 Clean% ours"].startswith("81.3±1.0 [")
    assert table.iloc[1]["SST-2 Clean% ours"].endswith("] (n=3/5)")
    assert "Variant `embedded`" in render_markdown(table, spec)
    with pytest.raises(ValueError, match="unknown variant"):
        apply_variant(load_spec("akr_table1"), "nope")


def test_specs_load_and_cover_their_experiments() -> None:
    assert set(PAPER_TABLES) <= set(table_names())
    presets = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    for name in table_names():
        spec = load_spec(name)
        assert spec.rows and spec.title
        missing = set(spec.experiments) - presets
        assert not missing, f"table {name} reads experiments without a preset: {missing}"


def test_plots_written_and_non_empty(tmp_path: Path) -> None:
    spec = load_spec("akr_table2")
    recs = spec_records(synthetic_records(spec), spec)
    assert set(recs["method"]) >= {"finetune", "imp", "akr"}
    paths = plot_sparsity_curves(recs, tmp_path, "akr_table2", "AKR Table 2")
    assert {p.name for p in paths} == {
        f"akr_table2_{d}_textfooler.png" for d in ("sst2", "agnews", "imdb")
    }
    for p in paths:
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_sparsity_curves(recs.iloc[0:0], tmp_path / "none", "x") == []


def test_plot_legends_ticks_and_title_use_table_display_names() -> None:
    """Legends read as the table's Method column, ticks as its Sparsity labels, and a variant's
    substituted attack as the table's column; methods in the spec's row order."""
    spec = load_spec("akr_table1", variant="embedded")
    plain = synthetic_records(load_spec("akr_table1"))
    swapped = plain.assign(
        model="minilm_l6", attack=plain["attack"].replace({"textfooler": "textfooler_offline"})
    )  # fmt: skip
    recs = spec_records(swapped, spec)
    fig = sparsity_figure(recs[recs["dataset"] == "agnews"], "AKR Table 1", spec)
    try:
        clean_ax, aua_ax = fig.axes
        legend = [t.get_text() for t in aua_ax.get_legend().get_texts()]
        dense = ["Fine-tune (Dense)", "FreeLB (Dense)", "Weight Average (Dense)"]
        assert legend == [*dense, "RobustT", "AKR"]
        assert [spec.label("method", m) for m in ("rticket", "akr")] == legend[3:]
        for ax in (clean_ax, aua_ax):
            assert [t.get_text() for t in ax.get_xticklabels()] == ["≤30%", "50%", "87.5%"]
        assert fig._suptitle.get_text() == "AKR Table 1 AG News / TextFooler"
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    # without a spec: the records' method names and the default dataset/attack labels
    fig = sparsity_figure(recs[recs["dataset"] == "agnews"], "t")
    try:
        legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert legend[:3] == ["finetune (dense)", "freelb (dense)", "weight_average (dense)"]
        assert fig._suptitle.get_text() == "t AG News / textfooler_offline"
    finally:
        plt.close(fig)


def shared_sample_records(spec, pwws_sample_differs: bool = False) -> pd.DataFrame:
    """One seed per cell of ``embedded_post_training``: every attack of a row attacked the same
    100 sentences, so Clean% (correct before the attack) is the same for all of them; with
    ``pwws_sample_differs`` PWWS ran on another sample for the 50% Wanda row."""
    rows = []
    for i, row in enumerate(spec.rows):
        selector = method_selector(spec, row["method"])
        for j, col in enumerate(spec.columns):
            correct = 90 - i
            if pwws_sample_differs and col["attack"] == "pwws" and i == 6:
                correct -= 3
            n_failed = 20 + i + 3 * j
            rows.append({
                "exp_name": spec.experiments[0], "model": "bert_base_uncased", "dataset": "sst2",
                "attack": col["attack"], "sparsity_target": float(row["sparsity"]),
                "pruner": selector["pruner"], "dense": selector["dense"], "seed": 0,
                "status": "ok", "error": None, "n_eval": 872, "clean_acc": (790 - i) / 872,
                "n_total": 100, "n_failed": n_failed, "n_success": correct - n_failed,
                "n_skipped": 100 - correct, "attack_clean_acc": correct / 100,
                "aua": n_failed / 100, "asr": (correct - n_failed) / correct,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _flat(column: tuple[str, ...]) -> str:
    return " ".join(p for p in column if p)


def _assert_nothing_lost(wide: pd.DataFrame, shown: pd.DataFrame, spec) -> None:
    """Every cell of the wide table is in the shown one: under its own column, in the shared
    Clean% column of its attack, or its column is empty in every row and left out."""
    flat = {_flat(c): c for c in shown.columns}
    attacks = {spec.label("attack", c["attack"]) for c in spec.columns}
    for name in wide.columns:
        if name in flat:
            assert list(wide[name]) == list(shown[flat[name]]), name
            continue
        m = re.fullmatch(r"(.+) Clean% (ours|paper|Δ)", name)
        shared = [
            c for c in flat
            if m and re.fullmatch(rf"Clean%( \(.*\b{re.escape(m[1])}\b.*\))? {m[2]}", c)
        ]  # fmt: skip
        if m and m[1] in attacks and shared:
            assert len(shared) == 1, (name, shared)
            aua = wide[f"{m[1]} Aua% ours"]  # repeats a cell's "not run" / "failed: ..."
            for w, v, a in zip(wide[name], shown[flat[shared[0]]], aua, strict=True):
                assert (
                    w == v or (m[2] == "paper" and w == "—") or (m[2] == "Δ" and w == "")
                    or (m[2] == "ours" and w == a and not w[0].isdigit())
                ), (name, w, v)  # fmt: skip
            continue
        assert set(wide[name]) <= {"", "—"}, f"{name} left out but not empty"


def test_markdown_shows_clean_once_per_dataset_and_loses_nothing() -> None:
    spec = load_spec("embedded_post_training")
    table = build_table(shared_sample_records(spec), spec)
    md = render_markdown(table, spec)
    header = [c.strip() for c in next(x for x in md.splitlines() if x.startswith("| Spars"))
              .strip("|").split("|")]  # fmt: skip
    assert header == [
        "Sparsity", "Method", "Acc% (split) ours", "Acc% (split) paper", "Acc% (split) Δ",
        "Clean% ours", "Clean% paper", "Clean% Δ",
        "TextFooler Aua% ours", "TextFooler Aua% paper", "TextFooler Aua% Δ",
        "TextFooler Suc% ours", "TextFooler Suc% paper", "TextFooler Suc% Δ",
        "TextBugger Aua% ours", "TextBugger Suc% ours", "DeepWordBug Aua% ours",
        "DeepWordBug Suc% ours", "PWWS Aua% ours", "PWWS Suc% ours",
    ]  # fmt: skip
    assert len(header) < len(table.columns) - 20  # 42 columns before
    shown = compact_table(table, spec)
    _assert_nothing_lost(table, shown, spec)
    # the shared cell keeps its interval, and the published value and Δ of TextFooler's Clean%
    dense = shown.iloc[0]
    assert dense[("", "Clean%", "ours")] == table.iloc[0]["TextFooler Clean% ours"]
    assert re.fullmatch(r"90\.0 \[\d+\.\d, \d+\.\d\]", dense[("", "Clean%", "ours")])
    assert dense[("", "Clean%", "paper")] == "92.3" and dense[("", "Clean%", "Δ")] == "-2.3"


def test_clean_kept_per_attack_where_the_sample_differs() -> None:
    spec = load_spec("embedded_post_training")
    table = build_table(shared_sample_records(spec, pwws_sample_differs=True), spec)
    shown = compact_table(table, spec)
    heads = [_flat(c) for c in shown.columns]
    assert "Clean% (TextFooler, TextBugger, DeepWordBug) ours" in heads
    assert "PWWS Clean% ours" in heads and "Clean% ours" not in heads
    wanda = table.iloc[6]
    assert wanda["PWWS Clean% ours"] != wanda["TextFooler Clean% ours"]
    _assert_nothing_lost(table, shown, spec)
    # a cell that was not run agrees with any value: its Aua%/Suc% cells say so
    recs = shared_sample_records(spec)
    recs = recs[~((recs["attack"] == "pwws") & (recs["pruner"] == "akr"))]
    table = build_table(recs, spec)
    shown = compact_table(table, spec)
    assert ("", "Clean%", "ours") in shown.columns
    assert (shown[("PWWS", "Aua%", "ours")] == "not run").sum() == 4
    _assert_nothing_lost(table, shown, spec)


def test_latex_is_structurally_sound() -> None:
    spec = load_spec("embedded_post_training", variant="embedded")
    recs = shared_sample_records(spec, pwws_sample_differs=True)
    recs = recs.assign(model="minilm_l6", attack=recs["attack"].replace(
        {"textfooler": "textfooler_offline", "textbugger": "textbugger_offline"}))  # fmt: skip
    table = build_table(recs, spec)
    tex = render_latex(table, spec)
    lines = tex.splitlines()
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\label{tab:embedded_post_training_embedded}" in tex
    assert r"\caption{Post-training pruners -- MiniLM-L6" in tex and "minilm\\_l6" in tex
    assert r"\multicolumn{6}{c}{TextFooler} & \multicolumn{2}{c}{TextBugger}" in tex
    assert r"\cmidrule(lr){9-14}" in tex
    body = re.sub(r"\\label\{[^}]*\}|\$\\(Delta|pm|leq)\$", "", tex)  # label, ours math
    assert not re.search(r"(?<!\\)[%_&#$]", body.replace(" & ", " ")), "unescaped special"
    assert not set("±Δ—≤−") & set(tex)
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}")
    ncols = len(re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex)[1])
    start, end = lines.index(r"\toprule"), lines.index(r"\bottomrule")
    rows = [x for x in lines[start + 1 : end] if x.endswith(r"\\")]
    assert len(rows) == 3 + len(table)  # three header rows, one per table row
    for row in rows:
        cells = row.removesuffix(r"\\").split(" & ")
        spans = [re.match(r"\\multicolumn\{(\d+)\}", c.strip()) for c in cells]
        assert sum(int(s[1]) if s else 1 for s in spans) == ncols, row
    assert r"{Clean\% (TextFooler, TextBugger, DeepWordBug)}" in tex  # shared, escaped
    assert "87.5\\%" in tex and r"$\pm$" not in tex  # one seed: no std


def _write_records(results: Path, recs: pd.DataFrame) -> None:
    import json

    for i, rec in enumerate(recs.to_dict("records")):
        rec = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in rec.items()}
        dense = rec.pop("dense")
        rec.update(
            run_id=f"r{i:04d}", cfg={"choices": {"dense": dense}, "logger": {"enabled": False}}
        )
        path = results / "runs" / rec["exp_name"] / f"{rec['run_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec), encoding="utf-8")


def test_cli_writes_tables_plots_and_leaderboard(tmp_path: Path) -> None:
    spec = load_spec("akr_table2")
    _write_records(tmp_path, synthetic_records(spec))
    assert aggregate.main(["--results-dir", str(tmp_path), "--table", "akr_table2"]) == 0
    out = tmp_path / "tables"
    for ext in ("md", "csv", "tex"):
        assert (out / f"akr_table2.{ext}").stat().st_size > 0
    md = (out / "akr_table2.md").read_text(encoding="utf-8")
    assert "](plots/akr_table2_sst2_textfooler.png)" in md
    assert (out / "plots" / "akr_table2_sst2_textfooler.png").stat().st_size > 0
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert "dense" in board.columns and {"finetune", "weight_average"} <= set(board["dense"])
    # The leaderboard alone still works, and an unknown table is a usage error.
    assert aggregate.main(["--results-dir", str(tmp_path)]) == 0
    assert aggregate.main(["--results-dir", str(tmp_path), "--table", "nope"]) == 2


def test_wandb_table_only_when_online() -> None:
    recs = pd.DataFrame({"logger_mode": [None, "offline"], "logger_project": ["p", "p"]})
    assert log_table_to_wandb(pd.DataFrame(), "t", recs, "auto") is False
    assert log_table_to_wandb(pd.DataFrame(), "t", recs, "off") is False


# ---------------------------------------------------------------------------------------------
# Preset lint: every option a preset names exists; compose it; instantiate its groups.

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
INSTANTIATED = ("pruner", "attack", "dense")


def _named_options(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(group, option) pairs a preset names in its defaults and its sweep grid."""
    names = []
    for item in raw.get("defaults") or []:
        if isinstance(item, dict):
            for key, value in item.items():
                group = key.removeprefix("override").strip().lstrip("/")
                names.append((group, str(value)))
    params = (((raw.get("hydra") or {}).get("sweeper") or {}).get("params")) or {}
    for key, value in params.items():
        if (ROOT / "conf" / key).is_dir():
            names += [(key, v.strip()) for v in str(value).split(",")]
    return names


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_lint(preset: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from benchmark.run import ROOT as RUN_ROOT

    raw = yaml.safe_load((ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text())
    missing = [
        f"{g}/{o}"
        for g, o in _named_options(raw)
        if not (ROOT / "conf" / g / f"{o}.yaml").is_file()
    ]
    if missing:
        pytest.skip(f"options not (yet) in conf/: {', '.join(missing)}")
    params = raw["hydra"]["sweeper"]["params"] if "hydra" in raw else {}
    for key, value in params.items():
        for v in str(value).split(","):
            if key == "sparsity":
                assert 0.0 <= float(v) < 1.0
            elif key == "seed":
                int(v)
            else:
                assert (ROOT / "conf" / key).is_dir(), f"sweep key {key} is not a config group"
    assert raw.get("exp_name") == preset, "exp_name must equal the preset's name"
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(RUN_ROOT))
    first = [f"{k}={str(v).split(',')[0]}" for k, v in params.items()]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[f"experiment={preset}", *first], return_hydra_config=True)
        assert cfg.hydra.runtime.choices.experiment == preset
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.choices.*} as in a real job
        assert 0.0 <= float(cfg.sparsity) < 1.0  # per-dataset interpolations resolve
        int(cfg.attack.num_examples)
        from benchmark.jobs.registry import method_config

        for group in INSTANTIATED:
            node = OmegaConf.create(OmegaConf.to_container(cfg[group], resolve=True))
            instantiate(method_config(group, node))  # pipeline keys removed, as a job does


def test_summary_table_rows_columns_and_missing_cells() -> None:
    def rec(exp, pruner, sparsity, attack, aua, seed=0, budget="paper"):
        return {"status": "ok", "exp_name": exp, "pruner": pruner, "budget": budget,
                "sparsity_target": sparsity, "attack": attack, "seed": seed, "aua": aua,
                "asr": 0.5, "sparsity_actual": sparsity, "clean_acc": 0.8, "prune_seconds": 2.0,
                "n_total": 100, "n_failed": round(aua * 100), "n_success": 40,
                "n_skipped": 60 - round(aua * 100)}  # fmt: skip

    df = pd.DataFrame([
        rec("post", "akr", 0.5, "pwws", 0.10), rec("post", "magnitude", 0.5, "pwws", 0.20),
        rec("post", "magnitude", 0.5, "deepwordbug", 0.30),
        rec("post", "magnitude", 0.5, "deepwordbug", 0.40, seed=1),
        rec("train", "seven", 0.5, "deepwordbug", 0.05, budget="reduced"),
        rec("post", "none", 0.0, "pwws", 0.25), rec("other", "wanda", 0.5, "pwws", 0.9),
        {**rec("post", "wanda", 0.5, "pwws", 0.9), "status": "failed"},
    ])  # fmt: skip
    table = summary_table(df, ["post", "train"])
    assert list(table["pruner"]) == ["none", "magnitude", "akr", "seven"]
    assert list(table.columns[-2:]) == ["deepwordbug Aua/Suc %", "pwws Aua/Suc %"]
    mag = table.iloc[1]
    # two seeds without attack logs: mean of the per-seed Wilson bounds of 30/100 and 40/100
    lo = 100 * (wilson_interval(30, 100)[0] + wilson_interval(40, 100)[0]) / 2
    hi = 100 * (wilson_interval(30, 100)[1] + wilson_interval(40, 100)[1]) / 2
    assert mag["seeds"] == 2 and mag["deepwordbug Aua/Suc %"] == f"35 [{lo:.0f}, {hi:.0f}] / 50.0"
    assert table.iloc[2]["deepwordbug Aua/Suc %"] == "not run"
    assert table.iloc[3]["budget"] == "reduced" and table.iloc[3]["pwws Aua/Suc %"] == "not run"
    assert "budget" not in summary_table(df, ["post"]).columns  # one budget only


def test_degenerate_row_is_marked_and_duplicates_count_once() -> None:
    spec = load_spec("embedded_post_training")
    base = {"exp_name": "embedded_post_training", "model": "bert_base_uncased", "dataset": "sst2",
            "attack": "textfooler", "pruner": "magnitude", "dense": "finetune", "status": "ok",
            "error": None, "seed": 0, "n_eval": 872, "n_total": 100, "n_failed": 49,
            "n_success": 2, "n_skipped": 49, "attack_clean_acc": 0.51, "aua": 0.49,
            "asr": 2 / 51, "majority_rate": 444 / 872}  # fmt: skip
    recs = pd.DataFrame([
        # 446/872 = 51.1%: Wilson [47.8, 54.5] holds the majority rate 50.9% -> degenerate
        {**base, "sparsity_target": 0.875, "clean_acc": 446 / 872, "run_id": "a"},
        {**base, "sparsity_target": 0.875, "clean_acc": 446 / 872, "run_id": "a"},  # same job
        {**base, "sparsity_target": 0.5, "clean_acc": 757 / 872, "run_id": "b"},
    ])  # fmt: skip
    table, numbers = build_tables(recs, spec)
    rows = table.set_index(["Sparsity", "Method"])
    assert rows.loc[("87.5%", "Magnitude"), "Degenerate"] == "yes"
    assert rows.loc[("50%", "Magnitude"), "Degenerate"] == ""
    lo, hi = wilson_interval(49, 100)
    cell = rows.loc[("87.5%", "Magnitude"), "TextFooler Aua% ours"]
    assert cell == f"49.0 [{100 * lo:.1f}, {100 * hi:.1f}]"  # one seed: n=1 despite the copy
    assert numbers.set_index(["Sparsity", "Method"]).loc[("87.5%", "Magnitude"),
                                                         "TextFooler Aua% n"] == 1  # fmt: skip


def test_a_cell_never_averages_configurations() -> None:
    """A cell with records of two attack samples (100 and 1000 sentences) shows the larger one,
    one with two pruner configurations shows the option's defaults, and both say
    `1 of 2 configs`; their average would be a number no run produced."""
    import json

    from test_stats import pruner_option

    spec = load_spec("akr_table1")
    recs = synthetic_records(spec, seeds=1)
    recs = recs[recs["status"] == "ok"].reset_index(drop=True)
    akr = pruner_option("akr")

    def ident(pruner_cfg: dict, n: int, pruner: str) -> str:
        return json.dumps({"pruner": pruner_cfg, "attack": {"num_examples": n},
                           "_record": {"pruner": pruner}}, sort_keys=True)  # fmt: skip

    recs["_identity"] = [ident({"x": i}, 1000, p) for i, p in enumerate(recs["pruner"])]
    row = recs[(recs["pruner"] == "akr") & (recs["dataset"] == "sst2")].iloc[0]
    base = row["_identity"]
    small = {
        **row.to_dict(),
        "n_total": 100,
        "n_failed": 90,
        "n_success": 5,
        "n_skipped": 5,
        "aua": 0.9,
        "_identity": json.dumps({**json.loads(base), "attack": {"num_examples": 100}}),
    }
    mixed = pd.concat([recs, pd.DataFrame([small])], ignore_index=True)
    cells, k = one_configuration(mixed[mixed["_identity"].isin([base, small["_identity"]])])
    assert k == 2 and list(cells["n_total"]) == [1000]
    table = build_table(mixed, spec)
    flagged = [v for v in table["SST-2 Aua% ours"] if "1 of 2 configs" in str(v)]
    assert len(flagged) == 1 and flagged[0].startswith(f"{100 * row['aua']:.1f} [")
    # two pruner configurations: the option's defaults win over a larger sample
    other = {**row.to_dict(), "n_total": 5000, "aua": 0.01,
             "_identity": ident({**akr, "ridge": "paper"}, 5000, "akr")}  # fmt: skip
    default = {**row.to_dict(), "_identity": ident(akr, 1000, "akr")}
    cells, k = one_configuration(pd.DataFrame([other, default]))
    assert k == 2 and list(cells["n_total"]) == [1000]


def test_a_method_at_named_pruner_settings_takes_only_its_records(tmp_path: Path) -> None:
    """embedded_three_datasets: `akr_sst2` (pruner.calibration=sst2) and `akr` (the defaults)
    are two rows of one pruner; each takes only its own records, never one for the other."""
    from test_stats import pruner_option, write_run

    from benchmark.reporting.tables import method_of

    spec = load_spec("embedded_three_datasets", variant="embedded")
    akr = pruner_option("akr")
    for run_id, cal, survive in (("task", "task", 6), ("sst2", "sst2", 2)):
        write_run(tmp_path, "embedded_agnews", run_id, "akr", 0.5, 0, list(range(survive)),
                  attack="deepwordbug", extra_cfg={**akr, "calibration": cal},
                  model="minilm_l6", dataset="agnews", dense="finetune")  # fmt: skip
    recs = load_records(tmp_path)
    assert sorted(method_of(r, spec) for r in recs.to_dict("records")) == ["akr", "akr_sst2"]
    table = build_table(recs, spec)
    rows = {r["Method"]: r for r in table.to_dict("records") if r["Sparsity"] == "50%"}
    col = next(c for c in table.columns if c.startswith("AG News DeepWordBug Aua% ours"))
    assert rows["AKR"][col].startswith("30.0")
    assert rows["AKR (SST-2 calibration)"][col].startswith("10.0")


def test_a_cell_without_a_value_says_why() -> None:
    """Suc% and #Query are defined over the attacked examples the model got right: a model that
    got all of them wrong has records without them, and the cell says why, not a bare dash."""
    spec = load_spec("akr_table1")
    recs = synthetic_records(spec, seeds=1)
    akr50 = (recs["pruner"] == "akr") & (recs["sparsity_target"] == 0.5)
    cell = akr50 & (recs["dataset"] == "sst2")
    assert cell.sum() == 1
    recs.loc[cell, ["n_failed", "n_success", "aua", "attack_clean_acc"]] = 0
    recs.loc[cell, "n_skipped"] = recs.loc[cell, "n_total"]
    recs.loc[cell, ["asr", "avg_queries"]] = float("nan")
    recs.loc[akr50 & (recs["dataset"] == "imdb"), "asr"] = float("nan")  # for no shown reason
    table = build_table(recs, spec)
    akr = table[(table["Method"] == "AKR") & (table["Sparsity"] == "50%")].iloc[0]
    why = "every attacked example was already misclassified"
    assert akr["SST-2 Suc% ours"] == f"not measured: {why}"
    assert akr["SST-2 Aua% ours"].startswith("0.0 [")
    assert akr["IMDB Suc% ours"] == "not measured: no asr in the records"
    assert akr["AG News Suc% ours"][0].isdigit()
