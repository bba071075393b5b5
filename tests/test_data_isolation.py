"""Isolation by split: nothing a pruner chooses ever sees an evaluation sentence.

Every registered pruner (``conf/pruner/*.yaml``) runs a real job (``benchmark.jobs``, tiny
model, tiny budgets) on a local mirror of the tiny task whose evaluation sentences all carry a
marker word that no training sentence has. While the pruner runs (calibration, masks, candidate
selection, early stopping, retraining) three instruments watch: every text any tokenizer
encodes, every split file the data loader reads, and every token id any word embedding looks up
(the marker is outside the tiny vocabulary, so it becomes ``[UNK]``, which no training sentence
produces). The job's clean evaluation afterwards must show the marker to the same instruments,
so a silent instrument cannot pass the test. docs/statistics.md ("Rules a result must follow").
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.jobs.registry import options

ROOT = Path(__file__).resolve().parents[1]
MARKER = "§evalonly§"  # "§" is outside the tiny vocabulary: [UNK]
TINY = {"batch_size": 16}
# Budgets of the training-based pruners: a few steps each (seconds on the tiny model).
BUDGETS = {
    "rticket": {"mask_epochs": 2, "ticket_max_steps": 2, "adv_steps": 2, **TINY},
    "rticket_no_adv": {"mask_epochs": 1, "ticket_max_steps": 2, **TINY},
    "rticket_no_mask_learning": {"imp_rate_per_round": 0.3, "imp_max_steps": 2,
                                 "ticket_max_steps": 2, "adv_steps": 2, **TINY},
    "seven": {"max_steps": 8, "window_start": 2, "window_length": 4, **TINY},
    "randmask": {"num_candidates": 2, "candidate_max_steps": 4, "eval_every": 2,
                 "stage_max_steps": 4, "dense_max_steps": 2, "patience": 1,
                 "val_examples": 40, "heldout_eval_examples": 8, **TINY},  # the official split
    "imp": {"rate_per_round": 0.3, "max_steps": 2, **TINY},
    "lth": {"rate_per_round": 0.3, "max_steps": 2, **TINY},
    "imp_freelb": {"rate_per_round": 0.3, "max_steps": 2, "adv_steps": 2, **TINY},
    "lth_freelb": {"rate_per_round": 0.3, "max_steps": 2, "adv_steps": 2, **TINY},
}  # fmt: skip


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A local mirror of the tiny task: ``marked/train.csv`` as is, ``marked/validation.csv``
    with the marker word in every sentence."""
    from benchmark.data.tiny import tiny_splits

    root = tmp_path_factory.mktemp("isolation_data")
    folder = root / "marked"
    folder.mkdir()
    splits = tiny_splits()
    assert not any(MARKER in t for t, _ in splits["train"])
    for split, mark in (("train", False), ("validation", True)):
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            for text, label in splits[split]:
                writer.writerow([f"{MARKER} {text}" if mark else text, label])
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("isolation_cache")


class Watch:
    """What reached the instruments, by phase (``prune``, ``dense``, ``other``)."""

    def __init__(self, unk_id: int):
        self.phase = "other"
        self.unk_id = unk_id
        self.texts: dict[str, int] = {}
        self.splits: dict[str, list[str]] = {}
        self.unk: dict[str, int] = {}

    def saw_text(self, text: str) -> None:
        if MARKER in text:
            self.texts[self.phase] = self.texts.get(self.phase, 0) + 1

    def saw_ids(self, ids: torch.Tensor) -> None:
        n = int((ids == self.unk_id).sum())
        if n:
            self.unk[self.phase] = self.unk.get(self.phase, 0) + n

    def leaks(self, phase: str) -> dict[str, object]:
        return {k: v for k, v in (("texts", self.texts.get(phase)),
                                  ("split files", self.splits.get(phase)),
                                  ("[UNK] ids", self.unk.get(phase))) if v}  # fmt: skip


def _phase(watch: Watch, name: str, fn):
    def run(*args, **kwargs):
        old, watch.phase = watch.phase, name
        try:
            return fn(*args, **kwargs)
        finally:
            watch.phase = old

    return run


@pytest.fixture
def watch(monkeypatch, tmp_path):
    """Instruments on every tokenizer, the data loader and every word embedding; the pruning
    step of the pipeline (``_prune``: calibration sentences, the pruner, its retraining and
    selection) is phase ``prune``."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from benchmark.data import loading
    from benchmark.jobs import pipeline
    from benchmark.models.loading import tiny_tokenizer

    tok = tiny_tokenizer(tmp_path / "tok")
    w = Watch(tok.unk_token_id)

    real_call = PreTrainedTokenizerBase.__call__

    def call(self, text=None, *args, **kwargs):
        for t in [text] if isinstance(text, str) else list(text or []):
            w.saw_text(t if isinstance(t, str) else " ".join(map(str, t)))
        return real_call(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", call)
    real_load = loading._load_local

    def load(spec, split, data_dir):
        if split == spec.eval_split:
            w.splits.setdefault(w.phase, []).append(split)
        return real_load(spec, split, data_dir)

    monkeypatch.setattr(loading, "_load_local", load)
    monkeypatch.setattr(pipeline, "_prune", _phase(w, "prune", pipeline._prune))

    def embedding_hook(module, inputs):  # word embeddings: the vocabulary's size, a pad row
        if (isinstance(module, nn.Embedding) and module.num_embeddings == len(tok)
                and module.padding_idx is not None and inputs):  # fmt: skip
            w.saw_ids(inputs[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(embedding_hook)
    yield w
    handle.remove()


def _job(mirror: Path, cache: Path, results: Path, pruner: str, *extra: str):
    """The job of ``pruner`` on the marked mirror (its Job and W&B mirror, not yet run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from benchmark.jobs.build import build_job, job_identity

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))
    sparsity = "0.0" if pruner == "none" else "0.5"
    overrides = [
        "experiment=smoke", "attack=none", "progress=false", "cache_pruned=false",
        f"pruner={pruner}",
        f"sparsity={sparsity}", "dataset.builtin=null", "+dataset.local_name=marked",
        f"paths.data_dir={mirror}", f"paths.results_dir={results}", f"paths.cache_dir={cache}",
        *(f"pruner.{k}={v}" for k, v in BUDGETS.get(pruner, {}).items()), *extra,
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        choices = dict(compose("run", overrides=overrides,
                               return_hydra_config=True).hydra.runtime.choices)  # fmt: skip
        cfg = compose("run", overrides=overrides)
    return build_job(cfg, choices, job_identity(cfg, choices))


def _check_instruments_work(w: Watch) -> None:
    """The clean evaluation read, tokenized and embedded the marked sentences."""
    assert w.texts.get("other", 0) >= 32 and "validation" in w.splits.get("other", [])
    assert w.unk.get("other", 0) >= 32


@pytest.mark.parametrize("pruner", options("pruner"))
def test_no_evaluation_sentence_reaches_the_pruner(pruner, mirror, cache, tmp_path, watch):
    from benchmark.jobs.build import run_job

    job, tracker = _job(mirror, cache, tmp_path, pruner)
    rec = run_job(job, tracker)
    assert rec["status"] == "ok" and rec["n_eval"] == 32
    assert watch.leaks("prune") == {}, f"{pruner} saw evaluation sentences"
    _check_instruments_work(watch)


def test_the_dense_fine_tune_never_sees_an_evaluation_sentence(mirror, tmp_path, monkeypatch,
                                                               watch):  # fmt: skip
    """The dense checkpoint is the last step of its budget, trained on the training split
    (its accuracy on the evaluation split is measured after training, outside ``fit``)."""
    from benchmark.jobs.build import run_job

    job, tracker = _job(mirror, tmp_path / "fresh_cache", tmp_path / "results", "none")
    recipe_cls = type(job.dense)
    monkeypatch.setattr(recipe_cls, "fit", _phase(watch, "dense", recipe_cls.fit))
    rec = run_job(job, tracker)
    assert rec["status"] == "ok" and rec["dense_info"]["checkpoint"] == "last"
    assert watch.texts.get("dense") is None and watch.unk.get("dense") is None
    _check_instruments_work(watch)


def test_a_leak_is_caught(mirror, cache, tmp_path, monkeypatch, watch):
    """A pipeline that calibrated on the evaluation split (here: appended to the training
    sentences) is caught by the same instruments."""
    from benchmark.jobs import pipeline
    from benchmark.jobs.build import run_job

    real = pipeline.calibration_split

    def leaky(job, train):
        evals = pipeline.load_split(job.dataset, job.dataset.eval_split, job.data_dir)
        return list(real(job, train)) + evals

    monkeypatch.setattr(pipeline, "calibration_split", leaky)
    job, tracker = _job(mirror, cache, tmp_path, "wanda", "pruner.nsamples=128")
    assert run_job(job, tracker)["status"] == "ok"
    leaks = watch.leaks("prune")
    assert leaks["split files"] == ["validation"] and leaks["texts"] and leaks["[UNK] ids"]


def test_the_attacked_model_is_fixed_and_deterministic(tiny_model):
    """A model handed to the attack in training mode (dropout on) is queried in eval mode:
    the same texts give the same logits, and no weight changes."""
    from benchmark.attacks.adapter import PaddedModelWrapper
    from benchmark.attacks.resources import use_nltk_data

    use_nltk_data(ROOT / ".resources" / "nltk_data")  # importing TextAttack reads stopwords
    model, tok = tiny_model
    model.config.hidden_dropout_prob = 0.5
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapper = PaddedModelWrapper(model, tok, max_length=32, batch_size=4)
    texts = ["the movie was good", "a dull and boring plot", "fine acting"]
    first, second = wrapper(texts), wrapper(texts)
    assert not model.training and (first == second).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
