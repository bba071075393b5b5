"""Shared test set-up: offline by construction, one CPU thread, tiny in-process fixtures."""

from __future__ import annotations

import os

# Offline and quiet before anything imports transformers, datasets, wandb or tqdm.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("USE_TF", "0")  # as benchmark/__init__.py: no TensorFlow via transformers

from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from threads, and several test processes share 2 cores.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture
def tiny_model(tmp_path):
    """A random 2-layer BERT classifier and its tokenizer (deterministic)."""
    from benchmark.models.loading import build_tiny_bert

    return build_tiny_bert(num_labels=2, workdir=tmp_path / "tiny")


@pytest.fixture
def tiny_examples():
    """The tiny task's splits as lists of (text, label)."""
    from benchmark.data.tiny import tiny_splits

    return {k: [(t, y) for t, y in v] for k, v in tiny_splits().items()}


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """The tiny BERT fine-tuned on the tiny task (validation accuracy 1.0), shared per session."""
    from benchmark.data.tiny import tiny_splits
    from benchmark.models.loading import build_tiny_bert
    from benchmark.training.loop import TrainConfig, train

    torch.manual_seed(0)
    model, tok = build_tiny_bert(2, tmp_path_factory.mktemp("tiny_trained"))
    train_set = [(t, y) for t, y in tiny_splits()["train"]]
    train(model, tok, train_set, TrainConfig(epochs=20, lr=1e-3, batch_size=16), 32,
          torch.device("cpu"))  # fmt: skip
    return model.eval(), tok


def _rehearse_module():
    """``scripts/rehearse.py`` (the local-Hub builder shared with ``scripts/rehearse.sh``)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("rehearse", ROOT / "scripts" / "rehearse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rehearse", module)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules["rehearse"])
    return sys.modules["rehearse"]


@pytest.fixture(scope="session")
def rehearse_module():
    """``scripts/rehearse.py`` as a module (no Hub built)."""
    return _rehearse_module()


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """The local Hugging Face Hub of ``scripts/rehearse.py``, built once per session.

    Returns ``{"dir", "manifest", "env", "module"}``: the folder, the manifest (each model's and
    dataset's commit, each split's rows, the attack stand-ins) and the environment a process on
    it needs (as ``scripts/rehearse.sh`` exports it). The
    test process's own environment is left alone (``transformers``, ``huggingface_hub`` and
    ``datasets`` read their cache folders at import): run what loads from it in a subprocess.
    ``module`` is ``scripts/rehearse.py`` itself.
    """
    rehearse = _rehearse_module()
    folder = tmp_path_factory.mktemp("local_hub")
    manifest = rehearse.build(folder)
    return {"dir": folder, "manifest": manifest,
            "env": rehearse.environment(folder, manifest["resources"]),
            "module": rehearse}  # fmt: skip


# -- the offline attacks' resources (tests/test_attacks.py, tests/test_cascade.py) ----------
NLTK_DIR = ROOT / ".resources" / "nltk_data"
NEIGHBORS = ROOT.parent / "shared" / "resources" / "counterfitted_neighbors.json"


@pytest.fixture(scope="module")
def nltk_ready():
    """NLTK data prepared by ``python -m benchmark.attacks.resources prepare`` (needed by TextAttack)."""
    from benchmark.attacks.resources import check, use_nltk_data
    from benchmark.errors import UserError

    use_nltk_data(NLTK_DIR)
    try:
        check(["stopwords", "wordnet", "pos_tagger", "universal_tagset"], str(NLTK_DIR), "tests")
    except UserError as exc:
        pytest.skip(f"offline NLTK data not prepared: {exc}")


@pytest.fixture(scope="module")
def res():
    """Resources of the offline attacks (no counter-fitted vectors: the table is used)."""
    if not NEIGHBORS.is_file():
        pytest.skip(f"{NEIGHBORS} not present")
    from benchmark.attacks.external import AttackResources

    return AttackResources(nltk_data=str(NLTK_DIR), counterfitted_neighbors=str(NEIGHBORS))
