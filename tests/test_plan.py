"""``scripts/reproduce.sh NAME --plan``: the jobs, their records, what is missing, the cost;
nothing is run or written."""

from __future__ import annotations

import json
import logging

from benchmark.jobs import plan as planner
from benchmark.reporting import reproduce


def test_plan_counts_jobs_and_records_and_writes_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="benchmark.reproduce")
    args = [f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'c'}"]
    assert reproduce.main(["smoke", "--plan", *args]) == 0
    first = caplog.text
    caplog.clear()
    sweeps, _ = reproduce.plan("smoke", None, args)
    jobs = [j for s in sweeps for j in planner.expand(s)]
    assert f"jobs: {len(jobs)} total, 0 with records" in first
    assert not (tmp_path / "results").exists() and not (tmp_path / "c").exists()
    # a record of one job, where a run would write it: the plan counts it
    ident = planner.identify(jobs[0])
    ident.path.parent.mkdir(parents=True)
    ident.path.write_text(json.dumps({"run_id": ident.run_id, "status": "ok"}))
    assert reproduce.main(["smoke", "--plan", *args]) == 0
    assert f"jobs: {len(jobs)} total, 1 with records" in caplog.text


def _value(job: list[str], key: str) -> str:
    return next(x.split("=", 1)[1] for x in job if x.startswith(key + "="))


def test_sweep_expansion_is_hydras():
    """The preset's sweeper params, then the command line's values (the later wins)."""
    jobs = planner.expand(["-m", "experiment=embedded_post_training", "pruner=akr,wanda",
                           "sparsity=0.5"])  # fmt: skip
    assert len(jobs) == 2 * 4  # 2 pruners x the preset's 4 attacks, one sparsity
    assert {_value(j, "pruner") for j in jobs} == {"akr", "wanda"}
    assert {_value(j, "attack") for j in jobs} == {
        "deepwordbug", "pwws", "textfooler_offline", "textbugger_offline"
    }  # fmt: skip
    assert {_value(j, "sparsity") for j in jobs} == {"0.5"}


def test_missing_resources_are_named(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="benchmark.reproduce")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    sweeps = [
        [
            "-m",
            "experiment=smoke",
            "model=bert_base_uncased",
            "attack=textfooler",
            f"paths.results_dir={tmp_path / 'r'}",
            "paths.counterfitted_embeddings=null",
        ]
    ]
    planner.run_plan(sweeps)
    out = caplog.text
    assert "Hub bert-base-uncased (no commit in the local cache; cannot be fetched" in out
    assert "counter-fitted embeddings" in out
