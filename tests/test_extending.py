"""docs/extending.md's examples, taken from the page itself and run.

Each fenced block that starts with a ``# <path>`` comment is written to that path under a
temporary folder; the user's pruner then runs through the CLI from ``--config-dir`` like a
built-in one, in a sweep beside ``magnitude``; the dataset with its own column names, the
attack and the table spec are used the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"


def doc_files() -> dict[str, str]:
    """``path -> content`` of every fenced block whose first line is ``# <path>``."""
    out = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", DOC.read_text(), flags=re.S):
        first = block.partition("\n")[0]
        m = re.match(r"#\s+(\S+\.(?:py|yaml))", first)
        if m:
            out[m.group(1)] = block
    return out


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("user")
    for rel, text in doc_files().items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    return base


def test_the_page_has_every_example():
    names = set(doc_files())
    assert {"my_pruners.py", "my_conf/pruner/random_mask.yaml", "my_conf/model/my_bert.yaml",
            "my_conf/dataset/reviews.yaml", "my_conf/attack/dwb_budget.yaml",
            "my_tables/random_vs_magnitude.yaml"} <= names  # fmt: skip


def run(args, user_dir, **env):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": f"{user_dir}{os.pathsep}{ROOT}", **env}  # fmt: skip
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)  # fmt: skip


def test_user_pruner_from_config_dir_is_validated(user_dir, tmp_path):
    out = run(["benchmark.run", "--config-dir", str(user_dir / "my_conf"), "experiment=smoke",
               "pruner=random_mask", "pruner.scoep=x", f"paths.results_dir={tmp_path}"],
              user_dir)  # fmt: skip
    assert out.returncode == 2 and "pruner.scoep" in out.stdout and "Traceback" not in out.stdout


@pytest.mark.slow
def test_user_pruner_dataset_attack_and_table(user_dir, tmp_path):
    res, cache = tmp_path / "results", tmp_path / "cache"
    common = [f"paths.results_dir={res}", f"paths.cache_dir={cache}", "progress=false",
              "exp_name=mine"]  # fmt: skip
    out = run(["benchmark.run", "-m", "--config-dir", str(user_dir / "my_conf"),
               "experiment=smoke", "exp_name=mine", "pruner=random_mask,magnitude",
               "attack.num_examples=4", *common], user_dir)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    recs = {json.loads(p.read_text())["pruner"]: json.loads(p.read_text())
            for p in (res / "runs" / "mine").glob("*.json")}  # fmt: skip
    assert set(recs) == {"random_mask", "magnitude"}
    assert recs["random_mask"]["status"] == "ok"
    assert abs(recs["random_mask"]["sparsity_actual"] - 0.5) < 0.01
    # the user's table spec, by path
    out = run(["benchmark.aggregate", "--results-dir", str(res), "--table",
               str(user_dir / "my_tables" / "random_vs_magnitude.yaml")], user_dir)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    table = (res / "tables" / "random_vs_magnitude.md").read_text()
    assert "random_mask" in table and "not run" not in table.split("magnitude")[0][-200:]
    # a CSV with its own column names, and the user's attack with its limits
    data = tmp_path / "data" / "reviews"
    data.mkdir(parents=True)
    from benchmark.data.tiny import tiny_splits

    for split, name in (("train", "train"), ("validation", "validation")):
        rows = ["review,stars"] + [f'"{t}",{y}' for t, y in tiny_splits()[split]]
        (data / f"{name}.csv").write_text("\n".join(rows) + "\n")
    out = run(["benchmark.run", "--config-dir", str(user_dir / "my_conf"), "experiment=smoke",
               "dataset=reviews", f"paths.data_dir={tmp_path / 'data'}", "attack=dwb_budget",
               "attack.num_examples=4", *common], user_dir)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    rec = next(json.loads(p.read_text()) for p in (res / "runs" / "mine").glob("*.json")
               if json.loads(p.read_text())["dataset"] == "reviews")  # fmt: skip
    assert rec["status"] == "ok" and rec["attack"] == "dwb_budget" and rec["n_total"] == 4
    assert rec["cfg"]["data_source"]["folder"] == "reviews"
