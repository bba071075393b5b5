"""Reports that name bad input instead of hiding it: an experiment that does not exist, an
empty attack log, a log whose lines disagree with its record."""

from __future__ import annotations

import gzip
import json
import logging

from benchmark.reporting import aggregate
from benchmark.reporting.records import load_records


def _record(folder, run_id, n_total=3, n_failed=1, exp="e"):
    rec = {"run_id": run_id, "status": "ok", "exp_name": exp, "model": "m", "dataset": "d",
           "pruner": "magnitude", "attack": "deepwordbug", "seed": 0, "sparsity_target": 0.5,
           "n_total": n_total, "n_failed": n_failed, "aua": n_failed / n_total,
           "cfg": {"seed": 0}}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(rec))


def _log(folder, run_id, results):
    text = "".join(
        json.dumps({"example_index": i, "position": i, "result": r}) + "\n"
        for i, r in enumerate(results)
    )
    (folder / f"{run_id}.attack.jsonl.gz").write_bytes(gzip.compress(text.encode()))


def test_logs_that_cannot_stand_for_their_record_are_named_and_left_out(tmp_path, caplog):
    runs = tmp_path / "runs" / "e"
    for run_id in ("good", "empty", "short", "other"):
        _record(runs, run_id)
    _log(runs, "good", ["failed", "successful", "successful"])
    (runs / "empty.attack.jsonl.gz").write_bytes(b"")
    _log(runs, "short", ["failed", "successful"])  # 2 lines for n_total=3
    _log(runs, "other", ["failed", "failed", "successful"])  # 2 survived, the record says 1
    with caplog.at_level(logging.WARNING):
        df = load_records(tmp_path).set_index("run_id")
    assert df.loc["good", "_log"].endswith("good.attack.jsonl.gz")
    for run_id, why in (("empty", "empty file"), ("short", "2 lines"), ("other", "2 lines surv")):
        assert df.loc[run_id, "_log"] is None or df.loc[run_id, "_log"] != df.loc[run_id, "_log"]
        assert why in df.loc[run_id, "_log_problem"]
        assert f"{run_id}.attack.jsonl.gz left out" in caplog.text


def test_compare_of_a_missing_experiment_is_one_line_and_exit_2(tmp_path, caplog):
    _record(tmp_path / "runs" / "e", "r1")
    argv = ["--results-dir", str(tmp_path), "--compare", "nope", "--reference", "none"]
    with caplog.at_level(logging.ERROR):
        assert aggregate.main(argv) == 2
    assert "no records of experiment 'nope'" in caplog.text and "experiments: e" in caplog.text
