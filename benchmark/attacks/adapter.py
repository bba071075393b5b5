"""Run a TextAttack attack on a model and summarise it from raw counts.

Definitions (METHODS.md), over the ``n_total`` attacked examples:
``attack_clean_acc = (success + failed + limit) / total``; ``aua = failed / total``;
``asr = success / (success + failed)``; ``avg_queries`` = mean model queries per attacked
(not skipped) example; ``avg_perturbed_frac`` = mean fraction of words changed in successful
attacks. TextAttack's own rounded percentages are never used. An example that hits a
per-example limit (``max_seconds_per_example``, or ``query_budget`` exhausted without success)
is counted in ``n_limit``: it was classified correctly and not broken within the limit, so it
is neither a survivor (``failed``) nor a success; Aua counts it as not surviving, and Aua's
upper bound ``(failed + limit) / total`` is recorded beside it.

The per-example log is written as the attack goes (``<run_id>.attack.partial.jsonl``), one
flushed JSON line per example; a job interrupted mid-attack resumes from it. When the job ends
it is compressed into ``<run_id>.attack.jsonl.gz`` (:mod:`benchmark.records.logs`). Each line holds
``example_index`` (index into the evaluation split, so runs on the same seeded sample pair
up), ``label``, ``result`` (successful / failed / skipped / limit), ``queries``, the
predictions and the probability of the true label before and after, the texts, and the
perturbed-word fraction and character edit distance.

Attack names and what they build live in :mod:`benchmark.attacks.recipes`; their external
resources (paths config keys) in :mod:`benchmark.attacks.external`. ``run_attack`` can split
the fixed sample across worker processes with results identical to a serial run.
"""

from __future__ import annotations

import contextlib
import functools
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
        max_seconds_per_example: wall-clock limit of one example's attack (None = none); an
            example that hits it is logged as ``limit`` and counted in ``n_limit``.
        recipes: ``recipe: cascade`` only: the recipes it runs, in order
            (:mod:`benchmark.attacks.cascade`); ``options`` then maps a recipe to option
            overrides.
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
    max_seconds_per_example: float | None = None
    recipes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Plain containers (Hydra passes DictConfig / ListConfig); validate workers and a
        cascade's recipes."""
        object.__setattr__(self, "resources", [str(r) for r in self.resources])
        object.__setattr__(self, "options", {str(k): v for k, v in dict(self.options).items()})
        object.__setattr__(self, "recipes", [str(r) for r in self.recipes])
        if int(self.workers) < 1:
            raise ValueError(f"attack.workers must be >= 1, got {self.workers}")
        if self.recipe == "cascade":
            from benchmark.attacks.cascade import check_recipes

            problem = check_recipes(self.recipes)
            if problem:
                raise ValueError(f"attack.recipes={self.recipes}: expected {problem}")
        elif self.recipes:
            raise ValueError(f"attack.recipes is for attack=cascade only (recipe {self.recipe!r})")

    @property
    def enabled(self) -> bool:
        """False for ``recipe: none``."""
        return self.recipe != "none"

    def needed_resources(self) -> list[str]:
        """NLTK resources this attack needs (a cascade: those of all its recipes)."""
        if self.recipe == "cascade":
            return list(dict.fromkeys(r for s in self.steps() for r in s.needed_resources()))
        return self.resources or RECIPE_RESOURCES.get(self.recipe, [])

    def steps(self) -> list[AttackSpec]:
        """A cascade's recipes as single-attack specs, in order; ``[self]`` otherwise."""
        if self.recipe != "cascade":
            return [self]
        from benchmark.attacks.cascade import step_specs

        return step_specs(self)

    def check_resources(self, resources: AttackResources, name: str | None = None) -> None:
        """Raise ``UserError`` (one line: resource and key) if a needed resource is missing
        (for a cascade: the first one missing of any of its recipes)."""
        from benchmark.attacks.recipes import check_attack_resources

        for step in self.steps():
            label = name or self.recipe
            if step is not self:
                label = f"{label} ({step.recipe})"
            check_attack_resources(step, resources, label)


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
    n_limit: int = 0

    @property
    def attack_clean_acc(self) -> float:
        """(success + failed + limit) / total: accuracy of the model on the attacked sample."""
        correct = self.n_success + self.n_failed + self.n_limit
        return correct / self.n_total if self.n_total else float("nan")

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
        """Counts, metrics and their 95% Wilson intervals as a flat dict (record fields)."""
        from benchmark.reporting.stats import wilson_interval

        out = {
            **asdict(self), "attack_clean_acc": self.attack_clean_acc, "aua": self.aua,
            "asr": self.asr,
            "aua_upper": (self.n_failed + self.n_limit) / self.n_total if self.n_total
            else float("nan"),
        }  # fmt: skip
        attacked = self.n_success + self.n_failed
        for name, k, n in (
            ("attack_clean_acc", self.n_success + self.n_failed + self.n_limit, self.n_total),
            ("aua", self.n_failed, self.n_total), ("asr", self.n_success, attacked),
        ):  # fmt: skip
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson_interval(k, n)
        return out


def _textattack_wrapper_base():
    from textattack.models.wrappers import ModelWrapper

    return ModelWrapper


class PaddedModelWrapper:
    """TextAttack model wrapper padding each query batch to its longest sequence.

    TextAttack's stock HuggingFaceModelWrapper pads every query to 512 tokens (measured
    15-40x slower). Queries run in eval mode under ``torch.inference_mode``, under the job's
    ``precision`` (:mod:`benchmark.models.precision`) on the model's device. ``n_texts`` /
    ``n_calls`` / ``forward_seconds`` count what actually reached the model (TextAttack's cache
    hits never do).
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        """Create an instance that is also a ``textattack.models.wrappers.ModelWrapper``."""
        base = _textattack_wrapper_base()
        if base not in cls.__bases__:
            cls = type(cls.__name__, (cls, base), {})
        return object.__new__(cls)

    def __init__(
        self, model: nn.Module, tokenizer, max_length: int, batch_size: int = 64,
        precision: str = "float32",
    ):  # fmt: skip
        """Args: the classifier (already on its device), its tokenizer, truncation, batch,
        the job's precision (``float32``, ``bfloat16``, ``float16``)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = precision
        self.device = next(model.parameters()).device
        self.n_texts = 0
        self.n_calls = 0
        self.forward_seconds = 0.0

    def _autocast(self) -> contextlib.AbstractContextManager:
        from benchmark.models.precision import autocast

        return autocast(self.precision, self.device)

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
    of ``spec.batch_size`` (TextAttack's default is 32). A cascade gives a
    :class:`benchmark.attacks.cascade.CascadeAttack` of its recipes, built the same way.
    """
    from benchmark.attacks.components import (
        install_lazy_index_map,
        install_levenshtein_trim,
        install_word_memo,
    )
    from benchmark.attacks.recipes import recipe_def

    install_word_memo()  # same results, less repeated word splitting on long texts
    install_levenshtein_trim()  # the same decisions, on the changed span, cut off at the bound
    install_lazy_index_map()  # candidate texts split into words only when their words are read
    if spec.recipe == "cascade":
        from benchmark.attacks.cascade import build_cascade

        return build_cascade(spec, wrapper, resources)

    definition = recipe_def(spec.recipe)
    attack, info = definition.build(wrapper, dict(spec.options), resources or AttackResources())
    attack.goal_function.batch_size = spec.batch_size
    if spec.query_budget:
        attack.goal_function.query_budget = spec.query_budget
    attack.build_info = {"recipe": spec.recipe, "base": definition.base, **info}
    log.info("attack %s: %s", spec.recipe, attack.build_info)
    return attack


class ExampleTimeout(BaseException):
    """Raised inside an attack when it exceeds ``max_seconds_per_example``. A BaseException,
    so that ``except Exception`` blocks inside TextAttack cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the body after ``seconds`` (main thread of a process; SIGALRM based)."""
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_signum, _frame):
        raise ExampleTimeout

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)


def _true_prob(goal_result, label: int) -> float | None:
    raw = getattr(goal_result, "raw_output", None)
    if raw is None:
        return None
    return float(np.asarray(torch.as_tensor(raw).detach().cpu(), dtype=np.float64)[label])


def attack_one(
    attack, index: int, text: str, label: int, seed: int, position: int | None = None,
    max_seconds: float | None = None, query_budget: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Attack one example under seed ``seed + position``; its log row.

    ``index`` is the example's index in the evaluation split, ``position`` its place in the
    attack sample (the seed offset, as before; defaults to ``index``).
    """
    import Levenshtein
    from textattack.attack_results import (
        FailedAttackResult,
        SkippedAttackResult,
        SuccessfulAttackResult,
    )

    position = index if position is None else position
    seed_everything(seed + position)  # TextAttack draws from the global RNGs
    for constraint in attack.constraints:  # per-example caches of our components
        if hasattr(constraint, "reset_cache"):
            constraint.reset_cache()
    started = time.perf_counter()
    try:
        with _time_limit(max_seconds):
            result = attack.attack(text, int(label))
    except ExampleTimeout:
        return {
            "example_index": index, "position": position, "label": int(label),
            "result": "limit", "limit": "seconds", "queries": None, "original": text,
            "perturbed": None, "seconds": time.perf_counter() - started,
        }  # fmt: skip
    limit = None
    if isinstance(result, SkippedAttackResult):
        kind = "skipped"
    elif isinstance(result, SuccessfulAttackResult):
        kind = "successful"
    elif isinstance(result, FailedAttackResult):
        kind = "failed"
        if query_budget and result.perturbed_result.num_queries >= query_budget:
            kind, limit = "limit", "queries"
    else:  # MaximizedAttackResult etc. do not occur with classification goals
        raise TypeError(f"unexpected attack result {type(result).__name__}")
    orig = result.original_result.attacked_text
    pert = result.perturbed_result.attacked_text
    n_words = len(orig.words)
    n_changed = len(orig.all_words_diff(pert)) if kind == "successful" else 0
    row = {
        "example_index": index, "position": position, "label": int(label), "result": kind,
        "queries": int(result.perturbed_result.num_queries),
        "orig_pred": int(result.original_result.output),
        "pert_pred": int(result.perturbed_result.output),
        "orig_true_prob": _true_prob(result.original_result, int(label)),
        "pert_true_prob": _true_prob(result.perturbed_result, int(label)),
        "original": orig.text, "perturbed": pert.text, "n_words": n_words,
        "n_perturbed_words": n_changed if kind == "successful" else None,
        "perturbed_frac": n_changed / max(1, n_words) if kind == "successful" else None,
        "char_edit_distance": (
            Levenshtein.distance(orig.text, pert.text) if kind == "successful" else None
        ),
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    if limit:
        row["limit"] = limit
    return row


def attack_row(
    attack, index: int, text: str, label: int, seed: int, position: int | None = None,
    max_seconds: float | None = None, query_budget: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One example's log line: :func:`attack_one`, or a cascade's own (``attack_row``)."""
    cascade = getattr(attack, "attack_row", None)
    run = cascade if cascade is not None else functools.partial(attack_one, attack)
    return run(index, text, label, seed, position, max_seconds=max_seconds,
               query_budget=query_budget)  # fmt: skip


# Per-process state of fork workers (set by the pool initializer; not used otherwise).
_WORKER: dict[str, Any] = {}


def _worker_init(attack, seed: int, threads: int, limits: dict[str, Any]) -> None:
    torch.set_num_threads(threads)
    _WORKER["attack"] = attack
    _WORKER["seed"] = seed
    _WORKER["limits"] = limits


def _worker_run(job: tuple[int, int, str, int]) -> dict[str, Any]:
    position, index, text, label = job
    return attack_row(_WORKER["attack"], index, text, label, _WORKER["seed"], position,
                      **_WORKER["limits"])  # fmt: skip


def _rows_parallel(
    attack, jobs: list[tuple[int, int, str, int]], seed: int, workers: int,
    limits: dict[str, Any],
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Rows in example order, computed by ``workers`` forked processes.

    The attack (model included) reaches the workers by ``fork``, not pickling; each example
    is reseeded with ``seed + index`` exactly as in the serial loop, so rows are identical.
    """
    if any(p.is_cuda for p in attack.goal_function.model.model.parameters()):
        raise ValueError("attack.workers > 1 is CPU-only (CUDA cannot be used after fork)")
    ctx = multiprocessing.get_context("fork")
    threads = max(1, torch.get_num_threads() // workers)
    # `import textattack` sets TOKENIZERS_PARALLELISM=True; a fast tokenizer that has used its
    # thread pool then deadlocks in a forked child. "false" makes the children tokenise serially.
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        init = (attack, seed, threads, limits)
        with ctx.Pool(workers, initializer=_worker_init, initargs=init) as pool:
            yield from pool.imap(_worker_run, jobs, chunksize=1)
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def summarise(rows: Iterable[dict[str, Any]], seconds: float) -> AttackSummary:
    """Counts and means of per-example rows (see the module docstring)."""
    rows = list(rows)
    kinds = [_kind(r) for r in rows]
    pairs = list(zip(rows, kinds, strict=True))
    queries = [r["queries"] for r, k in pairs if k != "skipped" and r["queries"]]
    perturbed = [r["perturbed_frac"] for r, k in pairs if k == "successful"]
    return AttackSummary(
        n_total=len(rows),
        n_success=kinds.count("successful"),
        n_failed=kinds.count("failed"),
        n_skipped=kinds.count("skipped"),
        n_limit=kinds.count("limit"),
        avg_queries=float(np.mean(queries)) if queries else float("nan"),
        avg_perturbed_frac=float(np.mean(perturbed)) if perturbed else float("nan"),
        seconds=seconds,
    )


def _kind(row: dict[str, Any]) -> str:
    """A row's result (logs written before schema 2 said ``success``)."""
    return "successful" if row["result"] == "success" else row["result"]


def read_log(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a per-example log (a line cut off by a kill is dropped)."""
    rows = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # the last line was being written when the job died
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


PROGRESS_LOG_SECONDS = 60.0  # without bars: one log line a minute (and at the end)


def _log_progress(n: int, resumed: int, total: int, elapsed: float) -> None:
    rate = (n - resumed) / elapsed if elapsed > 0 else float("nan")
    eta = (total - n) / rate if rate and rate == rate and rate > 0 else float("nan")
    log.info("attack: %d/%d examples (%.0f%%), %.2f s/example, %.0f s elapsed, eta %.0f s",
             n, total, 100 * n / max(1, total), 1 / rate if rate else float("nan"), elapsed,
             eta)  # fmt: skip


def run_attack(
    attack,
    examples: Sequence[Example],
    seed: int,
    log_path: Path | None = None,
    progress: bool = True,
    workers: int = 1,
    indices: Sequence[int] | None = None,
    max_seconds_per_example: float | None = None,
    query_budget: int | None = None,
) -> tuple[AttackSummary, list[dict[str, Any]]]:
    """Attack every example and count the results; (summary, rows in sample order).

    Args:
        attack: a ``textattack.Attack``.
        examples: the fixed attack sample as ``(text, label)``.
        seed: base seed; the example at position ``i`` of the sample is attacked under
            ``seed + i``.
        log_path: the per-example log, appended to and flushed line by line. Rows already in
            it (a job interrupted mid-attack) are kept and their examples not attacked again,
            provided they match the sample (same positions and example indices); otherwise
            the log is started anew.
        progress: show a progress bar.
        workers: processes to split the sample across (1 = in this process).
        indices: the examples' indices in the evaluation split (default: 0..n-1).
        max_seconds_per_example, query_budget: per-example limits (rows say ``limit``).
    """
    start = time.perf_counter()
    indices = list(range(len(examples))) if indices is None else [int(i) for i in indices]
    limits = {"max_seconds": max_seconds_per_example, "query_budget": query_budget}
    done: list[dict[str, Any]] = []
    if log_path is not None:
        done = read_log(log_path)
        expected = [(p, indices[p]) for p in range(min(len(done), len(indices)))]
        if len(done) > len(indices) or [(r.get("position"), r.get("example_index"))
                                          for r in done] != expected:  # fmt: skip
            done = []
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # rewrite what is kept (drops a cut-off last line), then append
        with log_path.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in done)
        if done:
            log.info("attack: resuming after %d of %d examples (%s)", len(done),
                     len(examples), log_path)  # fmt: skip
    jobs = [(p, indices[p], t, int(y)) for p, (t, y) in enumerate(examples)][len(done) :]
    if workers > 1 and len(jobs) > 1:
        it = _rows_parallel(attack, jobs, seed, min(workers, len(jobs)), limits)
    else:
        it = (attack_row(attack, i, t, y, seed, p, **limits) for p, i, t, y in jobs)
    rows = list(done)
    fh = log_path.open("a", encoding="utf-8") if log_path is not None else None
    try:
        last = time.perf_counter()
        for row in tqdm(it, total=len(examples), initial=len(done), desc="attack",
                        disable=not progress):  # fmt: skip
            rows.append(row)
            now = time.perf_counter()
            if not progress and (now - last >= PROGRESS_LOG_SECONDS or len(rows) == len(examples)):
                last = now
                _log_progress(len(rows), len(done), len(examples), now - start)
            if fh is not None:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
    finally:
        if fh is not None:
            fh.close()
    return summarise(rows, time.perf_counter() - start), rows
