"""W&B with substance, read back from the offline run on disk.

A tiny IMP job with ``logger=wandb`` (no ``WANDB_MODE``: offline by default) is run end to
end; its ``.wandb`` file is parsed (LevelDB-log framing of ``wandb.proto`` records) and must
hold the job type and group, the training curves (loss, lr, sparsity over several steps of
the dense fine-tune and the IMP rounds), the attack log as a table with the log's columns, and
the record artifact with the cache keys. ``benchmark.aggregate --wandb offline`` then logs
the leaderboard and summary as tables with numeric columns.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
wandb = pytest.importorskip("wandb")


# --- reading an offline run back ---------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``run-<id>.wandb`` file (header ``:W&B``, 32 KiB blocks of
    chunks: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, buf, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The records of a run's file once its ``exit`` record is on disk: wandb's service
    process may still be writing the file when ``run.finish()`` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.2)


def read_run(run_dir: Path) -> dict:
    """Run fields, history rows, summary, artifacts of an ``offline-run-*`` folder."""
    (path,) = run_dir.glob("run-*.wandb")
    out = {"run": None, "history": [], "summary": {}, "artifacts": [], "config": {}}
    for rec in finished_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({_key(i): json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact)
    return out


def table_json(run_dir: Path, row: dict, key: str) -> dict:
    """The JSON of a table logged as ``key`` in history ``row`` (``files/media/table/...``)."""
    assert row[f"{key}/_type"] == "table-file"
    return json.loads((run_dir / "files" / row[f"{key}/path"]).read_text())


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        WANDB_SILENT="true", WANDB_DATA_DIR=str(tmp / "wandb_data"),
        WANDB_CACHE_DIR=str(tmp / "wandb_cache"), WANDB_CONFIG_DIR=str(tmp / "wandb_config"),
    )  # fmt: skip
    return env


@pytest.fixture(scope="module")
def imp_job(tmp_path_factory):
    """One tiny IMP job (3 rounds of 4 steps after a 2-epoch dense fine-tune), W&B on."""
    tmp = tmp_path_factory.mktemp("wandb_job")
    args = [
        "experiment=smoke", "pruner=imp", "budget=reduced", "pruner.max_steps=4",
        "sparsity=0.3", "dense.epochs=2", "attack.num_examples=4", "progress=false",
        "logger=wandb", f"paths.results_dir={tmp / 'results'}",
        f"paths.cache_dir={tmp / 'cache'}", f"paths.log_dir={tmp / 'logs'}",
    ]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "benchmark.run", *args], cwd=ROOT,
                          env=_env(tmp), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = tmp / "results" / "runs" / "smoke"
    (rec_path,) = runs.glob("*.json")
    (run_dir,) = (runs / "wandb" / "wandb").glob("offline-run-*")
    return {"tmp": tmp, "record": json.loads(rec_path.read_text()), "record_path": rec_path,
            "run_dir": run_dir, "run": read_run(run_dir)}  # fmt: skip


@pytest.mark.slow
def test_offline_job_run_holds_curves_table_artifact(imp_job):
    rec, run, run_dir = imp_job["record"], imp_job["run"], imp_job["run_dir"]
    assert rec["status"] == "ok" and rec["wandb_run_id"] == run["run"].run_id
    assert rec["cfg"]["logger"]["mode"] == "offline"  # the default when enabled
    # job type, group per sweep (the experiment), the resolved config
    assert run["run"].job_type == "prune-attack" and run["run"].run_group == "smoke"
    assert run["config"]["pruner"]["_target_"].endswith("IterativeMagnitudePruner")
    assert run["config"]["sparsity"] == 0.3 and run["config"]["choices"]["pruner"] == "imp"
    # training curves: the dense fine-tune and the three IMP rounds, on one monotone axis
    train = [h for h in run["history"] if "train/loss" in h]
    phases = Counter(h["train/phase"] for h in train)
    assert phases["dense fine-tune"] >= 5
    assert {"imp round 1", "imp round 2", "imp round 3"} <= set(phases)
    steps = [h["train/global_step"] for h in train]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) >= 15
    assert all(h["train/lr"] >= 0 and "train/loss_ema" in h for h in train)
    sparsity = [h["train/sparsity"] for h in train if "train/sparsity" in h]
    assert len(sparsity) >= 10  # only the masked (IMP) steps have one
    assert all("train/sparsity" not in h for h in train if h["train/phase"] == "dense fine-tune")
    assert sparsity == sorted(sparsity) and abs(sparsity[-1] - 0.3) < 0.01
    # the per-example attack log as a table with the log's columns
    (row,) = [h for h in run["history"] if "attack/examples/_type" in h]
    table = table_json(run_dir, row, "attack/examples")
    from benchmark.records.logs import read_rows

    log_rows = read_rows(imp_job["record_path"].with_suffix(".attack.jsonl.gz"))
    assert table["columns"] == list(log_rows[0]) and len(table["data"]) == len(log_rows) == 4
    assert [r[table["columns"].index("queries")] for r in table["data"]] == [
        r["queries"] for r in log_rows
    ]
    # the record artifact, with the pruned-weights and dense cache keys
    (art,) = [a for a in run["artifacts"] if a.type == "record"]
    meta = json.loads(art.metadata)
    assert art.name == f"record-{rec['run_id']}"
    assert meta["pruned_key"] == rec["prune_info"]["key"] and meta["pruned_key"]
    assert meta["dense_key"] == rec["dense_info"]["key"] and meta["dense_key"]
    assert (imp_job["tmp"] / "cache" / "pruned" / meta["pruned_key"] / "weights.pt").is_file()
    assert {c.path for c in art.manifest.contents} == {"record.json", "attack.jsonl.gz"}
    # the record's metrics and the phases in the summary
    assert run["summary"]["attack/aua"] == rec["aua"] and run["summary"]["status"] == "ok"
    assert [p["name"] for p in run["summary"]["train/phases"]][:2] == [
        "dense fine-tune", "imp round 1"
    ]  # fmt: skip


@pytest.mark.slow
def test_aggregate_logs_typed_tables_offline(imp_job, monkeypatch):
    from benchmark.reporting import aggregate

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in _env(imp_job["tmp"]).items():
        if key.startswith("WANDB_"):
            monkeypatch.setenv(key, value)
    results = imp_job["tmp"] / "results"
    assert aggregate.main(["--results-dir", str(results), "--summary", "smoke",
                           "--wandb", "offline"]) == 0  # fmt: skip
    (run_dir,) = (results / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["run"].job_type == "aggregate"
    row = {k: v for h in run["history"] for k, v in h.items()}
    board = table_json(run_dir, row, "tables/leaderboard")
    first = dict(zip(board["columns"], board["data"][0], strict=True))
    assert first["pruner"] == "imp" and first["sparsity_target"] == 0.3
    for col in ("aua_mean", "clean_acc_mean", "sparsity_actual_mean", "n"):
        assert isinstance(first[col], (int, float)) and not isinstance(first[col], bool), col
    summary = table_json(run_dir, row, "tables/summary_smoke")
    cells = dict(zip(summary["columns"], summary["data"][0], strict=True))
    assert isinstance(cells["clean %"], float) and isinstance(cells["clean % ci_low"], float)
    assert isinstance(cells["deepwordbug Aua %"], (int, float))
    assert isinstance(cells["deepwordbug Suc %"], float)
    assert isinstance(cells["deepwordbug Aua/Suc %"], str)  # the text is kept beside
    assert cells["clean %"] == pytest.approx(100 * imp_job["record"]["clean_acc"], abs=0.05)


# --- quick checks (no job) ---------------------------------------------------------------------


def test_typed_frame_makes_numbers_numeric():
    from benchmark.records.tracking import typed_frame, typed_table

    df = pd.DataFrame({
        "pruner": ["none", "imp"], "seeds": ["1", "3"], "n": [1, 2],
        "clean %": ["88.3 [86.0, 90.3]", "89.0 [86.7, 90.9]"],
        "tf Aua/Suc %": ["12.2 [10.2, 14.5] / 86.2", "not run"],
        "acc": ["0.91 ± 0.02", "0.88 ± 0.01"], "note": [None, "x"],
    })  # fmt: skip
    out = typed_frame(df)
    numeric = ["seeds", "n", "clean %", "clean % ci_low", "clean % ci_high", "tf Aua %",
               "tf Aua % ci_low", "tf Aua % ci_high", "tf Suc %", "acc", "acc std"]  # fmt: skip
    for col in numeric:
        assert pd.api.types.is_numeric_dtype(out[col]), col
    assert out["tf Aua %"].tolist()[0] == 12.2 and pd.isna(out["tf Aua %"].tolist()[1])
    assert out["tf Suc %"].tolist()[0] == 86.2 and out["acc std"].tolist() == [0.02, 0.01]
    assert out["clean % (text)"].tolist()[0] == "88.3 [86.0, 90.3]"
    types = {k: str(v) for k, v in typed_table(df)._column_types.params["type_map"].items()}
    assert all("Number" in types[c] for c in numeric) and "String" in types["pruner"]


def test_training_loop_reports_to_the_sink_only_when_set(tiny_model, tiny_examples):
    from benchmark.pruners.base import apply_masks, full_masks, remove_mask_hooks
    from benchmark.training import loop

    model, tok = tiny_model
    points: list[tuple[dict, int, str]] = []
    cfg = loop.TrainConfig(max_steps=6, batch_size=16, lr=1e-3, group_by_length=False)
    dev = torch.device("cpu")
    loop.train(model, tok, tiny_examples["train"], cfg, 32, dev)  # no sink: nothing, no error
    loop.report_metrics({"heldout_acc": 0.5})
    masks = {n: m.clone() for n, m in full_masks(model).items()}
    for m in masks.values():
        m.view(-1)[: m.numel() // 4] = False
    loop.set_metrics_sink(lambda metrics, step, phase: points.append((metrics, step, phase)))
    try:
        loop.train(model, tok, tiny_examples["train"], cfg, 32, dev, desc="dense")
        apply_masks(model, masks, permanent=False)
        try:
            loop.train(model, tok, tiny_examples["train"], cfg, 32, dev, desc="masked",
                       metrics=lambda: {"extra": 1.0})  # fmt: skip
        finally:
            remove_mask_hooks(model)
        loop.report_metrics({"heldout_acc": 0.75, "skipped": None})
    finally:
        loop.set_metrics_sink(None)
    assert [s for _, s, _ in points[:12]] == list(range(1, 13))
    assert {p for _, _, p in points} == {"dense", "masked"}
    assert all({"loss", "loss_ema", "lr", "phase_step"} <= set(m) for m, _, _ in points[:12])
    assert all("sparsity" not in m for m, _, p in points if p == "dense")
    masked = [m for m, _, p in points[:12] if p == "masked"]
    assert len(masked) == 6 and all(m["extra"] == 1.0 for m in masked)
    assert all(abs(m["sparsity"] - 0.25) < 0.01 for m in masked)
    assert points[-1] == ({"heldout_acc": 0.75}, 12, "masked")
    assert not loop.metrics_enabled()
