"""Run a TextAttack attack on a model and summarise it from raw counts.

Definitions (METHODS.md), over the ``n_total`` attacked examples:
``attack_clean_acc = (success + failed) / total``; ``aua = failed / total``;
``asr = success / (success + failed)``; ``avg_queries`` = mean model queries per attacked
(not skipped) example; ``avg_perturbed_frac`` = mean fraction of words changed in successful
attacks. TextAttack's own rounded percentages are never used.

Attack names and what they build live in :mod:`benchmark.attacks.recipes`; their external
resources (paths config keys) in :mod:`benchmark.attacks.external`. ``run_attack`` can split
the fixed sample across worker processes with results identical to a serial run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.attacks.external import AttackResources
from benchmark.data.loading import Example
from benchmark.jobs.seeding import seed_everything

log = logging.getLogger(__name__)

# Explicit name -> TextAttack recipe class of the recipes used as shipped. 'bertattack' is
# BERT-Attack (Li et al., 2020), not BAE: robust_ticket's code mislabels BAE as BERT-Attack,
# and a test pins this table. Every name (modified and offline variants too) is built by
# benchmark.attacks.recipes.BUILDERS.
RECIPES: dict[str, str] = {
    "deepwordbug": "textattack.attack_recipes.DeepWordBugGao2018",
    "pwws": "textattack.attack_recipes.PWWSRen2019",
    "textfooler": "textattack.attack_recipes.TextFoolerJin2019",
    "textbugger": "textattack.attack_recipes.TextBuggerLi2018",
    "bertattack": "textattack.attack_recipes.BERTAttackLi2020",
    "bae": "textattack.attack_recipes.BAEGarg2019",
}


def _recipe_resources() -> dict[str, list[str]]:
    from benchmark.attacks.recipes import BUILDERS

    return {name: list(d.nltk) for name, d in BUILDERS.items()}


# NLTK resources each attack name needs locally (see benchmark.attacks.resources); the external
# resources (embeddings, encoders, masked LMs) are in benchmark.attacks.recipes.BUILDERS.
RECIPE_RESOURCES: dict[str, list[str]] = _recipe_resources()


@dataclass(frozen=True)
class AttackSpec:
    """An attack configuration (``conf/attack/<name>.yaml``).

    Attributes:
        recipe: a name of :data:`benchmark.attacks.recipes.BUILDERS`, or ``none``.
        num_examples: size of the fixed, seeded sample of the evaluation split (0 = all).
        seed: seed of the sample and of the attack's own randomness.
        query_budget: maximum model queries per example, or None.
        batch_size: model batch size for the attack's queries.
        version: bumped whenever the attack's numbers can change.
        resources: NLTK resources to check (empty = the recipe's own list).
        options: the recipe's own options (e.g. ``candidates: auto`` of textfooler_offline).
        workers: processes the sample is split across (CPU; results equal a serial run).
        bf16: run the victim model's queries under bfloat16 autocast (any device).
    """

    recipe: str = "none"
    num_examples: int = 100
    seed: int = 0
    query_budget: int | None = None
    batch_size: int = 64
    version: int = 1
    resources: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    bf16: bool = False

    def __post_init__(self) -> None:
        """Plain containers (Hydra passes DictConfig / ListConfig); validate workers."""
        object.__setattr__(self, "resources", [str(r) for r in self.resources])
        object.__setattr__(self, "options", {str(k): v for k, v in dict(self.options).items()})
        if int(self.workers) < 1:
            raise ValueError(f"attack.workers must be >= 1, got {self.workers}")

    @property
    def enabled(self) -> bool:
        """False for ``recipe: none``."""
        return self.recipe != "none"

    def needed_resources(self) -> list[str]:
        """NLTK resources this attack needs."""
        return self.resources or RECIPE_RESOURCES.get(self.recipe, [])

    def check_resources(self, resources: AttackResources, name: str | None = None) -> None:
        """Raise ``UserError`` (one line: resource and key) if a needed resource is missing."""
        from benchmark.attacks.recipes import check_attack_resources

        check_attack_resources(self, resources, name or self.recipe)


@dataclass(frozen=True)
class AttackSummary:
    """Raw counts of an attack run and the metrics computed from them."""

    n_total: int
    n_success: int
    n_failed: int
    n_skipped: int
    avg_queries: float
    avg_perturbed_frac: float
    seconds: float

    @property
    def attack_clean_acc(self) -> float:
        """(success + failed) / total: accuracy of the model on the attacked sample."""
        return (self.n_success + self.n_failed) / self.n_total if self.n_total else float("nan")

    @property
    def aua(self) -> float:
        """Accuracy under attack: failed / total."""
        return self.n_failed / self.n_total if self.n_total else float("nan")

    @property
    def asr(self) -> float:
        """Attack success rate: success / (success + failed)."""
        attacked = self.n_success + self.n_failed
        return self.n_success / attacked if attacked else float("nan")

    def metrics(self) -> dict[str, Any]:
        """Counts and metrics as a flat dict (record fields)."""
        return {
            **asdict(self), "attack_clean_acc": self.attack_clean_acc, "aua": self.aua,
            "asr": self.asr,
        }  # fmt: skip


def _textattack_wrapper_base():
    from textattack.models.wrappers import ModelWrapper

    return ModelWrapper


class PaddedModelWrapper:
    """TextAttack model wrapper padding each query batch to its longest sequence.

    TextAttack's stock HuggingFaceModelWrapper pads every query to 512 tokens (measured
    15-40x slower). Queries run in eval mode under ``torch.inference_mode``, optionally under
    bfloat16 autocast on the model's device. ``n_texts`` / ``n_calls`` / ``forward_seconds``
    count what actually reached the model (TextAttack's cache hits never do).
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        """Create an instance that is also a ``textattack.models.wrappers.ModelWrapper``."""
        base = _textattack_wrapper_base()
        if base not in cls.__bases__:
            cls = type(cls.__name__, (cls, base), {})
        return object.__new__(cls)

    def __init__(
        self, model: nn.Module, tokenizer, max_length: int, batch_size: int = 64,
        bf16: bool = False,
    ):  # fmt: skip
        """Args: the classifier (already on its device), its tokenizer, truncation, batch,
        bfloat16 autocast."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.bf16 = bf16
        self.device = next(model.parameters()).device
        self.n_texts = 0
        self.n_calls = 0
        self.forward_seconds = 0.0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def __call__(self, text_input_list: Sequence[str]) -> np.ndarray:
        """Logits for a list of texts."""
        outs = []
        start = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            for begin in range(0, len(text_input_list), self.batch_size):
                texts = list(text_input_list[begin : begin + self.batch_size])
                enc = self.tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)  # fmt: skip
                outs.append(self.model(**enc).logits.float().cpu())
                self.n_calls += 1
        self.n_texts += len(text_input_list)
        self.forward_seconds += time.perf_counter() - start
        return torch.cat(outs).numpy()

    def get_grad(self, text_input: str) -> dict[str, Any]:  # pragma: no cover - unused
        """Gradient-based attacks are not used by this suite."""
        raise NotImplementedError("gradient-based attacks are not supported")


def build_attack(spec: AttackSpec, wrapper, resources: AttackResources | None = None):
    """The ``textattack.Attack`` for ``spec``, built by its name's builder.

    Args:
        spec: the attack configuration.
        wrapper: the victim model's TextAttack wrapper.
        resources: local paths of external resources (default: ``AttackResources()``,
            i.e. TextAttack's own caches and the installed MiniLM package).

    The returned attack carries ``build_info`` (what was resolved at build time, e.g. the
    word-candidate source of an offline variant). Model queries go to the wrapper in batches
    of ``spec.batch_size`` (TextAttack's default is 32).
    """
    from benchmark.attacks.recipes import recipe_def

    definition = recipe_def(spec.recipe)
    attack, info = definition.build(wrapper, dict(spec.options), resources or AttackResources())
    attack.goal_function.batch_size = spec.batch_size
    if spec.query_budget:
        attack.goal_function.query_budget = spec.query_budget
    attack.build_info = {"recipe": spec.recipe, "base": definition.base, **info}
    log.info("attack %s: %s", spec.recipe, attack.build_info)
    return attack


def attack_one(attack, index: int, text: str, label: int, seed: int) -> dict[str, Any]:
    """Attack one example under seed ``seed + index``; its log row (result, queries, texts)."""
    from textattack.attack_results import (
        FailedAttackResult,
        SkippedAttackResult,
        SuccessfulAttackResult,
    )

    seed_everything(seed + index)  # TextAttack draws from the global RNGs
    for constraint in attack.constraints:  # per-example caches of our components
        if hasattr(constraint, "reset_cache"):
            constraint.reset_cache()
    result = attack.attack(text, int(label))
    if isinstance(result, SkippedAttackResult):
        kind = "skipped"
    elif isinstance(result, SuccessfulAttackResult):
        kind = "success"
    elif isinstance(result, FailedAttackResult):
        kind = "failed"
    else:  # MaximizedAttackResult etc. do not occur with classification goals
        raise TypeError(f"unexpected attack result {type(result).__name__}")
    orig = result.original_result.attacked_text
    pert = result.perturbed_result.attacked_text
    n_words = len(orig.words)
    n_changed = len(orig.all_words_diff(pert)) if kind == "success" else 0
    return {
        "index": index, "label": int(label), "result": kind,
        "queries": int(result.perturbed_result.num_queries),
        "original": orig.text, "perturbed": pert.text, "n_words": n_words,
        "n_perturbed_words": n_changed if kind == "success" else None,
        "perturbed_frac": n_changed / max(1, n_words) if kind == "success" else None,
        "perturbed_pct": 100.0 * n_changed / max(1, n_words) if kind == "success" else None,
    }  # fmt: skip


# Per-process state of fork workers (set by the pool initializer; not used otherwise).
_WORKER: dict[str, Any] = {}


def _worker_init(attack, seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["attack"] = attack
    _WORKER["seed"] = seed


def _worker_run(job: tuple[int, str, int]) -> dict[str, Any]:
    index, text, label = job
    return attack_one(_WORKER["attack"], index, text, label, _WORKER["seed"])


def _rows_parallel(
    attack, examples: Sequence[Example], seed: int, workers: int
) -> Iterator[dict[str, Any]]:
    """Rows in example order, computed by ``workers`` forked processes.

    The attack (model included) reaches the workers by ``fork``, not pickling; each example
    is reseeded with ``seed + index`` exactly as in the serial loop, so rows are identical.
    """
    if any(p.is_cuda for p in attack.goal_function.model.model.parameters()):
        raise ValueError("attack.workers > 1 is CPU-only (CUDA cannot be used after fork)")
    ctx = multiprocessing.get_context("fork")
    threads = max(1, torch.get_num_threads() // workers)
    jobs = [(i, text, int(label)) for i, (text, label) in enumerate(examples)]
    # `import textattack` sets TOKENIZERS_PARALLELISM=True; a fast tokenizer that has used its
    # thread pool then deadlocks in a forked child. "false" makes the children tokenise serially.
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with ctx.Pool(workers, initializer=_worker_init, initargs=(attack, seed, threads)) as pool:
            yield from pool.imap(_worker_run, jobs, chunksize=1)
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def summarise(rows: Iterable[dict[str, Any]], seconds: float) -> AttackSummary:
    """Counts and means of per-example rows (see the module docstring)."""
    rows = list(rows)
    kinds = [r["result"] for r in rows]
    queries = [r["queries"] for r in rows if r["result"] != "skipped"]
    perturbed = [r["perturbed_frac"] for r in rows if r["result"] == "success"]
    return AttackSummary(
        n_total=len(rows),
        n_success=kinds.count("success"),
        n_failed=kinds.count("failed"),
        n_skipped=kinds.count("skipped"),
        avg_queries=float(np.mean(queries)) if queries else float("nan"),
        avg_perturbed_frac=float(np.mean(perturbed)) if perturbed else float("nan"),
        seconds=seconds,
    )


def run_attack(
    attack,
    examples: Sequence[Example],
    seed: int,
    log_path: Path | None = None,
    progress: bool = True,
    workers: int = 1,
) -> AttackSummary:
    """Attack every example and count the results.

    Args:
        attack: a ``textattack.Attack``.
        examples: the fixed attack sample as ``(text, label)``.
        seed: base seed; example ``i`` is attacked under ``seed + i``.
        log_path: where to write one JSON line per example (original, perturbed, result,
            queries, perturbed words and %), or None.
        progress: show a progress bar.
        workers: processes to split the sample across (1 = in this process).
    """
    start = time.perf_counter()
    if workers > 1 and len(examples) > 1:
        it = _rows_parallel(attack, examples, seed, min(workers, len(examples)))
    else:
        it = (attack_one(attack, i, t, y, seed) for i, (t, y) in enumerate(examples))
    rows = list(tqdm(it, total=len(examples), desc="attack", disable=not progress))
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return summarise(rows, time.perf_counter() - start)
