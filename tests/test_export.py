"""``rpb export``: a record's pruned model as a Hugging Face folder that plain transformers loads
and that reproduces the record's clean predictions (masked and structured pruning)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from benchmark.records.logs import read_rows

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny smoke jobs (magnitude and structured pruning at 0.5, DeepWordBug on 8
    examples) run through the CLI: ``{"paths": [...overrides], "records": {pruner: record}}``."""
    tmp = tmp_path_factory.mktemp("export_runs")
    paths = [f"paths.results_dir={tmp}/results", f"paths.cache_dir={tmp}/cache",
             f"paths.log_dir={tmp}/logs"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.run", "-m", "experiment=smoke",
         "pruner=magnitude,structured", *paths],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = {}
    for p in (tmp / "results" / "runs" / "smoke").glob("*.json"):
        rec = json.loads(p.read_text())
        records[rec["pruner"]] = rec
    assert set(records) == {"magnitude", "structured"}
    return {"tmp": tmp, "paths": paths, "records": records}


def export_cli(*args: str) -> subprocess.CompletedProcess:
    """``rpb export ARGS``: the console script's ``main`` with ``export`` as first argument."""
    code = "import sys; from benchmark.run import main; sys.argv[0] = 'rpb'; main()"
    return subprocess.run([sys.executable, "-c", code, "export", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _predict(folder: Path, texts: list[str]) -> torch.Tensor:
    """Class probabilities of the exported model, loaded with plain transformers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        return model(**enc).logits.softmax(-1)


@pytest.mark.parametrize("pruner", ["magnitude", "structured"])
def test_exported_model_reproduces_the_records_clean_predictions(runs, tmp_path, pruner):
    from benchmark.data.tiny import tiny_splits

    rec = runs["records"][pruner]
    out = tmp_path / "model"
    proc = export_cli(rec["run_id"], "--out", str(out), *runs["paths"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {"model.safetensors", "config.json", "README.md", "rpb_record.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("*.bin")) and json.loads((out / "rpb_record.json").read_text()) == rec
    val = tiny_splits()["validation"]
    probs = _predict(out, [t for t, _ in val])
    labels = torch.tensor([y for _, y in val])
    correct = int((probs.argmax(-1) == labels).sum())
    assert correct == rec["n_eval_correct"] and correct / len(val) == pytest.approx(
        rec["clean_acc"]
    )
    share = probs.argmax(-1).bincount(minlength=2).max().item() / len(val)
    assert share == pytest.approx(rec["pred_majority_share"])
    log = rec["run_id"] + ".attack.jsonl.gz"
    rows = read_rows(runs["tmp"] / "results" / "runs" / "smoke" / log)
    assert len(rows) == rec["n_total"] > 0
    for r in rows:  # the model the attack saw, example by example
        i = r["example_index"]
        assert int(probs[i].argmax()) == r["orig_pred"]
        assert float(probs[i, r["label"]]) == pytest.approx(r["orig_true_prob"], abs=1e-5)
    card = (out / "README.md").read_text()
    assert "masked-dense" in card and ("structured" in card) == (pruner == "structured")
    assert f"| accuracy under attack (Aua) | {100 * rec['aua']:.1f} [" in card
    assert "composed here it gives the record's run id" in card
    assert (
        f"rpb experiment=smoke model=tiny_bert dataset=tiny dense=finetune pruner={pruner}" in card
    )
    assert rec["threat_model"]["hash"] in card
    from transformers import AutoModelForSequenceClassification

    from benchmark.export import layer_sparsity

    model = AutoModelForSequenceClassification.from_pretrained(out)
    layers = layer_sparsity(model)
    zero = sum(n * z for _, n, z in layers) / sum(n for _, n, _ in layers)
    assert zero == pytest.approx(rec["sparsity_actual"], abs=1e-6)
    assert all(f"| `{name}` |" in card for name, _, _ in layers)


def test_python_m_benchmark_export_is_the_same_command(runs, tmp_path):
    rec = runs["records"]["magnitude"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.export", rec["run_id"], *runs["paths"], "--out",
         str(tmp_path / "m")], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_a_missing_cache_entry_is_one_line_naming_the_rebuild(runs, tmp_path):
    rec = runs["records"]["magnitude"]
    cache = tmp_path / "cache"
    shutil.copytree(runs["tmp"] / "cache" / "dense", cache / "dense")  # no pruned entries
    paths = [runs["paths"][0], f"paths.cache_dir={cache}"]
    proc = export_cli(rec["run_id"], "--out", str(tmp_path / "m"), *paths)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 2 and "Traceback" not in out and len(out.splitlines()) == 1
    key = rec["prune_info"]["key"]
    assert (
        f"the pruned weights of {rec['run_id']} are not in the cache ({cache}/pruned/{key})" in out
    )
    assert "rebuild them with: rpb experiment=smoke" in out and out.endswith(
        "attack=none force=true"
    )
    proc = export_cli("000000000000", "--out", str(tmp_path / "m"), runs["paths"][0])
    assert proc.returncode == 2 and "no record '000000000000' under" in proc.stderr
    proc = export_cli(rec["run_id"], "--out", str(tmp_path / "m"), "sparsity=0.5")
    assert proc.returncode == 2 and "export takes only paths.* overrides" in proc.stderr


def test_rpb_without_export_is_still_the_run_command():
    code = "import sys; from benchmark.run import main; sys.argv[0] = 'rpb'; main()"
    proc = subprocess.run([sys.executable, "-c", code, "--help"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("rpb / python -m benchmark.run")


class FakeHub:
    """A local stand-in of ``huggingface_hub.HfApi``'s upload API: records the calls and what
    the uploaded folder held."""

    calls: ClassVar[list] = []
    fail: ClassVar[bool] = False

    def create_repo(self, repo_id, repo_type=None, exist_ok=False):
        FakeHub.calls.append(("create_repo", repo_id, repo_type, exist_ok))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        if FakeHub.fail:
            raise ConnectionError("Hub unreachable\nsecond line")
        files = sorted(p.name for p in Path(folder_path).iterdir())
        FakeHub.calls.append(("upload_folder", repo_id, repo_type, files))
        return type("Commit", (), {"commit_url": f"https://hub.local/{repo_id}/commit/1"})()


def test_push_to_hub_uploads_the_folder(runs, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    from benchmark import export

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.calls, FakeHub.fail = [], False
    rec = runs["records"]["magnitude"]
    out = tmp_path / "m"
    args = [rec["run_id"], "--out", str(out), "--push-to-hub", "me/tiny-pruned", *runs["paths"]]
    assert export.main(args) == 0
    assert FakeHub.calls[0] == ("create_repo", "me/tiny-pruned", "model", True)
    kind, repo, repo_type, files = FakeHub.calls[1]
    assert (kind, repo, repo_type) == ("upload_folder", "me/tiny-pruned", "model")
    assert {"model.safetensors", "config.json", "README.md", "tokenizer_config.json"} <= set(files)
    FakeHub.fail = True
    caplog.clear()
    assert export.main(args) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "could not upload to the Hub repository me/tiny-pruned" in errors[0]
    assert "ConnectionError: Hub unreachable" in errors[0] and str(out) in errors[0]


def test_structured_weights_expand_to_an_equivalent_masked_dense_model(trained_tiny, tiny_examples):
    """The smaller model of structured pruning and its masked-dense expansion compute the
    same outputs, and the removal replayed on a dense copy takes the cached weights."""
    import copy

    from benchmark.export import masked_dense_from_structured
    from benchmark.pruners.base import PruneData, apply_masks
    from benchmark.pruners.structured import StructuredPruner, replay_removal

    model, tok = trained_tiny
    small = copy.deepcopy(model)
    pruner = StructuredPruner(nsamples=32, batch_size=8)
    masks = pruner.prune(small, PruneData(tokenizer=tok, train=tiny_examples["train"],
                                          max_length=32, seed=0), 0.5)  # fmt: skip
    apply_masks(small, masks, permanent=True)
    assert pruner.info["params_removed"] > 0
    state = small.state_dict()
    dense = masked_dense_from_structured(copy.deepcopy(model), state, pruner.info)
    replayed = replay_removal(copy.deepcopy(model), pruner.info)
    replayed.load_state_dict(state)
    enc = tok([t for t, _ in tiny_examples["validation"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = small.eval()(**enc).logits
        assert torch.allclose(dense.eval()(**enc).logits, want, atol=1e-5)
        assert torch.equal(replayed.eval()(**enc).logits, want)
    n_heads = dense.config.num_attention_heads
    q = dense.bert.encoder.layer[0].attention.self.query.weight
    dh = q.shape[0] // n_heads
    for h in range(n_heads):  # a removed head's rows are zero, a kept head's are not
        removed = h in pruner.info["heads_removed"][0]
        assert bool((q[h * dh : (h + 1) * dh] == 0).all()) == removed


def test_a_structured_rerun_loads_its_pruned_weights_from_the_cache(runs, tmp_path):
    """The smaller state dict of structured pruning is cached; a rerun replays the removal on
    its dense copy, loads it and gets the same record (on a copy of the fixture's folders)."""
    rec = runs["records"]["structured"]
    for sub in ("results", "cache"):
        shutil.copytree(runs["tmp"] / sub, tmp_path / sub)
    paths = [f"paths.results_dir={tmp_path}/results", f"paths.cache_dir={tmp_path}/cache",
             f"paths.log_dir={tmp_path}/logs"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.run", "experiment=smoke", "pruner=structured",
         "force=true", *paths],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    key = rec["prune_info"]["key"]
    assert f"pruned weights from cache {tmp_path}/cache/pruned/{key}" in proc.stdout + proc.stderr
    path = tmp_path / "results" / "runs" / "smoke" / f"{rec['run_id']}.json"
    again = json.loads(path.read_text())
    assert (
        again["prune_info"]["cached"] is True and again["params_removed"] == rec["params_removed"]
    )
    for field in ("clean_acc", "aua", "asr", "sparsity_actual", "n_failed"):
        assert again[field] == rec[field], field
