"""The papers' path rehearsed on a local Hub (scripts/rehearse.py), offline, end to end.

Every Hub id of ``conf/`` has a stand-in; every model option and Hub dataset loads through the
code a real run takes (``load_model`` / ``load_classifier`` / ``load_split`` from the composed
config) with ``HF_HUB_OFFLINE=1`` and ``paths.data_dir=null``; the records name the commits
the fixture wrote, and the rows reach the evaluation as the fixture wrote them. The CLI
matrix (every layout x every post-training pruner x DeepWordBug) is marked ``slow``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# The tokenizer and model classes AutoTokenizer / AutoModelForSequenceClassification give for
# the real repositories (none of their tokenizer_config.json names a tokenizer_class, so the
# config's model_type decides; DeBERTa-v3's fast tokenizer is converted from its spm.model).
REAL_CLASSES = {
    "bert-base-uncased": ("BertTokenizerFast", "BertForSequenceClassification"),
    "distilbert-base-uncased": ("DistilBertTokenizerFast", "DistilBertForSequenceClassification"),
    "roberta-base": ("RobertaTokenizerFast", "RobertaForSequenceClassification"),
    "microsoft/deberta-v3-base": ("DebertaV2TokenizerFast", "DebertaV2ForSequenceClassification"),
    "textattack/bert-base-uncased-SST-2": ("BertTokenizerFast", "BertForSequenceClassification"),
    "textattack/bert-base-uncased-imdb": ("BertTokenizerFast", "BertForSequenceClassification"),
    "textattack/bert-base-uncased-ag-news": ("BertTokenizerFast", "BertForSequenceClassification"),
}
# The Hub model options and the layout each stands for in the CLI matrix.
LAYOUTS = ["bert_base_uncased", "distilbert_base_uncased", "roberta_base", "deberta_v3_base"]
POST_TRAINING = ["magnitude", "magnitude_global", "wanda", "sparsegpt", "akr", "akr_official",
                 "ria", "owl_wanda", "owl_sparsegpt", "owl_akr", "dsnot", "structured"]  # fmt: skip


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def conf_hub_models() -> dict[str, set[str]]:
    """Hub model ids named in ``conf/model/*.yaml`` -> the options naming them; a
    ``${dataset.<key>}`` interpolation is expanded over every ``conf/dataset/*.yaml``."""
    datasets = [_yaml(p) for p in sorted((CONF / "dataset").glob("*.yaml"))]
    out: dict[str, set[str]] = {}
    for path in sorted((CONF / "model").glob("*.yaml")):
        cfg = _yaml(path)
        for key in ("pretrained", "finetuned"):
            value = cfg.get(key)
            if not value or value == "tiny" or str(value).startswith(("tiny:", "pkg:", "/", ".")):
                continue
            refs = re.findall(r"\$\{dataset\.(\w+)\}", value)
            values = [value]
            for ref in refs:
                values = [v.replace(f"${{dataset.{ref}}}", str(d[ref]))
                          for v in values for d in datasets if d.get(ref)]  # fmt: skip
            for v in values:
                out.setdefault(v, set()).add(path.stem)
    return out


def conf_hub_datasets() -> dict[str, tuple[str, str | None]]:
    """Dataset option -> ``(hub_path, hub_name)`` for every ``conf/dataset/*.yaml`` on the Hub."""
    out = {}
    for path in sorted((CONF / "dataset").glob("*.yaml")):
        cfg = _yaml(path)
        if cfg.get("hub_path"):
            out[path.stem] = (cfg["hub_path"], cfg.get("hub_name"))
    return out


def test_every_hub_id_in_conf_has_a_local_hub_counterpart(rehearse_module):
    """A new Hub model or dataset in conf/ cannot skip the rehearsal."""
    rehearse = rehearse_module
    models = conf_hub_models()
    assert "roberta-base" in models and "textattack/bert-base-uncased-ag-news" in models
    missing = sorted(set(models) - set(rehearse.hub_models()))
    assert not missing, (
        f"Hub ids in conf/model without a stand-in in scripts/rehearse.py: {missing}"
    )
    assert set(REAL_CLASSES) >= set(models), "say which classes the real repository loads as"
    stand_ins = rehearse.hub_datasets()
    for option, (path, name) in conf_hub_datasets().items():
        assert path in stand_ins, f"dataset {option}: {path} has no stand-in"
        assert stand_ins[path].hub_name == name, f"dataset {option}: hub_name {name!r}"
        cfg = _yaml(CONF / "dataset" / f"{option}.yaml")
        spec = stand_ins[path]
        assert {cfg["train_split"], cfg["eval_split"]} <= set(spec.splits)
        assert {cfg["text_column"], cfg["label_column"]} <= set(spec.features)
        labels = spec.features[cfg["label_column"]]
        assert labels[0] == "class" and len(labels[1]) == cfg["num_labels"]


# Runs in a subprocess on the local Hub: composes each option as `python -m benchmark.run`
# does, loads through the product's loaders and prints what came back.
PROBE = r"""
import json, sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from benchmark.jobs.build import job_identity
from benchmark.models.loading import ModelSpec, load_classifier, load_model
from benchmark.data.loading import DatasetSpec, load_split

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("project_root", lambda: str(Path.cwd()))
jobs = json.loads(sys.argv[1])
out = []
with initialize_config_dir(str(Path("conf").resolve()), version_base="1.3"):
    for model, dataset in jobs:
        args = [f"model={model}", f"dataset={dataset}", "paths.data_dir=null"]
        choices = dict(compose("run", overrides=args, return_hydra_config=True).hydra.runtime.choices)
        ident = job_identity(compose("run", overrides=args), choices)
        r = ident.resolved
        spec, data = ModelSpec(**r["model"]), DatasetSpec(**r["dataset"])
        row = {"model": model, "dataset": dataset, "sources": ident.identity["sources"],
               "data_source": ident.identity["data_source"]}
        if spec.finetuned:  # as get_dense loads a given fine-tuned checkpoint
            net, tok = load_classifier(spec.finetuned, data.num_labels, spec.revision,
                                       "model.finetuned")
            row["weight"] = net.classifier.weight.detach().tolist()
        else:  # as the dense fine-tune loads the pre-trained model
            net, tok = load_model(spec, data.num_labels)
        enc = tok(["the movie was good", "stocks fell"], padding=True, return_tensors="pt")
        net(**enc)
        row["loaded"] = [type(tok).__name__, type(net).__name__, net.config.num_labels,
                         sorted(enc)]
        row["splits"] = {s: load_split(data, s, r["paths"]["data_dir"])
                         for s in (data.train_split, data.eval_split)}
        out.append(row)
print("PROBE" + json.dumps(out))
"""


def _env(hub) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, **hub["env"], "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def probe(hub, jobs: list[tuple[str, str]]) -> list[dict]:
    """Load ``(model option, dataset option)`` pairs on the local Hub in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(jobs)], cwd=ROOT,
                          env=_env(hub), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("PROBE", 1)[1])


def test_every_model_option_and_dataset_loads_offline(local_hub):
    """Each Hub model option and each Hub dataset loads as a real run loads it: the classes the
    real repositories give, the fixture's commits in the identity, the fixture's rows in order."""
    import torch

    manifest = local_hub["manifest"]
    absent = manifest["not_built"]  # a tokenizer package not installed (sentencepiece)
    jobs = [(m, "sst2") for m in LAYOUTS if _hub_id(m) not in absent]
    jobs += [("bert_base_uncased_textattack", d) for d in ("sst2", "imdb", "agnews")]
    rows = probe(local_hub, jobs)
    hub_ids = conf_hub_models()
    assert {m for m, _ in jobs} >= {o for i, opts in hub_ids.items() for o in opts
                                    if i not in absent}  # fmt: skip
    for row in rows:
        which = "finetuned" if row["model"] == "bert_base_uncased_textattack" else "pretrained"
        src = row["sources"][which]
        assert src["kind"] == "hub" and src["commit"] == manifest["models"][src["id"]], row["model"]
        tok_cls, net_cls, n, inputs = row["loaded"]
        assert (tok_cls, net_cls) == REAL_CLASSES[src["id"]]
        assert n == {"sst2": 2, "imdb": 2, "agnews": 4}[row["dataset"]]
        # as the real tokenizers: DistilBERT and RoBERTa give no token_type_ids, DeBERTa-v3's
        # does (zeros, which its type_vocab_size=0 embedding ignores)
        assert ("token_type_ids" in inputs) == (
            row["model"] not in ("distilbert_base_uncased", "roberta_base")
        )
        data = row["data_source"]
        stand_in = manifest["datasets"][data["path"]]
        assert data["kind"] == "hub" and data["commit"] == stand_in["commit"]
        for split, got in row["splits"].items():  # the rows, in order, with their labels
            assert [tuple(r) for r in got] == [tuple(r) for r in stand_in["splits"][split]], (
                row["dataset"],
                split,
            )
        if which == "finetuned":  # the checkpoint's own head, not a new one
            snap = Path(local_hub["dir"]) / "hub" / f"models--{src['id'].replace('/', '--')}"
            saved = torch.load(snap / "snapshots" / src["commit"] / "pytorch_model.bin")
            assert torch.equal(torch.tensor(row["weight"]), saved["classifier.weight"])
    assert {r["dataset"] for r in rows} == set(conf_hub_datasets())
    if absent:  # the others passed; say what was not rehearsed
        pytest.skip(f"not rehearsed: {absent}")


def _hub_id(option: str) -> str:
    return _yaml(CONF / "model" / f"{option}.yaml")["pretrained"]


def test_rehearse_sh_prints_the_exports_and_builds_the_same_hub(tmp_path, local_hub):
    """``eval "$(scripts/rehearse.sh DIR)"`` sets the environment (the attack stand-ins' keys,
    the TextAttack view before what PYTHONPATH held); the same code builds the same commits."""
    dest = tmp_path / "hub"
    script = (f'eval "$(bash {ROOT}/scripts/rehearse.sh {dest})" && echo "$HF_HOME|'
              '$HF_HUB_OFFLINE|$HF_DATASETS_CACHE|$RPB_REHEARSAL_ARGS|$PYTHONPATH"')  # fmt: skip
    env = {**_env(local_hub), "PYTHON": sys.executable, "PYTHONPATH": "/before"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    home, offline, data, args, path = proc.stdout.strip().splitlines()[-1].split("|")
    assert (home, offline, data) == (str(dest), "1", str(dest / "datasets"))
    manifest = json.loads((dest / "manifest.json").read_text())
    res = manifest["resources"]
    assert res["counterfitted_embeddings"] == str(dest / "resources" / "paragramcf")
    assert args.split() == ["paths.data_dir=null", f"paths.results_dir={dest / 'results'}",
                            f"paths.cache_dir={dest / 'cache'}",
                            *(f"paths.{k}={res[k]}" for k in ("counterfitted_embeddings",
                                                                "use_model") if k in res)]  # fmt: skip
    assert path == f"{dest / 'site'}:/before"
    assert manifest["models"] == local_hub["manifest"]["models"]
    assert {k: v["commit"] for k, v in manifest["datasets"].items()} == {
        k: v["commit"] for k, v in local_hub["manifest"]["datasets"].items()
    }
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "rehearse.sh")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "usage" in bad.stderr


def run_cli(hub, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m benchmark.run`` on the local Hub, results and caches under ``tmp``."""
    paths = [f"paths.results_dir={tmp}/results", f"paths.cache_dir={tmp}/cache",
             f"paths.log_dir={tmp}/logs", "paths.data_dir=null"]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "benchmark.run", *args, *paths], cwd=ROOT,
                          env=_env(hub), capture_output=True, text=True, timeout=600)  # fmt: skip


def _records(tmp: Path, exp: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp / "results" / "runs" / exp).glob("*.json"))
            if not p.name.endswith(".failed.json")]  # fmt: skip


def _log_rows(tmp: Path, exp: str, run_id: str) -> list[dict]:
    path = tmp / "results" / "runs" / exp / f"{run_id}.attack.jsonl.gz"
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def check_record(rec: dict, tmp: Path, manifest: dict, split: list, model_id: str) -> None:
    """The known answers of one record: the commits the fixture wrote, the fixture's rows."""
    assert rec["status"] == "ok", rec.get("error")
    src = rec["sources"]["model"]
    ids = {s["id"]: s["commit"] for s in src.values() if s}
    assert ids[model_id] == manifest["models"][model_id]
    data = rec["sources"]["data"]
    assert data["commit"] == manifest["datasets"][data["path"]]["commit"]
    assert rec["n_eval"] == len(split)
    rows = _log_rows(tmp, rec["exp_name"], rec["run_id"])
    assert len(rows) == 2
    for row in rows:  # the attacked sentence is the fixture's row at that index, its label too
        text, label = split[row["example_index"]]
        assert row["label"] == label
        assert row["original"].split() == text.split()


@pytest.mark.slow
@pytest.mark.parametrize("model", LAYOUTS)
def test_every_post_training_pruner_on_each_layout_from_the_cli(local_hub, tmp_path, model):
    """One sweep per layout: its Hub option on the local Hub's SST-2, dense fine-tune (saved,
    then reloaded from the dense cache), every post-training pruner, DeepWordBug on two
    sentences, as one real ``python -m benchmark.run -m`` process."""
    manifest = local_hub["manifest"]
    if _hub_id(model) in manifest["not_built"]:
        pytest.skip(f"{_hub_id(model)} not rehearsed: {manifest['not_built'][_hub_id(model)]}")
    exp = f"rehearse_{model}"
    proc = _sweep(local_hub, tmp_path, model, exp)
    refused = model in STRUCTURED_REFUSES
    assert proc.returncode == (2 if refused else 0), proc.stdout[-4000:] + proc.stderr[-4000:]
    recs = {r["pruner"]: r for r in _records(tmp_path, exp)}
    ran = [p for p in POST_TRAINING if not (refused and p == "structured")]
    assert sorted(recs) == sorted(ran)
    log = proc.stdout + proc.stderr
    if refused:  # the config check's one line, from the Hub config alone; the others ran
        assert (f"pruner=structured removes heads and neurons of the BERT layout only; model "
                f"type {REAL_TYPES[model]!r}") in log  # fmt: skip
    model_id = _hub_id(model)
    split = manifest["datasets"]["nyu-mll/glue"]["splits"]["validation"]
    for name, rec in recs.items():
        check_record(rec, tmp_path, manifest, split, model_id)
        assert 0.4 < rec["sparsity_actual"] <= 0.55, (name, rec["sparsity_actual"])
    dense = list((tmp_path / "cache" / "dense").glob(f"{model}-sst2-*"))
    assert len(dense) == 1 and (dense[0] / "info.json").is_file()
    assert log.count("fine-tuning ") == 1  # fine-tuned once, every job loads the saved entry
    assert log.count(f"dense model {model} (dev acc") == len(ran)


@pytest.mark.slow
def test_textattack_checkpoints_from_the_cli(local_hub, tmp_path):
    """``bert_base_uncased_textattack`` on each Hub dataset: the task's checkpoint and its
    head (two, two and four labels) load, no dense fine-tune, one real ``-m`` process."""
    manifest, exp = local_hub["manifest"], "rehearse_textattack"
    proc = run_cli(
        local_hub, tmp_path, "-m", "model=bert_base_uncased_textattack",
        "dataset=sst2,imdb,agnews", "pruner=magnitude", "sparsity=0.5", "attack=deepwordbug",
        "attack.num_examples=2", f"exp_name={exp}", "progress=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    recs = {r["dataset"]: r for r in _records(tmp_path, exp)}
    assert sorted(recs) == ["agnews", "imdb", "sst2"]
    for name, rec in recs.items():
        cfg = _yaml(CONF / "dataset" / f"{name}.yaml")
        split = manifest["datasets"][cfg["hub_path"]]["splits"][cfg["eval_split"]]
        model_id = f"textattack/bert-base-uncased-{cfg['textattack_name']}"
        check_record(rec, tmp_path, manifest, split, model_id)
        assert rec["dense_info"]["checkpoint"] == f"given:{model_id}"
    assert "fine-tuning " not in proc.stdout + proc.stderr


# pruner=structured removes heads and FFN neurons of the BERT and RoBERTa layouts only; on the
# others the config check stops it with a user error before any work (docs/methods.md).
STRUCTURED_REFUSES = {"distilbert_base_uncased", "deberta_v3_base"}
REAL_TYPES = {"distilbert_base_uncased": "distilbert", "deberta_v3_base": "deberta-v2"}


def _sweep(hub, tmp: Path, model: str, exp: str) -> subprocess.CompletedProcess:
    """Every post-training pruner on ``model``: one ``-m`` process (Hydra runs the jobs in
    turn). The pruners keep their configs: a calibration sample larger than the 40 training
    sentences takes all of them."""
    return run_cli(
        hub, tmp, "-m", f"model={model}", "dataset=sst2", f"pruner={','.join(POST_TRAINING)}",
        "sparsity=0.5", "attack=deepwordbug", "attack.num_examples=2", f"exp_name={exp}",
        "progress=false",
    )  # fmt: skip


def test_a_missing_tokenizer_package_is_named_not_hidden(monkeypatch, rehearse_module):
    """Without sentencepiece (not a dependency) DeBERTa-v3 cannot be stood in, nor loaded:
    the builder names it in ``not_built`` and the tests skip it with that reason."""
    rehearse = rehearse_module
    spec = rehearse.hub_models()["microsoft/deberta-v3-base"]
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    assert rehearse.missing_packages(spec) == ["sentencepiece"]
    assert rehearse.missing_packages(rehearse.hub_models()["roberta-base"]) == []
