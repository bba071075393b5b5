"""What a table's caption and cells say about the records behind them: threat models (never two
in one column), timing-dependent records (``n_limit > 0``), attack logs left out; and the two
table bugs of issue 28 (a paper cell averaging two dense models; a dropped budget column)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from test_stats import pruner_option, write_run

from benchmark.reporting import claims, compare, effects
from benchmark.reporting.leaderboard import leaderboard, to_markdown
from benchmark.reporting.records import load_records
from benchmark.reporting.summary import summary_table, write_summary
from benchmark.reporting.tables import build_tables, load_spec, render_latex, render_markdown


def block(recipe: str, h: str, limit: float | None) -> dict:
    """A record's ``threat_model`` block (as ``benchmark.attacks.recipes`` writes it)."""
    return {"recipe": recipe, "version": 1, "candidates_per_word": 8, "max_words_perturbed": None,
            "similarity": None, "query_budget": None, "max_seconds_per_example": limit,
            "textattack": "0.3.11", "hash": h}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Summary


def test_summary_splits_a_column_of_two_threat_models_and_captions_each(tmp_path: Path) -> None:
    """The same recipe on the same 100 sentences, without and with a per-example time limit:
    two threat models, two columns (before: one cell averaging 10 and 30)."""
    write_run(tmp_path, "e", "a", "magnitude", 0.5, 0, list(range(10)), n=100,
              attack="deepwordbug", threat_model=block("deepwordbug", "aaaa", None))  # fmt: skip
    write_run(tmp_path, "e", "b", "magnitude", 0.5, 1, list(range(30)), n=100,
              attack="deepwordbug", threat_model=block("deepwordbug", "bbbb", 43))  # fmt: skip
    df = load_records(tmp_path)
    table = summary_table(df, ["e"], n_boot=200)
    cols = [c for c in table.columns if c.endswith("Aua/Suc %")]
    assert cols == ["deepwordbug [aaaa] Aua/Suc %", "deepwordbug [bbbb] Aua/Suc %"]
    assert table.loc[0, cols[0]].startswith("10 ") and table.loc[0, cols[1]].startswith("30 ")
    md = write_summary(df, ["e"], tmp_path).read_text()
    assert md.count("`deepwordbug` [aaaa]: deepwordbug v1") == 1
    assert "per-example limit 43 s" in md and "per-example limit none s" in md


def test_summary_says_the_budget_it_dropped(tmp_path: Path) -> None:
    write_run(tmp_path, "t", "a", "seven", 0.5, 0, [1], n=100)
    recs = load_records(tmp_path)
    recs["budget"] = "reduced"
    table = summary_table(recs, ["t"], n_boot=200)
    assert "budget" not in table.columns
    md = write_summary(recs, ["t"], tmp_path).read_text()
    assert "`budget=reduced`" in md


def test_timing_dependent_in_summary_leaderboard_and_compare(tmp_path: Path) -> None:
    write_run(tmp_path, "e", "d", "none", 0.0, 0, list(range(8)), n=20)
    write_run(tmp_path, "e", "m", "magnitude", 0.5, 0, list(range(5)), n=20, n_limit=2,
              n_success=13)  # fmt: skip
    df = load_records(tmp_path)
    table = summary_table(df, ["e"], n_boot=200)
    cells = table.set_index("pruner")["pwws Aua/Suc %"]
    assert cells["magnitude"].endswith("(timing-dependent)")
    assert "timing-dependent" not in cells["none"]
    board = leaderboard(df, n_boot=200).set_index("pruner")
    assert bool(board.loc["magnitude", "timing_dependent"])
    assert not bool(board.loc["none", "timing_dependent"])
    assert "timing-dependent" in to_markdown(board.reset_index())
    cmp = compare.compare_table(df, "e", "none", n_boot=200)
    assert "timing-dependent" in cmp.set_index("pruner").loc["magnitude", "note"]


def test_log_problem_is_named_in_summary_compare_and_claims_captions(tmp_path: Path) -> None:
    write_run(tmp_path, "e", "d", "none", 0.0, 0, list(range(8)), n=20,
              extra_cfg=pruner_option("none"))  # fmt: skip
    write_run(tmp_path, "e", "m", "magnitude", 0.5, 0, list(range(5)), n=20,
              extra_cfg=pruner_option("magnitude"))  # fmt: skip
    log = tmp_path / "runs" / "e" / "m.attack.jsonl"
    log.write_text("\n".join(log.read_text().splitlines()[:-1]) + "\n")  # one line short
    df = load_records(tmp_path)
    problem = df.set_index("run_id").loc["m", "_log_problem"]
    assert "19 lines" in problem
    summary = write_summary(df, ["e"], tmp_path).read_text()
    assert f"warning: m (e, magnitude at 0.5, pwws): {problem}" in summary
    md = compare.write_compare(df, "e", "none", tmp_path, n_boot=200).read_text()
    assert f"warning: m (e, magnitude at 0.5, pwws): {problem}" in md
    spec = {"experiment": "e", "attacks": ["pwws"], "num_examples": 20, "family": ["C"],
            "claims": [{"id": "C", "text": "t", "kind": "below", "row": "magnitude",
                        "reference": "none", "sparsities": [0.5]}]}  # fmt: skip
    table, verdicts = claims.judge(df, spec, n_boot=200)
    text = claims.render(table, verdicts, spec, "x", claims.protocol_records(df, spec))
    assert f"warning: m (e, magnitude at 0.5, pwws): {problem}" in text


def test_claims_never_pair_two_threat_models() -> None:
    base = {"status": "ok", "exp_name": "e", "attack": "pwws", "sparsity_target": 0.5,
            "seed": 0, "_identity": "{}", "run_id": "r"}  # fmt: skip
    recs = pd.DataFrame([
        {**base, "pruner": "akr", "threat_model.hash": "aaaa"},
        {**base, "pruner": "sparsegpt", "threat_model.hash": "bbbb", "run_id": "s"},
    ])  # fmt: skip
    claim = {"id": "C", "kind": "above", "row": "akr", "reference": "sparsegpt"}
    cell = claims._cell(recs, claim, 0.5, "pwws", n_boot=10)
    assert cell["status"] == claims.SEVERAL_THREAT_MODELS
    assert claims._verdict([cell["status"]]) == "undecidable"


def test_effects_caption_names_threat_models(tmp_path: Path) -> None:
    recs = pd.DataFrame(
        [
            {
                "attack": "pwws",
                "threat_model.hash": "aaaa",
                "threat_model.recipe": "pwws",
                "threat_model.version": 1,
            }
        ]
    )
    spec = {"name": "x", "experiment": "e", "rows": [], "num_examples": 0}
    text = effects.render_markdown(pd.DataFrame(columns=effects.COLUMNS), spec, [], recs)
    assert "`pwws` [aaaa]: pwws v1" in text


# ---------------------------------------------------------------------------------------------
# Paper tables


def _paper_records() -> pd.DataFrame:
    """SparseGPT at 87.5%, seed 0, pruned from two dense models: the first 100-sentence
    records (schema 1, clean 70.18%) and the full-split rerun (schema 2, clean 72.36%), one
    configuration by identity; the dense row attacked under two threat models."""
    ident = json.dumps({"pruner": {"name": "sparsegpt"}, "_record": {"pruner": "sparsegpt"}})
    base = {"exp_name": "embedded_post_training", "model": "minilm_l6",
            "dataset": "sst2", "pruner": "sparsegpt", "dense": "finetune", "status": "ok",
            "error": None, "seed": 0, "sparsity_target": 0.875, "n_eval": 872,
            "_identity": ident, "n_skipped": 0, "asr": 0.5, "attack_clean_acc": 1.0}  # fmt: skip
    rows = []
    for schema, clean, n, key in ((1, 612 / 872, 100, "old"), (2, 631 / 872, 872, "new")):
        for attack, h in (("textfooler_offline", f"tf{n}"), ("deepwordbug", f"dwb{n}")):
            rows.append({**base, "schema_version": schema, "clean_acc": clean, "n_total": n,
                         "n_failed": n // 4, "n_success": n - n // 4, "aua": 0.25,
                         "attack": attack, "dense_info.key": key, "run_id": f"{key}-{attack}",
                         "_path": f"{key}-{attack}", "threat_model.hash": h,
                         "threat_model.recipe": attack, "threat_model.version": 1})  # fmt: skip
    return pd.DataFrame(rows)


def test_paper_cell_never_averages_two_dense_models_of_one_seed() -> None:
    spec = load_spec("embedded_post_training", "embedded")
    table, _ = build_tables(_paper_records(), spec)
    row = table.set_index(["Sparsity", "Method"]).loc[("87.5%", "SparseGPT")]
    # before: 71.3 (the mean of 70.18 and 72.36), labelled as one seed
    assert row["Acc% (split) ours"].startswith("72.4 [")
    assert "1 of 2 configs" in row["Acc% (split) ours"]


def test_paper_table_caption_says_samples_seeds_and_threat_models() -> None:
    spec = load_spec("embedded_post_training", "embedded")
    assert "sample of 100; seed 0" not in spec.caption
    recs = _paper_records()
    table, _ = build_tables(recs, spec)
    md = render_markdown(table, spec)
    assert "- `TextFooler`: 872 attacked sentences, seed 0; `textfooler_offline` [tf872]" in md
    assert "Threat models (hash per attack column): TextFooler: tf872" in render_latex(table, spec)


def test_paper_cell_of_another_threat_model_is_left_out() -> None:
    spec = load_spec("embedded_post_training", "embedded")
    recs = _paper_records()
    recs = recs[recs["schema_version"] == 2]
    other = recs.assign(sparsity_target=0.5, run_id=recs["run_id"] + "x",
                        _path=recs["_path"] + "x", **{"threat_model.hash": "zzzz"})  # fmt: skip
    at70 = recs.assign(sparsity_target=0.7, run_id=recs["run_id"] + "y", _path=recs["_path"] + "y")
    wide = pd.concat([recs, other, at70], ignore_index=True)
    wide["_identity"] = [  # a configuration includes its sparsity
        json.dumps({**json.loads(i), "sparsity": s})
        for i, s in zip(wide["_identity"], wide["sparsity_target"], strict=True)
    ]
    table, _ = build_tables(wide, spec)
    rows = table.set_index(["Sparsity", "Method"])
    assert rows.loc[("50%", "SparseGPT"), "TextFooler Aua% ours"] == "other threat model (zzzz)"
    assert rows.loc[("70%", "SparseGPT"), "TextFooler Aua% ours"].startswith("25.0 [")
