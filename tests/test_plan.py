"""``scripts/reproduce.sh NAME --plan``: the jobs, their records, what is missing, the cost;
nothing is run or written."""

from __future__ import annotations

import json
import logging

import pytest

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


def _fake_record(folder, model_cfg, **fields):
    """An ``ok`` record with the measured seconds a plan reads (nothing else is needed)."""
    rec = {"run_id": fields["run_id"], "status": "ok", "device": "cpu", "model": model_cfg["name"],
           "dataset": "tiny", "cfg": {"model": model_cfg}, **fields}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{fields['run_id']}.json").write_text(json.dumps(rec))


def test_a_model_without_records_is_scaled_by_a_calibration_run(tmp_path, caplog):
    """A model with no records takes another model's rates on the same dataset, pruner and
    attack, times the forward-time ratio of the two architectures measured by the calibration
    run; the plan says so. Without another model's rates it says ``no measured rate``."""
    caplog.set_level(logging.INFO, logger="benchmark.reproduce")
    bert = {"name": "tiny_bert", "pretrained": "tiny:bert", "finetuned": None, "revision": None}
    runs = tmp_path / "results" / "runs" / "elsewhere"
    _fake_record(runs, bert, run_id="a", pruner="magnitude", attack="deepwordbug",
                 sparsity_target=0.5, dense_info={"seconds": 100.0}, prune_seconds=10.0,
                 attack_seconds=40.0, n_total=8, duration_s=160.0, n_eval=10)  # fmt: skip
    args = [f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'c'}"]
    sweep = ["-m", "experiment=smoke", "model=tiny_distilbert", "pruner=magnitude",
             "sparsity=0.5", *args]  # fmt: skip
    # the two tiny architectures forward at about the same speed: fixed calibration
    # measurements make the arithmetic visible (the measurement itself is tested below)
    calibration = planner.Calibration()
    calibration._cache = {("tiny_distilbert", 32): 3e-3, ("tiny_bert", 32): 1e-3}
    [job] = _plan_with(sweep, tmp_path, calibration)[1]
    assert job.scaled == "tiny_bert x3"
    # the other model's parts (dense 100 s, pruning 10 s, clean 10 x 1 s, attack 8 x 5 s),
    # each times 3
    assert job.parts == pytest.approx({"dense fine-tune": 300.0, "pruning": 30.0,
                                       "clean evaluation": 30.0, "attack (8 examples)": 120.0})  # fmt: skip
    assert job.seconds == pytest.approx(480.0)
    assert reproduce.main(["smoke", "--plan", *args, "model=tiny_distilbert"]) == 0
    assert "scaled by a forward-time calibration run" in caplog.text
    # an attack the other model has no record of: no rate to scale
    [job] = _plan_with([*sweep, "attack=pwws"], tmp_path, planner.Calibration())[1]
    assert job.seconds is None and job.scaled is None


def _plan_with(sweep, tmp_path, calibration):
    """``make_plan`` of one sweep with a given calibration (its measurements stay readable)."""
    rates = planner.Rates.from_records(tmp_path / "results", "cpu")
    jobs = []
    for overrides in planner.expand(sweep):
        ident = planner.identify(overrides)
        job = planner.PlannedJob(overrides, run_id=ident.run_id)
        planner.estimate(job, ident.resolved, ident.names, rates, set(), calibration)
        jobs.append(job)
    return sweep, jobs


def test_calibration_needs_the_architectures_config(monkeypatch, tmp_path):
    """The calibration run times a random-weight model of the architecture; a Hub model whose
    config is neither cached nor reachable has no calibration (``None``), not a guess."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    tiny = planner.forward_seconds({"pretrained": "tiny:bert"}, 2, 32)
    assert tiny is not None and tiny > 0
    assert planner.forward_seconds({"pretrained": "no-such-org/no-such-model"}, 2, 32) is None
