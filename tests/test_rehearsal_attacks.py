"""The stock attacks rehearsed offline on the local Hub's stand-in resources.

``scripts/rehearse.py`` builds stand-ins of what TextFooler, TextBugger, BERT-Attack, BAE and
their variants download (counter-fitted embeddings, the Universal Sentence Encoder, the
homoglyph list; the masked LM is the local Hub's ``bert-base-uncased``), each marking itself in
its own metadata. The stand-ins load through TextAttack's own loaders; each stock attack runs
to a record through ``python -m benchmark.run`` (marked ``slow``), and the record says
``resources: stand-in`` because the resources say so, not because anything knows about the
rehearsal.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.attacks.external import (
    AttackResources,
    describe_resources,
    resource_manifest,
    resources_kind,
)
from benchmark.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
NLTK_DATA = ROOT / ".resources" / "nltk_data"  # paths.nltk_data's default (scripts/setup.sh)
STOCK = ["textfooler", "textbugger", "bertattack", "bae", "bertattack_robustt", "textdefender"]
# The external resources each stock attack reads (benchmark/attacks/recipes.py, BUILDERS).
KINDS = {
    "textfooler": {"counterfitted_embeddings", "use"},
    "textbugger": {"homoglyphs", "counterfitted_embeddings", "use"},
    "bertattack": {"masked_lm", "use"},
    "bae": {"masked_lm", "use"},
    "bertattack_robustt": {"counterfitted_embeddings", "use"},
    "textdefender": {"counterfitted_embeddings", "use"},
}


def _env(hub: dict, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "TA_CACHE"))}  # fmt: skip
    return {**env, **hub["env"], "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "TQDM_DISABLE": "1",
            "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", **extra}  # fmt: skip


def _need_use(hub: dict) -> None:
    why = hub["manifest"]["not_built"].get("universal-sentence-encoder")
    if why:
        pytest.skip(f"Universal Sentence Encoder stand-in not built: {why}")


def test_a_resource_says_whether_it_is_a_stand_in(tmp_path):
    """The record's ``resources`` follows the resources' own metadata: a folder's
    ``resource.json``, a file's ``<name>.resource.json``; none means ``unmarked``."""
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.mkdir()
    marked.mkdir()
    (marked / "resource.json").write_text(json.dumps({"stand_in": True, "resource": "x"}))
    table = tmp_path / "neighbours.json"
    table.write_text("{}")
    res = AttackResources(counterfitted_neighbors=str(table), sentence_encoder=str(plain))
    kinds = ["counterfitted_neighbors", "sentence_encoder"]
    described = describe_resources(kinds, res)
    assert "manifest" not in described["sentence_encoder"]
    assert resources_kind(described) == "unmarked"
    (tmp_path / "neighbours.json.resource.json").write_text(json.dumps({"stand_in": True}))
    described = describe_resources(kinds, res)
    assert described["counterfitted_neighbors"]["manifest"] == {"stand_in": True}
    assert resources_kind(described) == "stand-in"
    described = describe_resources(["sentence_encoder"],
                                   AttackResources(sentence_encoder=str(marked)))  # fmt: skip
    assert described["sentence_encoder"]["manifest"]["resource"] == "x"
    assert resources_kind(described) == "stand-in"
    (plain / "resource.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="is not a JSON object"):
        resource_manifest(plain)


# Loads the stand-ins with TextAttack's own loaders, in a fresh process: the embeddings from
# TextAttack's cache (TA_CACHE_DIR, which TextAttack reads at import), the encoder as
# TextAttack's UniversalSentenceEncoder loads TF-Hub's.
PROBE = r"""
import json, sys
from textattack.shared import WordEmbedding
from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder

emb = WordEmbedding.counterfitted_GLOVE_embedding()
good = emb.word2index("good")
out = {"neighbours": [emb.index2word(i) for i in emb.nearest_neighbours(good, 5)],
       "cos": emb.get_cos_sim("good", emb.index2word(int(emb.nearest_neighbours(good, 1)[0]))),
       "words": len(emb._word2index)}
use = UniversalSentenceEncoder(threshold=0.8, metric="cosine")
use._tfhub_url = sys.argv[1]
vec = use.encode(["the movie was good", "good was the movie", "stocks fell after the merger"])
out["use_shape"] = list(vec.shape)
out["use_cos"] = [float(vec[0] @ vec[1]), float(vec[0] @ vec[2])]
print("PROBE" + json.dumps(out))
"""


def test_stand_ins_load_through_textattacks_own_loaders(local_hub, tmp_path):
    """The counter-fitted stand-in is in TextAttack's on-disk format (its cache loader reads
    it; synonyms are each other's nearest neighbours) and the USE stand-in is a SavedModel
    that TextAttack's ``UniversalSentenceEncoder`` loads and calls."""
    _need_use(local_hub)
    rehearse, resources = local_hub["module"], local_hub["manifest"]["resources"]
    cache = tmp_path / "ta_cache"
    (cache / "word_embeddings").mkdir(parents=True)
    (cache / "word_embeddings" / "paragramcf").symlink_to(resources["counterfitted_embeddings"])
    (cache / "post_install_check_3").touch()  # else importing TextAttack runs its downloads
    env = _env(local_hub, TA_CACHE_DIR=str(cache), NLTK_DATA=str(NLTK_DATA))  # its stopwords
    proc = subprocess.run([sys.executable, "-c", PROBE, resources["use_model"]], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("PROBE", 1)[1])
    positive = set(rehearse.SENTIMENT[1]) - {"good"}
    assert set(out["neighbours"]) == positive  # the five other words of its keyword list
    assert out["cos"] > 0.5 and out["words"] == len(rehearse.words())
    assert out["use_shape"] == [3, 8]
    same_words, other = out["use_cos"]
    assert same_words == pytest.approx(1.0, abs=1e-5) and other < 0.9


def _records(results: Path, exp: str) -> dict[str, dict]:
    recs = [json.loads(p.read_text()) for p in (results / "runs" / exp).glob("*.json")]
    return {r["attack"]: r for r in recs}


def _log(results: Path, rec: dict) -> list[dict]:
    path = results / "runs" / rec["exp_name"] / f"{rec['run_id']}.attack.jsonl.gz"
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


@pytest.mark.slow
def test_every_stock_attack_runs_to_a_record_on_stand_ins(local_hub, tmp_path):
    """Each stock attack on the local Hub's BERT, fine-tuned on its SST-2, with the stand-ins
    where ``paths.*`` and the TextAttack view point (as ``scripts/rehearse.sh`` exports them):
    one ``-m`` process, a record per attack whose ``resources`` says ``stand-in``, each
    resource named by the stand-in's own metadata, the masked LM by the local Hub's commit."""
    _need_use(local_hub)
    manifest = local_hub["manifest"]
    exp, results = "rehearse_stock", tmp_path / "results"
    args = local_hub["env"]["RPB_REHEARSAL_ARGS"].split()
    assert any(a.startswith("paths.use_model=") for a in args)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.run", "-m", *args, f"paths.results_dir={results}",
         f"paths.cache_dir={tmp_path}/cache", f"paths.log_dir={tmp_path}/logs",
         "model=bert_base_uncased", "dataset=sst2", "pruner=none", "sparsity=0.0",
         f"attack={','.join(STOCK)}", "attack.num_examples=4", "dense.epochs=40",
         "dense.lr=3e-3", f"exp_name={exp}", "progress=false"],
        cwd=ROOT, env=_env(local_hub), capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    recs = _records(results, exp)
    assert sorted(recs) == sorted(STOCK)
    split = manifest["datasets"]["nyu-mll/glue"]["splits"]["validation"]
    bert = manifest["models"]["bert-base-uncased"]
    for name, rec in recs.items():
        assert rec["status"] == "ok", (name, rec.get("error"))
        assert rec["sources"]["resources"] == "stand-in", name
        described = rec["sources"]["attack_resources"]
        assert set(described) == KINDS[name], name
        for kind, entry in described.items():
            assert entry.get("manifest", {}).get("stand_in") is True, (name, kind, entry)
        if "masked_lm" in described:
            lm = described["masked_lm"]
            assert (lm["kind"], lm["id"], lm["commit"]) == ("hub", "bert-base-uncased", bert)
        if "homoglyphs" in described:
            assert described["homoglyphs"]["path"] == manifest["resources"]["homoglyphs"]
        rows = _log(results, rec)
        assert len(rows) == 4
        for row in rows:  # the fixture's sentences, with their labels
            text, label = split[row["example_index"]]
            assert (row["original"].split(), row["label"]) == (text.split(), label)
        # the search ran: an example the model gets right was attacked with queries
        assert any(r["result"] != "skipped" and r["queries"] > 1 for r in rows), name
