"""The dense starting model: fine-tuned once per (model, task, budget), cached on disk by key.

Every later job with the same key reuses the cache. A file lock makes concurrent jobs (joblib,
Slurm arrays) wait for one fine-tune instead of running it several times. The cache folder is
written under a temporary name and renamed, so an interrupted fine-tune leaves nothing behind.
Checkpoint choice: the LAST step of the budget (recorded as ``checkpoint: last``), never
selected on the evaluation split the attacks use.

Held-out selection data: a pruner that selects on a held-out part of the TRAINING split
(RobustT's epoch choice) declares it as ``dense_holdout = {"n_holdout": n, "seed": s}``; the
caller passes it as ``get_dense(..., holdout=...)``, the dense model then trains on the rest
only (``holdout_split(train, n, s)``), and the pair is part of the cache key. So the selection
never scores examples the starting model was trained on. ``holdout=None`` keeps the old key.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch
from filelock import FileLock
from torch import nn

from benchmark.data.loading import DatasetSpec, Example, load_split
from benchmark.models.loading import ModelSpec, attach_layout, load_classifier, load_model
from benchmark.records.identity import source_hash
from benchmark.records.store import short_hash
from benchmark.training.loop import TrainConfig, accuracy, capped_examples, holdout_split, train

log = logging.getLogger(__name__)


class DenseRecipe(Protocol):
    """How the dense starting model is trained (``conf/dense/<name>.yaml``)."""

    version: int

    def cache_config(self) -> dict[str, Any]:
        """Everything about the recipe that changes the resulting weights (the cache key)."""
        ...

    def fit(
        self, model: nn.Module, tokenizer, train_set: Sequence[Example], max_length: int,
        device: torch.device,
    ) -> dict[str, Any]:  # fmt: skip
        """Train ``model`` in place; return JSON-serialisable training statistics."""
        ...


class FineTune:
    """Plain cross-entropy fine-tuning (METHODS.md "Dense starting models": Fine-tune).

    Deviation: the default budget here is 1 epoch at lr 5e-5 (the papers: 3 epochs at 2e-5 on
    bert-base); a CPU-affordable budget for the 22M-parameter MiniLM. The paper's budget is a
    config override (``dense.epochs=3 dense.lr=2e-5``).
    """

    def __init__(self, version: int = 1, **train_kwargs: Any) -> None:
        """Args: ``version`` and the fields of :class:`benchmark.training.loop.TrainConfig`."""
        self.version = version
        self.cfg = TrainConfig(**train_kwargs)

    def cache_config(self) -> dict[str, Any]:
        """The recipe's name, version and budget."""
        return {"recipe": "finetune", "version": self.version, **asdict(self.cfg)}

    def fit(self, model, tokenizer, train_set, max_length, device) -> dict[str, Any]:
        """Fine-tune with the shared loop."""
        return train(
            model, tokenizer, train_set, self.cfg, max_length, device, desc="dense fine-tune"
        )


def check_holdout(holdout: dict[str, int] | None) -> dict[str, int] | None:
    """Validate a ``{"n_holdout": int, "seed": int}`` held-out declaration (None passes)."""
    if holdout is None:
        return None
    if set(holdout) != {"n_holdout", "seed"} or int(holdout["n_holdout"]) < 1:
        raise ValueError(f"holdout must be {{'n_holdout': n >= 1, 'seed': s}}, got {holdout!r}")
    return {"n_holdout": int(holdout["n_holdout"]), "seed": int(holdout["seed"])}


def dense_train_examples(
    train_set: Sequence[Example], holdout: dict[str, int] | None
) -> list[Example]:
    """The examples the dense model trains on: all, or the rest after the held-out part."""
    holdout = check_holdout(holdout)
    if holdout is None:
        return list(train_set)
    return holdout_split(train_set, holdout["n_holdout"], holdout["seed"])[0]


def dense_key(
    model: ModelSpec, dataset: DatasetSpec, recipe: DenseRecipe,
    holdout: dict[str, int] | None = None, data: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """Cache key: everything that changes the dense model's weights.

    ``holdout`` (the examples kept out of the dense training) joins the key only when given.
    ``data`` is the job's data source (content fingerprint of local files, or the Hub name and
    commit: :func:`benchmark.records.identity.data_source`), ``num_labels`` the head's size, and
    ``code`` the source hash of the recipe's module and everything it imports except
    bookkeeping (:data:`benchmark.records.identity.BOOKKEEPING`), so flipped labels, another
    task shape or an edited training loop never reuse a cached model, and an edit of how
    records are stored does not orphan one.
    """
    spec = {k: v for k, v in asdict(model).items() if not (k == "layout" and v is None)}
    cfg = {"model": spec, "dataset": dataset.name, "num_labels": dataset.num_labels,
           "max_length": dataset.max_length,
           "train_split": dataset.train_split, "recipe": recipe.cache_config(),
           "data": data, "code": source_hash(type(recipe).__module__)}  # fmt: skip
    holdout = check_holdout(holdout)
    if holdout is not None:
        cfg["holdout"] = holdout
    return short_hash(cfg)


def load_pretrained(model: ModelSpec, dataset: DatasetSpec, workdir: Path):
    """The pre-trained (not task-fine-tuned) model and tokenizer."""
    return load_model(model, dataset.num_labels, workdir / "tiny_vocab")


def get_dense(
    model: ModelSpec,
    dataset: DatasetSpec,
    recipe: DenseRecipe,
    data_dir: str | None,
    cache_dir: Path,
    device: torch.device,
    holdout: dict[str, int] | None = None,
    data: dict[str, Any] | None = None,
):
    """Return ``(model, tokenizer, info)`` for the fine-tuned dense model, training it if needed.

    ``holdout``: the pruner's ``dense_holdout`` (None: train on the whole training split).
    ``info`` holds ``dense_acc`` (accuracy on the evaluation split), the key, the training
    cost, how the checkpoint was chosen and the held-out part (``holdout``).
    """
    if model.finetuned:  # a public fine-tuned checkpoint: no training, accuracy measured here
        net, tok = load_classifier(
            model.finetuned, dataset.num_labels, model.revision, "model.finetuned"
        )
        net = attach_layout(net, model.layout)
        net.to(device).eval()
        evals = load_split(dataset, dataset.eval_split, data_dir)
        acc = accuracy(net, tok, evals, dataset.max_length, device)
        info = {"dense_acc": acc, "checkpoint": f"given:{model.finetuned}"}
        if holdout is not None:  # a given checkpoint's training data is not ours to choose
            info["holdout"] = {**check_holdout(holdout), "left_out_of_dense": False}
        return net, tok, info
    key = dense_key(model, dataset, recipe, holdout, data)
    folder = cache_dir / "dense" / f"{model.name}-{dataset.name}-{key}"
    cache_dir.joinpath("dense").mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / "dense" / f".{key}.lock")):  # until the entry exists
        loaded = _try_load(folder, model, dataset)
        if loaded is None:
            _train_into(folder, model, dataset, recipe, data_dir, cache_dir, device, holdout)
            loaded = _try_load(folder, model, dataset)
    info, net, tok = loaded
    net.to(device).eval()
    log.info("dense model %s (dev acc %.4f) from %s", model.name, info["dense_acc"], folder)
    return net, tok, info


def _try_load(folder: Path, model: ModelSpec, dataset: DatasetSpec):
    """(info, model, tokenizer) of a cache entry; None when there is none. An entry that cannot
    be read (truncated by a kill, corrupt) is named in the log and removed, to be rebuilt."""
    if not (folder / "info.json").is_file():
        return None
    try:
        info = json.loads((folder / "info.json").read_text())
        net, tok = _load_cached(folder, model, dataset)
    except Exception as exc:
        log.warning(
            "dense cache %s is unreadable (%s: %s); training it again",
            folder,
            type(exc).__name__,
            (str(exc).splitlines() or [""])[0][:120],
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return info, net, tok


def _load_cached(folder: Path, model: ModelSpec, dataset: DatasetSpec):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    net = AutoModelForSequenceClassification.from_pretrained(folder)
    if net.config.num_labels != dataset.num_labels:  # the key holds num_labels: a bad entry
        raise ValueError(f"cached head has {net.config.num_labels} classes, the task "
                         f"{dataset.num_labels} (dataset.num_labels)")  # fmt: skip
    tok = AutoTokenizer.from_pretrained(folder)
    return attach_layout(net, model.layout), tok


def _train_into(folder, model, dataset, recipe, data_dir, cache_dir, device, holdout=None) -> None:
    full = load_split(dataset, dataset.train_split, data_dir)
    train_set = dense_train_examples(full, holdout)
    evals = load_split(dataset, dataset.eval_split, data_dir)
    # One seed for the new head's initialisation and, continuing, the training dropout.
    torch.manual_seed(int(recipe.cache_config().get("seed", 0)))
    net, tok = load_pretrained(model, dataset, cache_dir / "tmp")
    net.to(device)
    n_train = capped_examples(len(train_set), recipe.cache_config().get("max_train_examples"))
    log.info("fine-tuning %s on %s (%d of %d training examples) - cached for later jobs",
             model.name, dataset.name, n_train, len(full))  # fmt: skip
    start = time.perf_counter()
    stats = recipe.fit(net, tok, train_set, dataset.max_length, device)
    acc = accuracy(net, tok, evals, dataset.max_length, device)
    info = {
        "dense_acc": acc, "key": folder.name, "checkpoint": "last", "train": stats,
        "seconds": time.perf_counter() - start, "recipe": recipe.cache_config(),
        "device": str(device), "holdout": check_holdout(holdout),
        "n_train": n_train, "n_train_split": len(full),
        # training is not thread-count independent (MKL's reductions): 1 vs 2 threads gave
        # weights 3.7e-5 apart (docs/statistics.md); the record names the count
        "intra_op_threads": torch.get_num_threads(),
    }  # fmt: skip
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info("dense fine-tune done: dev acc %.4f in %.0f s", acc, info["seconds"])
