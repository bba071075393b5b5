"""Clean predictions reused across the jobs of one pruned model (benchmark/jobs/pipeline.py,
``_clean_eval``): the second attack job of a pruned model reads the first's predictions, with
the numbers it would have computed, and the record says so; other texts never hit the entry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_contract_cli import base_args, call


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("clean_reuse")
    return {"results": base / "results", "cache": base / "cache", "base": base}


def _records(dirs):
    return {json.loads(p.read_text())["attack"] + ":" + str(json.loads(p.read_text())["cfg"].get(
        "max_eval_examples")): json.loads(p.read_text())
        for p in (dirs["results"] / "runs").rglob("*.json")}  # fmt: skip


def test_second_job_of_a_pruned_model_reads_the_clean_predictions(dirs, caplog, capsys):
    args = [*base_args(dirs), "pruner=magnitude"]
    assert call([*args, "attack=none"], caplog, capsys)[0] == 0
    assert call([*args, "attack=deepwordbug"], caplog, capsys)[0] == 0
    recs = _records(dirs)
    first, second = recs["none:None"], recs["deepwordbug:None"]
    assert first["clean_from_cache"] is None
    entry = dirs["cache"] / second["clean_from_cache"]
    assert entry.is_file() and entry.parent.name == first["prune_info"]["key"]
    fields = ("clean_acc", "n_eval", "n_eval_correct", "ece", "mean_max_prob",
              "pred_majority_share", "clean_acc_ci_low")  # fmt: skip
    assert {k: second[k] for k in fields} == {k: first[k] for k in fields}
    # what the entry holds is what the evaluation computes: a third job without the pruned
    # cache (so without the clean cache) gets the same numbers
    assert call([*args, "attack=none", "cache_pruned=false", "force=true"], caplog, capsys)[0] == 0
    again = _records(dirs)["none:None"]
    assert again["clean_from_cache"] is None
    assert {k: again[k] for k in fields} == {k: first[k] for k in fields}
    with np.load(entry) as z:
        assert z["probs"].shape == (first["n_eval"], 2)


def test_other_texts_do_not_hit_the_entry(dirs, caplog, capsys):
    args = [*base_args(dirs), "pruner=magnitude", "attack=none", "max_eval_examples=5"]
    assert call(args, caplog, capsys)[0] == 0
    rec = _records(dirs)["none:5"]
    assert rec["clean_from_cache"] is None and rec["n_eval"] == 5
    assert len(list((dirs["cache"] / "pruned" / rec["prune_info"]["key"]).glob("clean-*.npz"))) == 2
