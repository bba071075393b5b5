"""Records: run id, schema, atomic write; attack metrics from counts; data loading."""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmark.attacks.adapter import AttackSummary
from benchmark.data.loading import DatasetSpec, load_split, sample_indices
from benchmark.errors import UserError
from benchmark.records.store import (
    RunRecord,
    read_record,
    run_id_of,
    write_json_atomic,
    write_record,
)


def test_metrics_from_counts():
    s = AttackSummary(n_total=10, n_success=3, n_failed=5, n_skipped=2, avg_queries=40.0,
                      avg_perturbed_frac=0.1, seconds=1.0)  # fmt: skip
    assert s.attack_clean_acc == pytest.approx(0.8)
    assert s.aua == pytest.approx(0.5)
    assert s.asr == pytest.approx(3 / 8)
    # METHODS.md: Suc = (Clean - Aua) / Clean
    assert s.asr == pytest.approx((s.attack_clean_acc - s.aua) / s.attack_clean_acc)
    empty = AttackSummary(4, 0, 0, 4, float("nan"), float("nan"), 0.0)
    assert empty.aua == 0 and math.isnan(empty.asr)


def test_run_id_is_order_independent_and_sensitive():
    a = {"seed": 0, "sparsity": 0.5, "pruner": {"_target_": "x", "lr": 1}}
    b = {"pruner": {"lr": 1, "_target_": "x"}, "sparsity": 0.5, "seed": 0}
    assert run_id_of(a) == run_id_of(b)
    assert run_id_of(a) != run_id_of({**a, "pruner": {"_target_": "x", "lr": 2}})
    # paths, logging and device do not change results, so not the id either
    assert run_id_of(a) == run_id_of({**a, "paths": {"results_dir": "/x"}, "device": "cuda"})
    with_attack = {**a, "attack": {"recipe": "pwws", "workers": 1}}
    assert run_id_of(with_attack) == run_id_of({**a, "attack": {"recipe": "pwws", "workers": 4}})


def _record(**kw) -> RunRecord:
    base = dict(run_id="abc", status="ok", exp_name="e", model="m", dataset="d", pruner="p",
                attack="a", seed=0, sparsity_target=0.5)  # fmt: skip
    return RunRecord(**{**base, **kw})


def test_record_schema_and_roundtrip(tmp_path):
    path = write_record(_record(clean_acc=0.9, aua=0.2), tmp_path)
    assert path == tmp_path / "runs" / "e" / "abc.json"
    data = read_record(path)
    required = {
        "run_id", "status", "error", "exp_name", "model", "dataset", "pruner", "attack",
        "seed", "sparsity_target", "sparsity_actual", "clean_acc", "aua", "asr",
        "avg_queries", "n_total", "n_success", "n_failed", "n_skipped", "dense_acc",
        "prune_seconds", "prune_peak_mem_mb", "git_sha", "versions", "device", "cfg",
    }  # fmt: skip
    assert required <= set(data)
    assert data["clean_acc"] == 0.9


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"v": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"v": Boom()})  # fails while serialising
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["r.json"]  # no temp file left behind


def test_local_data_and_missing_file(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "validation.csv").write_text('text,label\n"a, b",1\nc,0\n')
    spec = DatasetSpec(name="sst2", num_labels=2)
    assert load_split(spec, "validation", str(tmp_path)) == [("a, b", 1), ("c", 0)]
    with pytest.raises(UserError, match=r"missing data file .*train\.csv.*paths\.data_dir"):
        load_split(spec, "train", str(tmp_path))


def test_sample_is_seeded_and_sorted():
    a = sample_indices(872, 100, seed=3)
    assert a == sample_indices(872, 100, seed=3)
    assert a != sample_indices(872, 100, seed=4)
    assert a == sorted(a) and len(set(a)) == 100
    assert sample_indices(10, 0, 0) == list(range(10))


def test_git_dirty_counts_code_not_regenerated_tables_or_docs():
    from benchmark.records.store import code_dirty

    assert not code_dirty("")
    assert not code_dirty(" M results/leaderboard.csv\n M docs/results.md\n M README.md\n")
    assert code_dirty(" M results/leaderboard.csv\n M benchmark/pruners/akr.py\n")
    assert code_dirty("M  conf/pruner/akr.yaml\n")
    assert code_dirty("R  old.py -> benchmark/new.py\n")
    # tests, table writers and claims specs cannot change a record; the stats a job runs can
    assert not code_dirty(
        " M tests/conftest.py\n M benchmark/reporting/tables.py\n"
        " M conf/claims/embedded_imdb.yaml\n M scripts/sync_docs.py\n"
    )
    assert code_dirty(" M benchmark/reporting/stats.py\n")
    assert code_dirty(" M conf/experiment/embedded_imdb.yaml\n")
