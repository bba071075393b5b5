"""Every paper preset through its script, on the local Hub (scripts/rehearse.py), offline.

``scripts/reproduce.sh <table>`` runs the sweeps of ``conf/table/<table>.yaml`` and rebuilds
the paper-layout table. Here each paper table runs as one real ``reproduce.sh`` process on the
local Hub's stand-in models, datasets and attack resources (the environment
``scripts/rehearse.sh`` exports), shrunk with command-line overrides only: one seed, two
attacked sentences, ``budget=reduced`` for the training-based pruners. The presets share one
results and cache folder, as one user reproducing every table does, so a dense model or a
pruned model an earlier table made is reused (a preset run on its own makes them itself).
Marked ``slow``; they run in CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["akr_table1", "akr_table2", "akr_table6", "robustt_table1", "robustt_table3"]
# The attacks that read downloaded resources (stand-ins here) and the Hub model every preset
# names (conf/model/bert_base_uncased.yaml).
STOCK = {"textfooler", "textbugger", "bertattack", "bae", "bertattack_robustt", "textdefender"}
MODEL = "bert-base-uncased"
SHRINK = ["seed=0", "attack.num_examples=2", "budget=reduced", "progress=false"]
# An `ours` cell of the Markdown table: a number with its interval and notes, or the reason
# there is none (`n/a: ...` = a method not in this benchmark, `not measured: ...` = records
# without a value of this metric).
NUMBER = re.compile(r"-?\d+(\.\d+)?(±\d+(\.\d+)?)?( \[-?[\d.]+, -?[\d.]+\])?( \([^()]+\))?")
NOT_IN_BENCHMARK = re.compile(r"n/a: \S.*")
NOT_MEASURED = re.compile(r"not measured: \S.*")
# Metrics defined over the attacked examples the model got right: none when it got all wrong.
UNDEFINED_WHEN_ALL_WRONG = {"Suc%", "#Query"}


def _env(hub: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "TA_CACHE"))}  # fmt: skip
    return {**env, **hub["env"], "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "TQDM_DISABLE": "1",
            "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Results, caches and Hydra logs shared by the presets of this module."""
    return tmp_path_factory.mktemp("presets")


def ours_cells(markdown: str) -> list[tuple[str, str, str]]:
    """``(method label, column, text)`` of every ``ours`` cell of the table in ``markdown``."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = []
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        assert len(row) == len(header), line
        method = row[header.index("Method")]
        cells += [(method, name, text) for name, text in zip(header, row, strict=True)
                  if name.endswith(" ours")]  # fmt: skip
    return cells


def check_cells(markdown: str, spec: dict) -> None:
    """Every ``ours`` cell of a paper table: a number, or the reason it has none."""
    cells = ours_cells(markdown)
    assert cells
    missing = {spec["labels"]["method"][m] for m, v in spec["methods"].items() if "missing" in v}
    for method, column, text in cells:
        if method in missing:  # a method the spec marks as not in this benchmark
            assert NOT_IN_BENCHMARK.fullmatch(text), (method, column, text)
        elif column.split()[-2] in UNDEFINED_WHEN_ALL_WRONG:  # a number or why there is none
            assert NUMBER.fullmatch(text) or NOT_MEASURED.fullmatch(text), (column, text)
        else:  # accuracy, clean accuracy under the attack's sample, Aua: always a number
            assert NUMBER.fullmatch(text), (method, column, text)


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _records(results: Path, experiments: list[str]) -> list[dict]:
    return [json.loads(p.read_text()) for exp in experiments
            for p in sorted((results / "runs" / exp).glob("*.json"))]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("table", PRESETS)
def test_paper_table_through_reproduce_sh(local_hub, workdir, table):
    """``scripts/reproduce.sh <table>`` with overrides only: exit 0, the table written, every
    `ours` cell a number or the reason it is empty, every record ok on the local Hub's commits,
    every stock attack's record on the stand-in resources."""
    manifest = local_hub["manifest"]
    why = manifest["not_built"].get("universal-sentence-encoder")
    if why:  # every paper table runs a stock attack
        pytest.skip(f"Universal Sentence Encoder stand-in not built: {why}")
    spec = yaml.safe_load((ROOT / "conf" / "table" / f"{table}.yaml").read_text())
    results = workdir / "results"
    args = [*local_hub["env"]["RPB_REHEARSAL_ARGS"].split(), f"paths.results_dir={results}",
            f"paths.cache_dir={workdir}/cache", f"paths.log_dir={workdir}/logs", *SHRINK]  # fmt: skip
    start, cpu = time.monotonic(), _children_cpu()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce.sh"), table, *args],
                          cwd=workdir, env=_env(local_hub), capture_output=True, text=True,
                          timeout=1500)  # fmt: skip
    # the cost this test adds (docs/rehearsal.md, "Timing"), shown with `pytest -s`
    print(f"\n{table}: reproduce.sh {time.monotonic() - start:.0f} s wall, "
          f"{_children_cpu() - cpu:.0f} s CPU")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    out = results / "tables"
    assert all((out / f"{table}.{ext}").is_file() for ext in ("md", "csv", "tex"))
    check_cells((out / f"{table}.md").read_text(), spec)

    recs = _records(results, spec["experiments"])
    assert {r["exp_name"] for r in recs} == set(spec["experiments"])
    hub_data = manifest["datasets"]
    for rec in recs:
        assert rec["status"] == "ok", (rec["exp_name"], rec.get("error"))
        assert rec["seed"] == 0 and rec["n_total"] == 2
        pretrained = rec["sources"]["model"]["pretrained"]
        assert (pretrained["id"], pretrained["commit"]) == (MODEL, manifest["models"][MODEL])
        data = rec["sources"]["data"]
        assert data["commit"] == hub_data[data["path"]]["commit"]
        if rec["attack"] in STOCK:  # read its resources from the stand-ins, and says so
            assert rec["sources"]["resources"] == "stand-in", rec["attack"]
            for kind, entry in rec["sources"]["attack_resources"].items():
                assert entry.get("manifest", {}).get("stand_in") is True, (kind, entry)
        if rec["pruner"] not in ("none", "akr"):  # the training-based pruners, shrunk
            assert rec["cfg"]["budget"]["name"] == "reduced", rec["pruner"]
