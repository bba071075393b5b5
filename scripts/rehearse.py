"""Build a local Hugging Face Hub for rehearsing the papers' path offline.

``python scripts/rehearse.py DIR`` (or ``scripts/rehearse.sh DIR``) writes into ``DIR``

- ``hub/``: every Hub model id that ``conf/model/*.yaml`` names, in the cache layout
  ``huggingface_hub`` reads with ``HF_HUB_OFFLINE=1`` (``models--ORG--NAME/refs/main`` holding a
  commit, the files under ``snapshots/<commit>/``). Each is a small random-weight model of the
  real repository's architecture class, with its ``config.json`` keys (small sizes), its
  tokenizer files and type (WordPiece, byte-level BPE, SentencePiece) and its weight format;
  the ``textattack/*`` ones carry a classification head of the task's label count;
- ``datasets/``: every Hub dataset that ``conf/dataset/*.yaml`` names, as the prepared Arrow
  cache ``datasets`` 4.x reads offline (``<namespace>___<name>/<config>/0.0.0/<commit>/``,
  built with the parquet builder), with the real split names, columns and label types and a
  few dozen rows each;
- ``resources/`` and ``site/``: stand-ins of what the stock attacks download (TextAttack's
  counter-fitted embedding folder, a TF SavedModel for the Universal Sentence Encoder, and
  TextBugger's homoglyph list in a view of the installed TextAttack package), each saying in
  its own ``resource.json`` that it is a stand-in;

and prints the ``export`` lines to ``eval``. Everything is made from a few kilobytes of text
generated here, deterministically: the same code and library versions give the same commits.
Nothing under ``benchmark/`` knows about this: a run on the rehearsal takes the code path of a
run on a real cache. The tests import :func:`build` (``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# -- the text everything is made from ---------------------------------------------------------

FILLER = [
    "the", "a", "movie", "film", "plot", "story", "was", "is", "very", "quite", "really",
    "acting", "music", "and", "but", "this", "that", "it", "ending", "cast", "script", "scene",
    "today", "report", "says", "new", "after", "week", "year", "team", "market", "people",
]  # fmt: skip
# One keyword list per class; a row holds one keyword of its class among filler words.
SENTIMENT = [
    ["bad", "awful", "poor", "dull", "boring", "terrible"],
    ["good", "great", "fine", "nice", "superb", "lovely"],
]
TOPICS = [  # AG News: World, Sports, Business, Sci/Tech
    ["war", "election", "minister", "embassy", "treaty", "refugees"],
    ["match", "league", "coach", "goal", "season", "olympic"],
    ["stocks", "profit", "shares", "merger", "earnings", "bank"],
    ["software", "internet", "chip", "space", "computer", "research"],
]


def _sentence(rng: random.Random, keywords: list[str], lo: int = 4, hi: int = 9) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(lo, hi))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(keywords))
    return " ".join(words)


def _rows(n: int, classes: list[list[str]], seed: int, labelled: bool = True,
          sort_by_label: bool = False) -> list[tuple[str, int]]:  # fmt: skip
    """``n`` rows ``(text, label)`` with the labels in turn (``-1`` when not ``labelled``, as
    GLUE's test split and IMDB's unsupervised split have)."""
    rng = random.Random(seed)
    rows = [(_sentence(rng, classes[i % len(classes)]), i % len(classes) if labelled else -1)
            for i in range(n)]  # fmt: skip
    return sorted(rows, key=lambda r: r[1]) if sort_by_label else rows


def corpus() -> list[str]:
    """The sentences the tokenizers are trained on (a few kilobytes)."""
    rng = random.Random(0)
    out = [" ".join(FILLER), " ".join(w for c in SENTIMENT + TOPICS for w in c)]
    out += [_sentence(rng, c) for _ in range(20) for c in SENTIMENT + TOPICS]
    return out


def words() -> list[str]:
    """Every word of the generated text (the WordPiece vocabulary)."""
    return sorted(set(FILLER) | {w for c in SENTIMENT + TOPICS for w in c})


# -- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubDataset:
    """One Hub dataset configuration as the stand-in reproduces it.

    Attributes:
        repo: the namespaced Hub id (``nyu-mll/glue``).
        config: the Hub's configuration name (the cache folder); ``hub_name`` in conf/dataset
            is this name, or null when the repository has one configuration.
        hub_name: what ``conf/dataset/*.yaml`` passes as ``hub_name``.
        features: column -> ``("string",)``, ``("int32",)`` or ``("class", names)``.
        splits: split -> its rows ``(text, label)``.
        text_column / label_column: the columns the rows go to.
    """

    repo: str
    config: str
    hub_name: str | None
    features: dict[str, tuple]
    splits: dict[str, list[tuple[str, int]]]
    text_column: str = "text"
    label_column: str = "label"


def hub_datasets() -> dict[str, HubDataset]:
    """The stand-ins of the Hub datasets, by Hub id. Split names, columns and label types are
    the real ones (GLUE SST-2: ``sentence``, ``label`` ClassLabel, ``idx`` int32, an unlabelled
    test split; IMDB: ``text``, ``label``, train and test sorted by label as on the Hub, an
    unlabelled ``unsupervised`` split; AG News: ``text``, ``label`` of four classes)."""
    return {
        "nyu-mll/glue": HubDataset(
            "nyu-mll/glue", "sst2", "sst2",
            {"sentence": ("string",), "label": ("class", ["negative", "positive"]),
             "idx": ("int32",)},
            {"train": _rows(40, SENTIMENT, 1), "validation": _rows(24, SENTIMENT, 2),
             "test": _rows(8, SENTIMENT, 3, labelled=False)},
            text_column="sentence",
        ),
        "stanfordnlp/imdb": HubDataset(
            "stanfordnlp/imdb", "plain_text", None,
            {"text": ("string",), "label": ("class", ["neg", "pos"])},
            {"train": _rows(40, SENTIMENT, 11, sort_by_label=True),
             "test": _rows(24, SENTIMENT, 12, sort_by_label=True),
             "unsupervised": _rows(8, SENTIMENT, 13, labelled=False)},
        ),
        "fancyzhx/ag_news": HubDataset(
            "fancyzhx/ag_news", "default", None,
            {"text": ("string",), "label": ("class", ["World", "Sports", "Business", "Sci/Tech"])},
            {"train": _rows(48, TOPICS, 21), "test": _rows(24, TOPICS, 22)},
        ),
    }  # fmt: skip


def _features(spec: HubDataset):
    import datasets

    out = {}
    for col, kind in spec.features.items():
        out[col] = (datasets.ClassLabel(names=list(kind[1])) if kind[0] == "class"
                    else datasets.Value(kind[0]))  # fmt: skip
    return datasets.Features(out)


def _columns(spec: HubDataset, rows: list[tuple[str, int]]) -> dict[str, list]:
    cols: dict[str, list] = {spec.text_column: [t for t, _ in rows],
                             spec.label_column: [y for _, y in rows]}  # fmt: skip
    if "idx" in spec.features:
        cols["idx"] = list(range(len(rows)))
    return {c: cols[c] for c in spec.features}


def _commit(*parts: bytes) -> str:
    """A 40-hex commit id derived from the content it names."""
    h = hashlib.sha1()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def build_dataset(spec: HubDataset, datasets_dir: Path) -> tuple[str, Path]:
    """Write the prepared Arrow cache of one Hub dataset; ``(commit, folder)``.

    The splits go to parquet files first, then through ``datasets``' parquet builder with the
    Hub's configuration name, ``repo_id`` and ``hash=<commit>``: the folder
    ``<namespace>___<name>/<config>/0.0.0/<commit>/`` with ``<name>-<split>.arrow`` and
    ``dataset_info.json``, as a first online ``load_dataset`` leaves it."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.data_files import DataFilesDict
    from datasets.load import configure_builder_class
    from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

    features = _features(spec)
    blobs = {}
    with tempfile.TemporaryDirectory(prefix="rehearse_parquet_") as tmp:
        files = {}
        for split, rows in spec.splits.items():
            table = pa.Table.from_pydict(_columns(spec, rows), schema=features.arrow_schema)
            path = Path(tmp) / f"{split}-00000-of-00001.parquet"
            pq.write_table(table, path)
            files[split] = [str(path)]
            blobs[split] = json.dumps(_columns(spec, rows), sort_keys=True).encode()
        commit = _commit(spec.repo.encode(), spec.config.encode(),
                         *(blobs[s] for s in sorted(blobs)))  # fmt: skip
        name = spec.repo.split("/")[-1]
        config = ParquetConfig(name=spec.config, data_files=DataFilesDict.from_patterns(files),
                               features=features)  # fmt: skip
        cls = configure_builder_class(Parquet, [config], spec.config, name)
        builder = cls(cache_dir=str(datasets_dir), dataset_name=name, config_name=spec.config,
                      hash=commit, repo_id=spec.repo)  # fmt: skip
        disabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            builder.download_and_prepare()
        finally:
            if disabled:
                datasets.enable_progress_bars()
    folder = Path(builder.cache_dir)
    expected = datasets_dir / spec.repo.replace("/", "___") / spec.config / "0.0.0" / commit
    if folder != expected:
        raise RuntimeError(f"datasets wrote {folder}, not the offline layout {expected}")
    for lock in datasets_dir.rglob("*.lock"):  # the builder's lock files are not part of it
        lock.unlink()
    return commit, folder


# -- models ------------------------------------------------------------------------------------

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64}  # fmt: skip

BERT_CONFIG = {
    "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
    "model_type": "bert", "pad_token_id": 0, "position_embedding_type": "absolute",
    "type_vocab_size": 2, "use_cache": True, **SMALL,
}  # fmt: skip
DISTILBERT_CONFIG = {
    "activation": "gelu", "architectures": ["DistilBertForMaskedLM"], "attention_dropout": 0.1,
    "dim": 32, "dropout": 0.1, "hidden_dim": 64, "initializer_range": 0.02,
    "max_position_embeddings": 512, "model_type": "distilbert", "n_heads": 2, "n_layers": 2,
    "pad_token_id": 0, "qa_dropout": 0.1, "seq_classif_dropout": 0.2,
    "sinusoidal_pos_embds": False, "tie_weights_": True,
}  # fmt: skip
ROBERTA_CONFIG = {
    "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02, "layer_norm_eps": 1e-05, "max_position_embeddings": 514,
    "model_type": "roberta", "pad_token_id": 1, "type_vocab_size": 1, **SMALL,
}  # fmt: skip
DEBERTA_V3_CONFIG = {
    "model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "max_position_embeddings": 512,
    "relative_attention": True, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
    "share_att_key": True, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
    "max_relative_positions": -1, "position_biased_input": False, "type_vocab_size": 0,
    **SMALL,
}  # fmt: skip
TEXTATTACK_BERT_CONFIG = {
    "architectures": ["BertForSequenceClassification"], "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "initializer_range": 0.02,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
    "output_attentions": False, "output_hidden_states": False, "pad_token_id": 0,
    "pruned_heads": {}, "torchscript": False, "type_vocab_size": 2, **SMALL,
}  # fmt: skip


@dataclass(frozen=True)
class HubModel:
    """One Hub model repository as the stand-in reproduces it.

    Attributes:
        repo: the Hub id.
        config: ``config.json`` (the real repository's keys, small sizes; ``vocab_size`` is
            filled in from the tokenizer).
        model_class: the ``transformers`` class whose weights the file holds (the real
            checkpoint's: BERT's pre-training heads, the masked-LM heads, a classifier).
        tokenizer: ``wordpiece``, ``bytebpe`` or ``spm``.
        weights: ``model.safetensors`` or ``pytorch_model.bin`` (the real repository's format).
        tokenizer_config: ``tokenizer_config.json``, or None where the real repository has none.
        tokenizer_json: whether the repository ships a ``tokenizer.json``.
        num_labels: the classification head of a ``textattack/*`` checkpoint, else None.
    """

    repo: str
    config: dict[str, Any]
    model_class: str
    tokenizer: str
    weights: str
    tokenizer_config: dict[str, Any] | None
    tokenizer_json: bool = False
    num_labels: int | None = None


TEXTATTACK_TASKS = {"SST-2": ("sst-2", 2), "imdb": ("imdb", 2), "ag-news": ("ag-news", 4)}


def hub_models() -> dict[str, HubModel]:
    """The stand-ins of the Hub models, by Hub id."""
    lower = {"do_lower_case": True, "model_max_length": 512}
    out = {
        "bert-base-uncased": HubModel("bert-base-uncased", BERT_CONFIG, "BertForPreTraining",
                                      "wordpiece", "model.safetensors", lower, True),
        "distilbert-base-uncased": HubModel(
            "distilbert-base-uncased", DISTILBERT_CONFIG, "DistilBertForMaskedLM", "wordpiece",
            "model.safetensors", lower, True),
        "roberta-base": HubModel("roberta-base", ROBERTA_CONFIG, "RobertaForMaskedLM",
                                 "bytebpe", "model.safetensors", None, True),
        "microsoft/deberta-v3-base": HubModel(
            "microsoft/deberta-v3-base", DEBERTA_V3_CONFIG, "DebertaV2ForMaskedLM", "spm",
            "pytorch_model.bin", {"do_lower_case": False, "vocab_type": "spm"}),
    }  # fmt: skip
    for suffix, (task, n) in TEXTATTACK_TASKS.items():
        repo = f"textattack/bert-base-uncased-{suffix}"
        cfg = {**TEXTATTACK_BERT_CONFIG, "finetuning_task": task, "num_labels": n}
        out[repo] = HubModel(repo, cfg, "BertForSequenceClassification", "wordpiece",
                             "pytorch_model.bin", {"do_lower_case": True, "max_len": 512},
                             num_labels=n)  # fmt: skip
    return out


def _wordpiece(folder: Path, with_json: bool) -> int:
    """``vocab.txt`` (and ``tokenizer.json``): BERT's special tokens, the generated words,
    single letters and ``##`` letters. Returns the vocabulary size."""
    from transformers import BertTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words(),
             *letters, *(f"##{c}" for c in letters), *".,!?'-"]  # fmt: skip
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if with_json:
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
        tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return len(vocab)


def _bytebpe(folder: Path) -> int:
    """RoBERTa's files: a byte-level BPE (``vocab.json``, ``merges.txt``, ``tokenizer.json``)
    trained on :func:`corpus` with ``<s> <pad> </s> <unk>`` as ids 0-3 and ``<mask>`` last."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=800, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])  # fmt: skip
    vocab = bpe.get_vocab()
    vocab["<mask>"] = len(vocab)  # last, as in roberta-base (50264)
    ordered = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    (folder / "vocab.json").write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
    model = json.loads(bpe.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")  # fmt: skip
    tok = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"),
                               merges_file=str(folder / "merges.txt"))  # fmt: skip
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return len(ordered)


def _spm(folder: Path) -> int:
    """DeBERTa-v3's ``spm.model``: a SentencePiece unigram model trained on :func:`corpus`
    with ``[PAD] [CLS] [SEP] [UNK]`` as ids 0-3 (DebertaV2Tokenizer adds ``[MASK]``)."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=160,
        model_type="unigram", character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
        unk_id=3, unk_piece="[UNK]", minloglevel=2,
    )  # fmt: skip
    (folder / "spm.model").write_bytes(buf.getvalue())
    proc = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return proc.get_piece_size() + 1  # + [MASK]


def missing_packages(spec: HubModel) -> list[str]:
    """Packages that neither the stand-in nor the real repository loads without: DeBERTa-v3's
    SentencePiece tokenizer needs ``sentencepiece`` (not a dependency of this project)."""
    import importlib.util

    need = ["sentencepiece"] if spec.tokenizer == "spm" else []
    return [p for p in need if importlib.util.find_spec(p) is None]


def build_model(spec: HubModel, hub_dir: Path, seed: int = 0) -> tuple[str, Path]:
    """Write one model repository into the Hub cache layout; ``(commit, snapshot folder)``."""
    import torch
    from transformers import AutoConfig

    with tempfile.TemporaryDirectory(prefix="rehearse_model_") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        if spec.tokenizer == "wordpiece":
            vocab_size = _wordpiece(files, spec.tokenizer_json)
        elif spec.tokenizer == "bytebpe":
            vocab_size = _bytebpe(files)
        else:
            vocab_size = _spm(files)
        if spec.tokenizer_config is not None:
            (files / "tokenizer_config.json").write_text(json.dumps(spec.tokenizer_config))
        if spec.repo.startswith("textattack/"):
            special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                       "cls_token": "[CLS]", "mask_token": "[MASK]"}  # fmt: skip
            (files / "special_tokens_map.json").write_text(json.dumps(special))
        cfg_dict = {**spec.config, "vocab_size": vocab_size}
        kwargs = {k: v for k, v in cfg_dict.items() if k != "model_type"}
        config = AutoConfig.for_model(cfg_dict["model_type"], **kwargs)
        import transformers

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = getattr(transformers, spec.model_class)(config)
        model.save_pretrained(Path(tmp) / "saved",
                              safe_serialization=spec.weights.endswith(".safetensors"))  # fmt: skip
        shutil.copy(Path(tmp) / "saved" / spec.weights, files / spec.weights)
        (files / "config.json").write_text(json.dumps(cfg_dict, indent=2) + "\n")
        (files / RESOURCE_MANIFEST).write_text(json.dumps(_stand_in(
            spec.repo, f"the Hub repository {spec.repo}", seed=seed), indent=1) + "\n")  # fmt: skip
        names = sorted(p.name for p in files.iterdir())
        commit = _commit(spec.repo.encode(),
                         *(n.encode() + (files / n).read_bytes() for n in names))  # fmt: skip
        repo_dir = hub_dir / f"models--{spec.repo.replace('/', '--')}"
        snap = repo_dir / "snapshots" / commit
        shutil.rmtree(repo_dir, ignore_errors=True)
        shutil.copytree(files, snap)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return commit, snap


# -- attack resources --------------------------------------------------------------------------

# A stand-in says what it is in its own metadata, which the product reads beside every attack
# resource (benchmark/attacks/external.py, RESOURCE_MANIFEST): ``resource.json`` inside a
# folder, ``<file>.resource.json`` beside a file. A record made with one says so
# (``sources.resources: stand-in``).
RESOURCE_MANIFEST = "resource.json"
HOMOGLYPH_FILE = "intentional_homoglyphs.txt"  # what TextBugger opens in textattack/shared/
# Latin letters and the Cyrillic letters that look like them: the stand-in homoglyph list.
HOMOGLYPHS = {"a": 0x430, "c": 0x441, "e": 0x435, "i": 0x456, "j": 0x458, "o": 0x43E,
              "p": 0x440, "s": 0x455, "x": 0x445, "y": 0x443}  # fmt: skip


def _stand_in(name: str, real: str, **extra: Any) -> dict[str, Any]:
    return {"resource": name, "stand_in": True, "made_by": "scripts/rehearse.py",
            "stands_in_for": real, **extra}  # fmt: skip


def build_counterfitted(folder: Path, dim: int = 16, neighbours: int = 20,
                        seed: int = 0) -> int:  # fmt: skip
    """TextAttack's ``word_embeddings/paragramcf`` folder over :func:`words`, in the format
    ``WordEmbedding.counterfitted_GLOVE_embedding`` reads: ``paragram.npy`` (float32 rows),
    ``wordlist.pickle`` (a pickled ``{word: row}``), ``nn.npy`` (each row's nearest rows by
    cosine, itself first), ``mse_dist.p`` / ``cos_sim.p`` (pickled ``defaultdict(dict)``
    ``[a][b]``, ``a < b``, for each row and its neighbours). The words of one keyword list lie
    close together (cosine 0.74 or more), as counter-fitted synonyms do; filler words apart.
    Returns the vocabulary size."""
    import pickle
    from collections import defaultdict

    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = words()
    centre = {}
    for group in SENTIMENT + TOPICS:
        c = rng.standard_normal(dim)
        centre.update(dict.fromkeys(group, c))
    rows = [centre[w] + 0.3 * rng.standard_normal(dim) if w in centre
            else rng.standard_normal(dim) for w in vocab]  # fmt: skip
    matrix = np.asarray(rows, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    cos = matrix @ matrix.T
    nn = np.argsort(-cos, axis=1, kind="stable")[:, : neighbours + 1].astype(np.int64)
    mse, sim = defaultdict(dict), defaultdict(dict)
    for a in range(len(vocab)):
        for b in nn[a, 1:]:
            lo, hi = sorted((a, int(b)))
            mse[lo][hi] = float(((matrix[lo] - matrix[hi]) ** 2).sum())
            sim[lo][hi] = float(cos[lo, hi])
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "paragram.npy", matrix)
    np.save(folder / "nn.npy", nn)
    with open(folder / "wordlist.pickle", "wb") as fh:
        pickle.dump({w: i for i, w in enumerate(vocab)}, fh)
    for name, table in (("mse_dist.p", mse), ("cos_sim.p", sim)):
        with open(folder / name, "wb") as fh:
            pickle.dump(table, fh)
    (folder / RESOURCE_MANIFEST).write_text(json.dumps(_stand_in(
        "counter-fitted word embeddings", "TextAttack word_embeddings/paragramcf (Mrksic et "
        "al. 2016, 65,713 words x 300)", words=len(vocab), dim=dim), indent=1) + "\n")  # fmt: skip
    return len(vocab)


def use_missing() -> str | None:
    """Why the Universal Sentence Encoder stand-in cannot be built here (None: it can).
    TextAttack loads USE with ``tensorflow_hub.load``: the real one needs the same packages."""
    import importlib.util

    missing = [p for p in ("tensorflow", "tensorflow_hub") if importlib.util.find_spec(p) is None]
    if missing:
        return f"needs {', '.join(missing)} (pip install -e '.[tf]')"
    return None


def build_use(folder: Path, buckets: int = 256, dim: int = 8, seed: int = 0) -> None:
    """A TF SavedModel standing in for TF-Hub's ``universal-sentence-encoder``: called with a
    batch of strings (what TextAttack's ``UniversalSentenceEncoder.encode`` passes), it returns
    one unit vector per string, the mean of its lower-cased words' vectors (words hashed into
    ``buckets`` random rows). ``tensorflow_hub.load(folder)`` loads it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub  # noqa: F401  (fails here, not in a run, if it cannot import)

    class Encoder(tf.Module):
        def __init__(self, table):
            super().__init__()
            self.table = tf.Variable(table, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, inputs):
            tokens = tf.strings.split(tf.strings.lower(inputs))
            vectors = tf.gather(self.table, tf.strings.to_hash_bucket_fast(tokens, buckets))
            return tf.math.l2_normalize(tf.reduce_mean(vectors, axis=1), axis=-1)

    table = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)
    shutil.rmtree(folder, ignore_errors=True)
    tf.saved_model.save(Encoder(table), str(folder))
    (folder / RESOURCE_MANIFEST).write_text(json.dumps(_stand_in(
        "Universal Sentence Encoder", "TF-Hub google/universal-sentence-encoder/3 (and "
        "-large/5)", dim=dim, buckets=buckets), indent=1) + "\n")  # fmt: skip


def textattack_package() -> Path | None:
    """The installed ``textattack`` package folder (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("textattack")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def build_textattack_view(site: Path) -> Path | None:
    """``site/textattack``: the installed package seen through symbolic links, plus a stand-in
    of the homoglyph list TextBugger opens at ``textattack/shared/intentional_homoglyphs.txt``
    (Unicode's ``intentional.txt``, missing from the textattack 0.3.11 wheel). TextAttack finds
    the file next to its own modules only, so the stand-in goes into a view of the package
    that ``PYTHONPATH=site`` puts first, not into the installed package: the modules are the
    installed ones, byte for byte (``__file__`` keeps the view's path, so the file is looked up
    in the view). Returns the homoglyph file, or None when textattack is not installed."""
    import unicodedata

    pkg = textattack_package()
    if pkg is None:
        return None
    view = site / "textattack"
    shutil.rmtree(view, ignore_errors=True)
    (view / "shared").mkdir(parents=True)
    for entry in pkg.iterdir():
        if entry.name not in ("shared", "__pycache__"):
            (view / entry.name).symlink_to(entry)
    for entry in (pkg / "shared").iterdir():
        if entry.name not in (HOMOGLYPH_FILE, "__pycache__"):
            (view / "shared" / entry.name).symlink_to(entry)
    lines = ["# intentional.txt stand-in (scripts/rehearse.py): Latin -> Cyrillic look-alikes"]
    for latin, code in HOMOGLYPHS.items():
        glyph = chr(code)
        lines.append(f"{ord(latin):04X} ;\t{code:04X} #* ( {latin} → {glyph} ) "
                     f"{unicodedata.name(latin)} → {unicodedata.name(glyph)}")  # fmt: skip
    path = view / "shared" / HOMOGLYPH_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_name(path.name + "." + RESOURCE_MANIFEST).write_text(json.dumps(_stand_in(
        "intentional homoglyphs", "Unicode intentional.txt (UTS #39 security data)",
        pairs=len(HOMOGLYPHS)), indent=1) + "\n")  # fmt: skip
    return path


def build_attack_resources(dest: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The stand-ins of the stock attacks' downloads under ``dest/resources`` and
    ``dest/site``; ``({key: path}, {resource: why not built})``. The masked LM of BERT-Attack
    and BAE is the local Hub's ``bert-base-uncased`` (``paths.masked_lm=null``)."""
    built, not_built = {}, {}
    res = dest / "resources"
    build_counterfitted(res / "paragramcf")
    built["counterfitted_embeddings"] = str(res / "paragramcf")
    why = use_missing()
    if why:
        not_built["universal-sentence-encoder"] = why
    else:
        build_use(res / "universal-sentence-encoder")
        built["use_model"] = str(res / "universal-sentence-encoder")
    homoglyphs = build_textattack_view(dest / "site")
    if homoglyphs is None:
        not_built["intentional_homoglyphs"] = "needs textattack (pip install -e .)"
    else:
        built["homoglyphs"] = str(homoglyphs)
        built["site"] = str(dest / "site")
    return built, not_built


# -- the whole rehearsal -----------------------------------------------------------------------


def build(dest: Path) -> dict[str, Any]:
    """Build the local Hub under ``dest`` (``hub/``, ``datasets/``) and the attack stand-ins
    (``resources/``, ``site/``) and return the manifest: ``{"hf_home", "models": {repo:
    commit}, "datasets": {repo: {"config", "commit", "splits": {split: [[text, label],
    ...]}}}, "resources": {key: path}, "not_built": {name: why}}``, also written to
    ``dest/manifest.json``. A model or resource that needs a package that is not installed is
    left out and named in ``not_built``."""
    dest = Path(dest).resolve()
    hub_dir, data_dir = dest / "hub", dest / "datasets"
    hub_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"hf_home": str(dest), "models": {}, "datasets": {},
                                "not_built": {}}  # fmt: skip
    for repo, spec in hub_models().items():
        missing = missing_packages(spec)
        if missing:  # the real repository needs them too: say so, build the rest
            manifest["not_built"][repo] = (
                f"needs {', '.join(missing)} (pip install {' '.join(missing)})"
            )
            continue
        manifest["models"][repo] = build_model(spec, hub_dir)[0]
    for repo, spec in hub_datasets().items():
        shutil.rmtree(data_dir / repo.replace("/", "___"), ignore_errors=True)
        commit, _ = build_dataset(spec, data_dir)
        manifest["datasets"][repo] = {
            "config": spec.config, "hub_name": spec.hub_name, "commit": commit,
            "splits": {s: [list(r) for r in rows] for s, rows in spec.splits.items()},
        }  # fmt: skip
    manifest["resources"], missing = build_attack_resources(dest)
    manifest["not_built"].update(missing)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def environment(dest: Path, resources: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a run on the rehearsal needs (the ``export`` lines); ``resources`` is
    the manifest's (the attack stand-ins that were built). ``PYTHONPATH`` is the folder of the
    TextAttack view, to go before any existing entries."""
    dest = Path(dest).resolve()
    res = resources or {}
    # Hydra overrides for every command on the rehearsal: the Hub datasets, not a local mirror;
    # records and caches of random models kept apart from real ones; the attack stand-ins
    # where their documented keys point (the masked LM is the local Hub's bert-base-uncased).
    args = ["paths.data_dir=null", f"paths.results_dir={dest / 'results'}",
            f"paths.cache_dir={dest / 'cache'}"]  # fmt: skip
    args += [f"paths.{key}={res[key]}" for key in ("counterfitted_embeddings", "use_model")
             if key in res]  # fmt: skip
    env = {
        "HF_HOME": str(dest), "HF_HUB_CACHE": str(dest / "hub"),
        "HF_DATASETS_CACHE": str(dest / "datasets"), "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "RPB_REHEARSAL_ARGS": " ".join(args),
    }  # fmt: skip
    if "site" in res:
        env["PYTHONPATH"] = res["site"]
    return env


def main(argv: list[str] | None = None) -> int:
    """``rehearse.py DIR``: build the local Hub in DIR, print the ``export`` lines."""
    import shlex

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: scripts/rehearse.sh DIR   (then: eval \"$(scripts/rehearse.sh DIR)\")",
              file=sys.stderr)  # fmt: skip
        return 2
    dest = Path(args[0])
    manifest = build(dest)
    print(f"# local Hub: {len(manifest['models'])} models, {len(manifest['datasets'])} datasets, "
          f"attack stand-ins in {dest.resolve()}")  # fmt: skip
    for repo, why in manifest["not_built"].items():
        print(f"# not built: {repo} {why}")
    print("unset TRANSFORMERS_CACHE  # an old-style cache variable would win over HF_HUB_CACHE")
    for key, value in environment(dest, manifest["resources"]).items():
        if key == "PYTHONPATH":  # before what the shell has
            print(f'export PYTHONPATH={shlex.quote(value)}"${{PYTHONPATH:+:$PYTHONPATH}}"')
        else:
            print(f"export {key}={shlex.quote(value)}")
    print("# then: python -m benchmark.run $RPB_REHEARSAL_ARGS model=roberta_base ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
