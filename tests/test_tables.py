"""Paper tables from records: golden layouts, cell semantics, variants, plots, CLI, presets.

Golden files live in ``tests/data/golden/``; regenerate them after an intended layout change
with ``UPDATE_GOLDEN=1 pytest tests/test_tables.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from benchmark.reporting import aggregate
from benchmark.reporting.plots import plot_sparsity_curves
from benchmark.reporting.stats import wilson_interval
from benchmark.reporting.tables import (
    apply_variant,
    build_table,
    build_tables,
    load_reference,
    load_spec,
    method_selector,
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
    assert aggregate.log_table_to_wandb(pd.DataFrame(), "t", recs, "auto") is False
    assert aggregate.log_table_to_wandb(pd.DataFrame(), "t", recs, "off") is False


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
        for group in INSTANTIATED:
            instantiate(cfg[group])


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
    table = aggregate.summary_table(df, ["post", "train"])
    assert list(table["pruner"]) == ["none", "magnitude", "akr", "seven"]
    assert list(table.columns[-2:]) == ["deepwordbug Aua/Suc %", "pwws Aua/Suc %"]
    mag = table.iloc[1]
    # two seeds without attack logs: mean of the per-seed Wilson bounds of 30/100 and 40/100
    lo = 100 * (wilson_interval(30, 100)[0] + wilson_interval(40, 100)[0]) / 2
    hi = 100 * (wilson_interval(30, 100)[1] + wilson_interval(40, 100)[1]) / 2
    assert mag["seeds"] == 2 and mag["deepwordbug Aua/Suc %"] == f"35 [{lo:.0f}, {hi:.0f}] / 50.0"
    assert table.iloc[2]["deepwordbug Aua/Suc %"] == "not run"
    assert table.iloc[3]["budget"] == "reduced" and table.iloc[3]["pwws Aua/Suc %"] == "not run"
    assert "budget" not in aggregate.summary_table(df, ["post"]).columns  # one budget only


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
