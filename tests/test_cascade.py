"""``attack=cascade``: the worst case of separate runs, its log, resume, record and tables."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from benchmark.attacks.adapter import AttackSpec, PaddedModelWrapper, build_attack, run_attack
from benchmark.attacks.cascade import step_summary
from benchmark.errors import UserError
from benchmark.reporting.analyses import worst_case

ROOT = Path(__file__).resolve().parents[1]
# On the tiny model each of these breaks some sentences the one before it did not break, and one
# sentence survives all three: every kind of line occurs.
RECIPES = ["pwws", "textfooler_offline", "deepwordbug"]
N_EXAMPLES = 12
SEED = 3


pytestmark = pytest.mark.usefixtures("nltk_ready")


@pytest.fixture(scope="module")
def wrapper(trained_tiny):
    model, tok = trained_tiny
    return PaddedModelWrapper(model, tok, max_length=32, batch_size=64)


@pytest.fixture(scope="module")
def examples():
    from benchmark.data.tiny import tiny_splits

    return [(t, y) for t, y in tiny_splits()["validation"]][:N_EXAMPLES]


@pytest.fixture(scope="module")
def separate(wrapper, res, examples):
    """Each recipe run alone on the sample: recipe -> (summary, rows)."""
    out = {}
    for name in RECIPES:
        attack = build_attack(AttackSpec(recipe=name), wrapper, res)
        out[name] = run_attack(attack, examples, seed=SEED, progress=False)
    return out


@pytest.fixture(scope="module")
def cascade(wrapper, res):
    return build_attack(AttackSpec(recipe="cascade", recipes=RECIPES), wrapper, res)


@pytest.fixture(scope="module")
def cascade_run(cascade, examples, tmp_path_factory):
    log = tmp_path_factory.mktemp("cascade") / "full.jsonl"
    summary, rows = run_attack(cascade, examples, seed=SEED, log_path=log, progress=False)
    return summary, rows, log


def _no_time(rows):
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "seconds"}
        if "steps" in r:
            r["steps"] = [{k: v for k, v in s.items() if k != "seconds"} for s in r["steps"]]
        out.append(r)
    return out


def test_cascade_aua_is_the_worst_case_of_the_separate_runs(separate, cascade_run):
    summary, rows, _ = cascade_run
    worst = worst_case({name: r for name, (_, r) in separate.items()})
    assert worst["n"] == summary.n_total == N_EXAMPLES
    assert summary.aua == worst["aua_worst"]
    assert summary.n_failed + summary.n_success + summary.n_skipped == N_EXAMPLES
    # the sample has sentences broken at every step and one that survives them all
    assert {r["broken_by"] for r in rows} == {*RECIPES, None}


def test_broken_by_is_the_first_recipe_whose_separate_run_broke_it(separate, cascade_run):
    _, rows, _ = cascade_run
    for pos, row in enumerate(rows):
        alone = {name: separate[name][1][pos] for name in RECIPES}
        first = next((n for n in RECIPES if alone[n]["result"] == "successful"), None)
        assert row["broken_by"] == first, pos
        assert row["result"] == ("successful" if first else "failed")
        # each recipe ran on it until one broke it, with the numbers of its separate run
        ran = RECIPES[: RECIPES.index(first) + 1] if first else RECIPES
        assert [s["recipe"] for s in row["steps"]] == ran
        for step in row["steps"]:
            assert step["result"] == alone[step["recipe"]]["result"]
            assert step["queries"] == alone[step["recipe"]]["queries"]
        assert row["queries"] == sum(s["queries"] for s in row["steps"])
        if first:
            assert row["perturbed"] == alone[first]["perturbed"]
            assert row["pert_pred"] != row["label"]


def test_each_recipe_attacks_only_the_sentences_still_standing(separate, cascade_run):
    summary, rows, _ = cascade_run
    steps = step_summary(rows, RECIPES)
    assert [s["recipe"] for s in steps] == RECIPES
    standing = N_EXAMPLES - summary.n_skipped
    for step in steps:
        assert step["attacked"] == standing
        standing -= step["successes"]
    assert standing == summary.n_failed
    # the cost: each recipe's queries on the sentences it attacked, never more than alone
    for step in steps:
        alone = separate[step["recipe"]][1]
        assert step["queries"] <= sum(r["queries"] for r in alone)
    assert sum(s["queries"] for s in steps) < sum(
        r["queries"] for _, rs in separate.values() for r in rs
    )


def test_killed_cascade_resumes_to_the_same_log(cascade, cascade_run, examples, tmp_path):
    _, full, full_log = cascade_run
    lines = full_log.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:5]) + lines[5][:30])  # killed while writing line 6
    calls = []
    real = cascade.attack_row
    cascade.attack_row = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        summary, resumed = run_attack(cascade, examples, seed=SEED, log_path=cut, progress=False)
    finally:
        del cascade.attack_row
    assert len(calls) == N_EXAMPLES - 5
    assert _no_time(resumed) == _no_time(full)
    assert _no_time([json.loads(x) for x in cut.read_text().splitlines()]) == _no_time(full)
    assert summary.n_total == N_EXAMPLES


def test_cascade_with_workers_equals_serial(cascade, cascade_run, examples):
    _, serial, _ = cascade_run
    _, parallel = run_attack(cascade, examples, seed=SEED, progress=False, workers=2)
    assert _no_time(parallel) == _no_time(serial)


# ------------------------------------------------------------------------ config and identity


def _identity(args):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from test_contract_cli import identity_of

    return identity_of(["experiment=smoke", "paths.results_dir=/tmp/unused", *args])


def test_cascade_threat_model_is_the_ordered_list_of_its_recipes():
    base = _identity(["attack=cascade"])
    block = base.identity["attack"]
    assert block["recipes"] == ["pwws", "deepwordbug", "textbugger_offline", "textfooler_offline"]
    from benchmark.attacks.recipes import threat_model

    tm = threat_model(block)
    assert [s["recipe"] for s in tm["recipes"]] == block["recipes"]
    assert base.identity["threat_model"] == tm["hash"]
    # each step's block is that recipe's own threat model under the cascade's shared keys
    single = _identity(["attack=deepwordbug", "attack.max_seconds_per_example=600"])
    assert tm["recipes"][1]["hash"] == single.identity["threat_model"]
    order = _identity(["attack=cascade", "attack.recipes=[deepwordbug,pwws]"])
    swapped = _identity(["attack=cascade", "attack.recipes=[pwws,deepwordbug]"])
    assert order.run_id != swapped.run_id != base.run_id
    option = _identity(["attack=cascade", "+attack.options.textfooler_offline.max_candidates=4"])
    assert option.run_id != base.run_id
    assert threat_model(option.identity["attack"])["recipes"][3]["candidates_per_word"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack=cascade", "attack.recipes=[pwws,textfool]"], "'textfool' is not one (did you mean 'textfooler'?)"),
        (["attack=cascade", "attack.recipes=[]"], "a non-empty list of attack recipes"),
        (["attack=cascade", "attack.recipes=[pwws,pwws]"], "each recipe at most once"),
        (["attack=cascade", "attack.recipes=[pwws,cascade]"], "'cascade' is not one"),
        (["attack=deepwordbug", "+attack.recipes=[pwws]"], "attack.recipes is for attack=cascade only"),
    ],
)  # fmt: skip
def test_bad_recipes_are_one_line(args, message):
    with pytest.raises(UserError) as err:
        _identity(args)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


# ------------------------------------------------------------------------ a job, end to end


def _run(tmp_path: Path, *args: str) -> dict:
    """One job in-process (as ``python -m benchmark.run``); its record."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from benchmark.jobs.build import build_job, job_identity, run_job

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))
    overrides = ["experiment=smoke", "attack=cascade", "progress=false",
                 f"paths.results_dir={tmp_path}/results", f"paths.cache_dir={tmp_path}/cache",
                 *args]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        choices = dict(compose("run", overrides=overrides,
                               return_hydra_config=True).hydra.runtime.choices)  # fmt: skip
        cfg = compose("run", overrides=overrides)
    ident = job_identity(cfg, choices)
    job, tracker = build_job(cfg, choices, ident)
    return run_job(job, tracker)


VOLATILE = ("seconds", "duration_s", "attack_seconds", "started_at", "prune_seconds",
            "prune_peak_mem_mb", "inference_ms", "inference_ms_dense", "inference", "prune_info",
            "dense_info", "clean_from_cache", "compute", "git_dirty", "warnings", "cfg")  # fmt: skip


def _stable(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in VOLATILE}
    out["cascade"] = [{k: v for k, v in s.items() if k != "seconds"} for s in rec["cascade"]]
    return out


def _log_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory, res):
    return tmp_path_factory.mktemp("cascade_job")


@pytest.fixture(scope="module")
def dense_and_pruned(job_dir):
    """The cascade on the dense tiny model and on magnitude at 50% (same seeded sample)."""
    dense = _run(job_dir, "pruner=none", "sparsity=0.0")
    pruned = _run(job_dir, "pruner=magnitude", "sparsity=0.5")
    return dense, pruned


def test_cascade_record_and_log(dense_and_pruned, job_dir):
    rec = dense_and_pruned[1]
    assert rec["status"] == "ok" and rec["attack"] == "cascade"
    recipes = ["pwws", "deepwordbug", "textbugger_offline", "textfooler_offline"]
    assert [s["recipe"] for s in rec["cascade"]] == recipes
    assert rec["threat_model"]["recipe"] == "cascade"
    assert [s["recipe"] for s in rec["threat_model"]["recipes"]] == recipes
    rows = _log_rows(job_dir / "results" / "runs" / "smoke" / f"{rec['run_id']}.attack.jsonl.gz")
    assert len(rows) == rec["n_total"] == 8
    assert sum(r["broken_by"] is None and r["result"] == "failed" for r in rows) == rec["n_failed"]
    for step in rec["cascade"]:
        assert step["successes"] == sum(r["broken_by"] == step["recipe"] for r in rows)
    assert rec["cascade"][0]["attacked"] == rec["n_total"] - rec["n_skipped"]
    assert rec["avg_queries"] > 0 and rec["cfg"]["attack_build"]["recipe"] == "cascade"


def test_killed_cascade_job_resumes_to_the_same_record(dense_and_pruned, job_dir, tmp_path,
                                                       caplog):  # fmt: skip
    """What a kill after 3 sentences leaves (the partial log, its 4th line cut; no record):
    the rerun attacks the other 5 and writes the same record and log."""
    import shutil

    first = dense_and_pruned[1]
    runs = job_dir / "results" / "runs" / "smoke"
    folder = tmp_path / "results" / "runs" / "smoke"
    folder.mkdir(parents=True)
    lines = gzip.decompress((runs / f"{first['run_id']}.attack.jsonl.gz").read_bytes()).decode()
    lines = lines.splitlines(keepends=True)
    (folder / f"{first['run_id']}.attack.partial.jsonl").write_text("".join(lines[:3])
                                                                     + lines[3][:25])  # fmt: skip
    shutil.copytree(job_dir / "cache", tmp_path / "cache")  # the dense and pruned weights
    with caplog.at_level("INFO"):
        again = _run(tmp_path, "pruner=magnitude", "sparsity=0.5")
    assert "resuming after 3 of 8 examples" in caplog.text
    assert _stable(again) == _stable(first)
    log = folder / f"{first['run_id']}.attack.jsonl.gz"
    assert _no_time(_log_rows(log)) == _no_time(_log_rows(runs / log.name))


def test_cascade_is_a_column_with_intervals_and_paired_tests(dense_and_pruned, job_dir):
    from benchmark.reporting.compare import compare_table
    from benchmark.reporting.records import load_records
    from benchmark.reporting.summary import summary_table

    df = load_records(job_dir / "results")
    table = summary_table(df, ["smoke"], n_boot=200)
    assert "cascade Aua/Suc %" in table.columns
    assert all("[" in cell for cell in table["cascade Aua/Suc %"])  # Aua with its interval
    notes = "\n".join(table.attrs["notes"])
    assert "`cascade` [" in notes and "pwws v1 [" in notes  # the caption names its recipes
    cmp = compare_table(df, "smoke", "none", n_boot=200)
    row = cmp[cmp["attack"] == "cascade"].iloc[0]
    assert row["pruner"] == "magnitude" and row["n_pairs"] == 8


def test_cascade_against_separate_runs_counts_disagreements_and_cost():
    """Known answer: 4 sentences, two recipes; the separate runs' worst case keeps sentence 3
    only, the cascade keeps 2 and 3 (sentence 2 disagrees); the separate logs hold more
    sentences than the cascade (a full-split run), only the shared ones count."""
    from benchmark.reporting.analyses import cascade_against_separate

    def row(i, result, q, s=1.0):
        return {"example_index": i, "result": result, "queries": q, "seconds": s}

    cascade = [row(0, "successful", 5), row(1, "successful", 9), row(2, "failed", 20),
               row(3, "failed", 30)]  # fmt: skip
    a = [row(0, "successful", 5), row(1, "failed", 4), row(2, "failed", 6), row(3, "failed", 7),
         row(9, "failed", 100)]  # fmt: skip
    b = [
        row(1, "successful", 5),
        row(2, "successful", 8),
        row(3, "failed", 23),
        row(0, "failed", 1),
    ]
    c = cascade_against_separate(cascade, ["a", "b"], {"a": [a[:2], a], "b": [b]})
    assert c["n"] == 4 and c["missing"] == []
    assert c["aua_cascade"] == 0.5 and c["aua_worst"] == 0.25 and c["disagree"] == [2]
    assert c["queries_cascade"] == 64 and c["queries_separate"] == (5 + 4 + 6 + 7) + (
        5 + 8 + 23 + 1
    )
    assert c["seconds_cascade"] == 4 and c["seconds_separate"] == 8
    assert cascade_against_separate(cascade, ["a", "b", "c"], {"a": [a], "b": [b]})["missing"] == [
        "c"
    ]


def test_the_separate_run_at_the_cascades_positions_is_preferred():
    """Two separate runs of one recipe hold all the cascade's sentences: the one that attacked
    them at the cascade's positions (the same per-sentence seeds) is compared."""
    from benchmark.reporting.analyses import cascade_against_separate

    def row(i, result, pos):
        return {"example_index": i, "result": result, "queries": 1, "seconds": 1.0, "position": pos}

    cascade = [row(10, "failed", 0), row(20, "successful", 1)]
    whole_split = [row(10, "successful", 10), row(20, "successful", 20)]  # other seeds
    same_sample = [row(10, "failed", 0), row(20, "successful", 1)]
    for logs in ([whole_split, same_sample], [same_sample, whole_split]):
        c = cascade_against_separate(cascade, ["a"], {"a": logs})
        assert c["same_position"] == {"a": 2} and c["disagree"] == [] and c["aua_worst"] == 0.5
    c = cascade_against_separate(cascade, ["a"], {"a": [whole_split]})
    assert c["same_position"] == {"a": 0} and c["disagree"] == [10]
