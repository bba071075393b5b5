"""The command line end to end on the tiny model: bad input, skip of finished jobs, a sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.records.logs import read_rows

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, tmp: Path, module: str = "benchmark.run") -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` in a subprocess with results and caches under ``tmp``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
    paths = [] if module != "benchmark.run" else [
        f"paths.results_dir={tmp}/results", f"paths.cache_dir={tmp.parent}/shared_cache",
        f"paths.log_dir={tmp}/logs",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", module, *args, *paths], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pruner=magnitud"], "unknown pruner 'magnitud' (did you mean 'magnitude'?); valid:"),
        (["attack=textfool"], "unknown attack 'textfool'"),
        (["budget=reduce"], "unknown budget 'reduce' (did you mean 'reduced'?)"),
        (["sparsity=1.0"], "sparsity must be in [0, 1), got 1.0"),
        (["-m", "sparsity=0.3,-0.1"], "sparsity must be in [0, 1), got -0.1"),
        (["sparsity=abc"], "sparsity must be a number in [0, 1), got 'abc'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    proc = run_cli(*args, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr
    out = (proc.stdout + proc.stderr).strip()
    assert message in out
    assert "Traceback" not in out and len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paths.data_dir=/nonexistent/data"], "missing data file /nonexistent/data/sst2/validation.csv"),
        (["model.pretrained=/nonexistent/model", "dataset=tiny"], "model path /nonexistent/model does not exist"),
    ],
)  # fmt: skip
def test_missing_files_exit_2(tmp_path, args, message):
    proc = run_cli(*args, "attack=none", tmp=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert message in out and "Traceback" not in out
    records = list((tmp_path / "results" / "runs").glob("*/*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "failed"


def test_bad_method_config_in_a_sweep_leaves_a_failed_record(tmp_path):
    proc = run_cli("-m", "experiment=smoke", "pruner.granularity=rowwise", tmp=tmp_path)
    assert proc.returncode != 0
    (rec_path,) = (tmp_path / "results" / "runs" / "smoke").glob("*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "failed" and rec["pruner"] == "magnitude"
    assert rec["error"].startswith("UserError: invalid pruner config 'magnitude': ValueError:")
    assert "granularity" in rec["error"]


def test_smoke_run_then_skip(tmp_path):
    first = run_cli("experiment=smoke", tmp=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (rec_path,) = (tmp_path / "results" / "runs" / "smoke").glob("*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "ok" and rec["pruner"] == "magnitude" and rec["dataset"] == "tiny"
    assert rec["n_success"] + rec["n_failed"] + rec["n_skipped"] == rec["n_total"] == 8
    assert rec["aua"] <= rec["attack_clean_acc"] and abs(rec["sparsity_actual"] - 0.5) < 0.01
    assert rec["dense_acc"] == 1.0  # the tiny task is learnable
    assert rec["dense_info"]["intra_op_threads"] >= 1  # training depends on the thread count
    log_file = rec_path.with_name(f"{rec['run_id']}.attack.jsonl.gz")
    assert log_file.read_bytes()[:2] == b"\x1f\x8b"  # compressed when the job ended
    assert not list(rec_path.parent.glob("*.attack.jsonl")) and not list(
        rec_path.parent.glob("*.partial.jsonl")
    )
    # the protocol's per-record statistics and the cost figure
    assert rec["aua_ci_low"] <= rec["aua"] <= rec["aua_ci_high"]
    assert rec["clean_acc_ci_low"] <= rec["clean_acc"] <= rec["clean_acc_ci_high"]
    assert 0.5 <= rec["pred_majority_share"] <= 1 and 0 <= rec["ece"] <= 1
    assert 0 <= rec["constant_clf_aua"] <= 1 and rec["n_limit"] == 0
    assert rec["inference_ms"] > 0 and rec["inference_ms_dense"] > 0
    assert rec["inference"]["pruned"]["batch_size"] == 32
    assert rec["compute"]["torch_threads"] >= 1 and rec["cfg"]["data_source"]["kind"] == "builtin"
    mtime = rec_path.stat().st_mtime_ns
    second = run_cli("experiment=smoke", tmp=tmp_path)
    assert second.returncode == 0 and "skip: record" in second.stdout + second.stderr
    assert rec_path.stat().st_mtime_ns == mtime  # nothing recomputed or rewritten
    forced = run_cli("experiment=smoke", "force=true", "attack=none", tmp=tmp_path)
    assert forced.returncode == 0
    assert len(list((tmp_path / "results" / "runs" / "smoke").glob("*.json"))) == 2


@pytest.mark.slow
def test_multirun_sweep_and_leaderboard(tmp_path):
    proc = run_cli(
        "-m", "experiment=smoke", "pruner=none,magnitude", "sparsity=0.0,0.5", "attack.num_examples=4",
        tmp=tmp_path,
    )  # fmt: skip
    # pruner=none at 0.5 is not a dense row: that job stops with one line, the others run
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "pruner=none is the dense model" in proc.stdout + proc.stderr
    records = [
        json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "smoke").glob("*.json")
    ]
    assert len(records) == 3 and {r["status"] for r in records} == {"ok"}
    assert {(r["pruner"], r["sparsity_target"]) for r in records} == {
        ("none", 0.0), ("magnitude", 0.0), ("magnitude", 0.5)
    }  # fmt: skip
    for r in records:
        assert abs(r["sparsity_actual"] - r["sparsity_target"]) < 0.01
    agg = run_cli(
        "--results-dir", str(tmp_path / "results"), tmp=tmp_path, module="benchmark.aggregate"
    )
    assert agg.returncode == 0, agg.stderr
    board = (tmp_path / "results" / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 1 + 3  # header + one row per (pruner, sparsity)
    assert (tmp_path / "results" / "leaderboard.md").is_file()


@pytest.mark.slow
def test_training_pruners_sweep_from_the_cli(tmp_path):
    """The training-based pruners in one sweep, under the reduced budget, on the tiny model."""
    names = ["rticket", "seven", "randmask", "imp", "lth"]
    proc = run_cli(
        "-m", "experiment=smoke", f"pruner={','.join(names)}", "budget=reduced", "sparsity=0.3",
        "attack.num_examples=4", "progress=false", tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = [
        json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "smoke").glob("*.json")
    ]
    assert sorted(r["pruner"] for r in records) == sorted(names)
    for r in records:
        assert r["status"] == "ok" and r["cfg"]["budget"]["name"] == "reduced"
        assert abs(r["sparsity_actual"] - 0.3) < 0.01 and r["aua"] <= r["attack_clean_acc"]
    steps = {r["pruner"]: r["cfg"]["pruner"] for r in records}
    assert steps["seven"]["max_steps"] == 400 and steps["imp"]["max_steps"] == 60
    assert "step 40/400" in proc.stdout + proc.stderr  # bars off: the loop logs its progress


@pytest.mark.slow
def test_beyond_pruners_from_the_cli(tmp_path):
    """The new post-training methods run through the CLI as a sweep; the structured record
    holds its own sparsity, the parameters removed and the latency columns."""
    proc = run_cli("-m", "experiment=smoke", "attack=none",
                   "pruner=ria,owl_wanda,dsnot,structured", tmp=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = {r["pruner"]: r for r in (json.loads(p.read_text()) for p in
            (tmp_path / "results" / "runs" / "smoke").glob("*.json"))}  # fmt: skip
    assert set(recs) == {"ria", "owl_wanda", "dsnot", "structured"}
    assert all(r["status"] == "ok" for r in recs.values())
    s = recs["structured"]
    assert s["params_removed"] > 0 and 0.3 < s["sparsity_actual"] < 0.7
    assert s["latency_ms_pruned"] > 0 and s["latency_ms_dense"] > 0
    assert "layer_sparsity" in recs["owl_wanda"]["prune_info"]["method"]
    assert recs["owl_wanda"]["cfg"]["pruner_base"]["name"] == "wanda"


@pytest.mark.slow
def test_transfer_replays_the_dense_models_adversarial_texts(tmp_path):
    dense = run_cli("experiment=smoke", "pruner=none", "sparsity=0.0", tmp=tmp_path)
    assert dense.returncode == 0, dense.stdout[-2000:] + dense.stderr[-2000:]
    (log,) = (tmp_path / "results" / "runs" / "smoke").glob("*.attack.jsonl.gz")
    broken = read_rows(log)
    broken = [r for r in broken if r["result"] == "successful"]
    plain_name = log.with_name(log.name.removesuffix(".gz"))  # an old name resolves to the .gz
    out = run_cli("experiment=smoke", "pruner=magnitude", "attack=transfer",
                  f"attack.options.source={plain_name}", tmp=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rec = next(json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "smoke")
               .glob("*.json") if json.loads(p.read_text())["attack"] == "transfer")  # fmt: skip
    assert rec["n_total"] == len(broken) > 0
    assert rec["n_failed"] + rec["n_success"] == rec["n_total"]
    rec_log = tmp_path / "results" / "runs" / "smoke" / f"{rec['run_id']}.attack.jsonl.gz"
    rows = read_rows(rec_log)
    # identity: the source's run id and log content, not its path
    assert rec["cfg"]["transfer_source"]["run_id"] == log.name.split(".")[0]
    assert rec["cfg"]["attack"]["options"]["source"] == str(plain_name)  # recorded, not identity
    assert [r["example_index"] for r in rows] == [r["example_index"] for r in broken]
    from benchmark.reporting.records import load_records

    df = load_records(tmp_path / "results")  # tables name the source attack
    assert "transfer (deepwordbug)" in set(df["attack"])
    missing = run_cli("experiment=smoke", "attack=transfer",
                      f"attack.options.source={tmp_path / 'nope.jsonl'}", tmp=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "attack.options.source" in missing.stdout + missing.stderr


@pytest.mark.parametrize("attack", ["none", "transfer"])
def test_a_preset_with_a_per_attack_protocol_resolves_every_attack(tmp_path, attack):
    """``embedded_post_training`` sets the attacked sample per attack; ``attack=none`` (prune
    and clean accuracy) and ``attack=transfer`` must resolve too, not fail on a missing key."""
    out = run_cli("--cfg", "job", "--resolve", "experiment=embedded_post_training",
                  f"attack={attack}", tmp=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "num_examples: 0" in out.stdout
