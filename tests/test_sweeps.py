"""Resumable and parallel sweeps on the tiny model.

- a multirun killed after its first record and relaunched recomputes nothing finished, ends
  with exactly one record per grid point and leaves no temp files;
- the joblib launcher (2 workers) writes the same kind of records, and the smoke table is
  rebuilt from them;
- concurrent writers of the same pruned-cache key leave one complete entry.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Tiny and quick: accuracy does not matter here.
FAST = ["experiment=smoke", "dense.epochs=2", "attack.num_examples=4", "progress=false"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    return env


def _paths(tmp: Path) -> list[str]:
    return [f"paths.results_dir={tmp / 'results'}", f"paths.cache_dir={tmp / 'cache'}",
            f"paths.log_dir={tmp / 'logs'}"]  # fmt: skip


def _records(tmp: Path) -> dict[str, dict]:
    runs = tmp / "results" / "runs" / "smoke"
    return {p.stem: json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))}


def _temp_files(tmp: Path) -> list[Path]:
    """Leftovers of interrupted writes: temp records, temp pruned-cache folders."""
    found = [p for p in (tmp / "results").rglob("*") if ".tmp" in p.name]
    pruned = tmp / "cache" / "pruned"
    if pruned.is_dir():
        found += [p for p in pruned.iterdir() if ".tmp" in p.name]
    return found


@pytest.mark.slow
def test_killed_multirun_resumes_without_recomputing(tmp_path: Path) -> None:
    grid = ["sparsity=0.1,0.2,0.3,0.4"]
    cmd = [sys.executable, "-m", "benchmark.run", "-m", *FAST, *grid, *_paths(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    runs = tmp_path / "results" / "runs" / "smoke"
    deadline = time.monotonic() + 150
    try:
        while not list(runs.glob("*.json")):
            assert proc.poll() is None, "the sweep ended before writing a record"
            assert time.monotonic() < deadline, "no record within 150 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a hard crash: no cleanup code runs
        proc.wait()
    before = _records(tmp_path)
    mtimes = {p.stem: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert 1 <= len(before) < 4, f"kill came too late to test resuming ({len(before)} records)"

    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _records(tmp_path)
    assert len(after) == 4, sorted(after)  # one record per grid point, no duplicates
    assert sorted(r["sparsity_target"] for r in after.values()) == [0.1, 0.2, 0.3, 0.4]
    assert all(r["status"] == "ok" for r in after.values())
    assert len({r["run_id"] for r in after.values()}) == 4
    for run_id, rec in before.items():  # finished before the kill: kept, not recomputed
        assert after[run_id] == rec
        assert (runs / f"{run_id}.json").stat().st_mtime_ns == mtimes[run_id]
    assert done.stderr.count("skip: record") + done.stdout.count("skip: record") >= len(before)
    assert _temp_files(tmp_path) == []
    entries = list((tmp_path / "cache" / "pruned").iterdir())
    assert entries and all(
        (e / "info.json").is_file() and (e / "weights.pt").is_file() for e in entries
    )


@pytest.mark.slow
def test_joblib_launcher_two_workers_then_table(tmp_path: Path) -> None:
    grid = ["pruner=magnitude,magnitude_global", "sparsity=0.3"]
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    cmd = [sys.executable, "-m", "benchmark.run", "-m", *FAST, *grid, *launcher, *_paths(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    recs = _records(tmp_path)
    assert sorted(r["pruner"] for r in recs.values()) == ["magnitude", "magnitude_global"]
    assert all(r["status"] == "ok" for r in recs.values())
    assert _temp_files(tmp_path) == []
    # The same records feed the aggregator: the smoke table and its plot.
    agg = [sys.executable, "-m", "benchmark.aggregate", "--results-dir", str(tmp_path / "results"),
           "--table", "smoke"]  # fmt: skip
    done = subprocess.run(agg, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = tmp_path / "results" / "tables"
    md = (tables / "smoke.md").read_text(encoding="utf-8")
    assert "| 30%" in md and "not run" in md  # the dense row was not in this sweep
    png = tables / "plots" / "smoke_tiny_deepwordbug.png"
    assert png.stat().st_size > 1000
    assert (tmp_path / "results" / "leaderboard.csv").is_file()


def test_pruned_cache_concurrent_writers_keep_one_entry(tmp_path: Path) -> None:
    from benchmark.jobs.pipeline import _store_pruned

    folder = tmp_path / "pruned" / "abc123"
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    _store_pruned(folder, a, {"seconds": 1.0, "who": "a"})
    _store_pruned(folder, b, {"seconds": 2.0, "who": "b"})  # the key exists: b's copy dropped
    assert json.loads((folder / "info.json").read_text())["who"] == "a"
    state = torch.load(folder / "weights.pt")
    assert torch.equal(state["weight"], a.weight.detach())
    assert sorted(p.name for p in folder.parent.iterdir()) == ["abc123"]


def test_slurm_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmark.run import ROOT as RUN_ROOT

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(RUN_ROOT))
    overrides = ["experiment=smoke", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1


def test_reproduce_plans_the_specs_sweeps():
    from benchmark.reporting.reproduce import UsageError, plan
    from benchmark.reporting.tables import load_spec

    sweeps, agg = plan("akr_table1", "embedded", ["paths.results_dir=/tmp/r"])
    spec = load_spec("akr_table1")
    assert [s[1] for s in sweeps] == [x.split()[0] for x in spec.sweeps]
    assert all(s[-3:] == ["model=minilm_l6", "attack=textfooler_offline",
                          "paths.results_dir=/tmp/r"] for s in sweeps)  # fmt: skip
    assert agg == ["--table", "akr_table1", "--variant", "embedded", "--results-dir", "/tmp/r"]
    sweeps, agg = plan("embedded_training_reduced", None, [])
    assert sweeps == [["-m", "experiment=embedded_training_reduced"]]
    assert agg == ["--summary", "embedded_training_reduced"]
    with pytest.raises(UsageError, match="no table or experiment"):
        plan("akr_tabel1", None, [])


def test_reproduce_takes_a_users_spec_and_names_its_typo_in_one_line(tmp_path, caplog):
    """A path to the user's own spec plans its sweeps and hands the path to the aggregator; a
    typo in it (or a name that is no table) is one line on stderr and exit status 2, and no
    sweep runs."""
    from benchmark.reporting import reproduce

    text = (ROOT / "conf" / "table" / "smoke.yaml").read_text()
    mine = tmp_path / "mine.yaml"
    mine.write_text(text)
    sweeps, agg = reproduce.plan(str(mine), None, [])
    assert len(sweeps) == 2 and agg[:2] == ["--table", str(mine)]
    mine.write_text(text.replace("row_keys:", "row_kees:"))
    for name in (str(mine), "akr_tabel1"):
        caplog.clear()
        assert reproduce.main([name, "--plan"]) == 2
        [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert line.startswith("error: ") and "\n" not in line
    # the real script, without --plan: one line, exit 2, nothing run (no sweep line logged)
    out = subprocess.run(["bash", "scripts/reproduce.sh", str(mine)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr and "+ python" not in out.stderr
    assert "unknown key 'row_kees' (did you mean 'row_keys'?)" in out.stderr


def test_reproduce_beyond_runs_structured_and_pairs_with_the_seeds(monkeypatch):
    """embedded_beyond: its sweep, the structured sweep, the summary, then the paired
    comparisons against akr and sparsegpt of embedded_post_training (same results dir)."""
    from benchmark.reporting import reproduce

    calls = []
    monkeypatch.setattr(reproduce.subprocess, "call", lambda cmd, cwd: calls.append(cmd[2:]) or 0)
    assert reproduce.main(["embedded_beyond", "paths.results_dir=/tmp/r"]) == 0
    runs = [c[2:] for c in calls if c[0] == "benchmark.run"]
    aggs = [c[1:] for c in calls if c[0] == "benchmark.aggregate"]
    assert runs == [["experiment=embedded_beyond", "paths.results_dir=/tmp/r"],
                    ["experiment=embedded_beyond", "pruner=structured", "sparsity=0.3,0.5",
                     "paths.results_dir=/tmp/r"]]  # fmt: skip
    assert aggs[0] == ["--summary", "embedded_beyond", "--results-dir", "/tmp/r"]
    assert aggs[1:] == [["--compare", "embedded_beyond", "--reference", ref, "--reference-exp",
                         "embedded_post_training", "--results-dir", "/tmp/r"]
                        for ref in ("akr", "sparsegpt")]  # fmt: skip


@pytest.mark.slow
def test_reproduce_smoke_end_to_end(tmp_path):
    out = subprocess.run(
        ["bash", "scripts/reproduce.sh", "smoke", f"paths.results_dir={tmp_path / 'r'}",
         f"paths.cache_dir={tmp_path / 'c'}", "progress=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "r" / "tables" / "smoke.md").is_file()
    assert len(list((tmp_path / "r" / "runs" / "smoke").glob("*.json"))) == 5


PER_ATTACK_PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")
                            if "runtime.choices.attack" in p.read_text())  # fmt: skip


@pytest.mark.parametrize("preset", PER_ATTACK_PRESETS)
def test_presets_with_per_attack_tables_take_every_attack(preset):
    """A preset whose protocol is keyed by the attack (sample size, hang guard) composes with
    every attack option, those without a row included (cascade, pwws, the stock recipes):
    a sample size (0: the whole split) and a finite guard, not an interpolation traceback."""
    from benchmark.jobs import plan as planner

    planner._register_resolvers()
    attacks = sorted(p.stem for p in (ROOT / "conf" / "attack").glob("*.yaml"))
    assert {"cascade", "pwws", "deepwordbug"} <= set(attacks)
    for attack in attacks:
        if attack == "transfer":  # needs its source log (tested with transfer jobs)
            continue
        spec = planner.identify([f"experiment={preset}", f"attack={attack}"]).resolved["attack"]
        if attack == "none":
            assert spec["num_examples"] == 0
            continue
        assert spec["num_examples"] >= 0 and spec["max_seconds_per_example"] > 0, attack
