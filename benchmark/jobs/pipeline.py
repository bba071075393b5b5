"""One job: dense model -> prune -> clean accuracy -> attack -> record.

``benchmark.run`` turns the Hydra config into a :class:`Job` (typed objects only) and calls
:func:`execute`; everything here is plain Python, testable without Hydra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmark.attacks.adapter import AttackSpec
from benchmark.attacks.evaluation import constant_clf_aua, evaluate_clean
from benchmark.data.loading import (
    DatasetSpec,
    load_split,
    sample_indices,
    split_warnings,
    stratified_indices,
)
from benchmark.jobs.latency import inference_ms
from benchmark.jobs.profiling import intra_op_threads, measure, pruning_threads
from benchmark.jobs.seeding import seed_everything
from benchmark.models.loading import ModelSpec
from benchmark.pruners.base import PruneData, Pruner, apply_masks, check_sparsity, measure_sparsity
from benchmark.records.identity import code_hash
from benchmark.records.store import RunRecord, provenance, short_hash, write_json_atomic
from benchmark.training.dense import DenseRecipe, get_dense, load_pretrained
from benchmark.training.loop import set_progress

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything one job needs, as typed objects (built from the config by ``benchmark.run``)."""

    run_id: str
    exp_name: str
    names: dict[str, str]  # config group -> chosen option (model, dataset, pruner, attack, dense)
    seed: int
    sparsity: float
    device: torch.device
    model: ModelSpec
    dataset: DatasetSpec
    dense: DenseRecipe
    pruner: Pruner
    attack: AttackSpec
    results_dir: Path
    cache_dir: Path
    data_dir: str | None = None
    nltk_data: str | None = None
    eval_batch_size: int = 64
    max_eval_examples: int | None = None
    eval_sample: int | None = None  # a seeded, label-stratified sample of the evaluation split
    eval_sample_seed: int = 0
    precision: str = "float32"  # forward passes of clean evaluation and attacks
    calibration: dict[str, Any] | None = None  # another task's dataset config calibrates
    dense_noise: dict[str, Any] | None = None  # {scale, seed}: the dense weights perturbed
    model_label: str | None = None  # the record's ``model``: which weights ran
    cache_pruned: bool = True
    progress: bool = True
    cfg: dict[str, Any] = field(default_factory=dict)
    prune_key_cfg: dict[str, Any] = field(default_factory=dict)


def new_record(job: Job) -> RunRecord:
    """A record with the job's identity and provenance filled in (status ``running``)."""
    from benchmark.attacks.recipes import threat_model

    return RunRecord(
        run_id=job.run_id, status="running", exp_name=job.exp_name,
        model=job.model_label or job.names["model"], dataset=job.names["dataset"],
        pruner=job.names["pruner"],
        attack=job.names["attack"], seed=job.seed, sparsity_target=job.sparsity,
        dense_seed=(job.cfg.get("dense") or {}).get("seed"),
        pruner_version=getattr(job.pruner, "version", None), attack_version=job.attack.version,
        split=job.dataset.eval_split, scope=getattr(job.pruner, "scope", None),
        device=_device_name(job.device), cfg=job.cfg, precision=job.precision,
        threat_model=threat_model(job.cfg.get("attack") or {}),
        sources={"model": job.cfg.get("sources"), "data": job.cfg.get("data_source"),
                 "calibration": job.cfg.get("calibration_source")},
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), **provenance(),
    )  # fmt: skip


@contextlib.contextmanager
def stage(name: str):
    """One log line when a stage of the job starts and one when it ends, with its duration."""
    log.info("stage %s: started", name)
    start = time.perf_counter()
    yield
    log.info("stage %s: done in %.1f s", name, time.perf_counter() - start)


def execute(job: Job, record: RunRecord) -> RunRecord:
    """Run the job, filling ``record`` in place; returns it with status ``ok``."""
    start = time.perf_counter()
    seed_everything(job.seed)
    set_progress(show_bars(job.progress))
    check_sparsity(job.sparsity)
    evals, eval_index = evaluation_examples(job, record)
    if job.attack.recipe == "transfer":  # its source log must exist before any work
        from benchmark.attacks.transfer import source_rows

        source_rows(job.attack.options.get("source"))
    elif job.attack.enabled:  # fail on a missing resource before any expensive work
        job.attack.check_resources(_attack_resources(job), job.names["attack"])
    train = load_split(job.dataset, job.dataset.train_split, job.data_dir)
    record.warnings += split_warnings(train, job.dataset, job.dataset.train_split)
    with stage("dense model"):
        model, tok, dense_info = get_dense(
            job.model, job.dataset, job.dense, job.data_dir, job.cache_dir, job.device,
            holdout=getattr(job.pruner, "dense_holdout", None),
            data=job.cfg.get("data_source"),
        )  # fmt: skip
    _sources_after_load(job, record)
    if job.dense_noise is not None:  # the noise floor (benchmark/models/noise.py)
        from benchmark.models.noise import perturb_weights

        dense_info["noise"] = perturb_weights(model, **job.dense_noise)
        log.info("dense weights x (1 + %g e), seed %d: largest relative change %.2e",
                 job.dense_noise["scale"], job.dense_noise["seed"],
                 dense_info["noise"]["max_rel_change"])  # fmt: skip
    record.dense_acc = dense_info.get("dense_acc")
    record.dense_info = dense_info
    batch = latency_batch(tok, evals, job.dataset.max_length, job.device)
    dense_cost = inference_ms(model, batch, job.device)
    with stage(f"pruning ({job.names['pruner']} @ {job.sparsity})"):
        _prune(job, model, tok, record, train)
    pruned_cost = inference_ms(model, batch, job.device)
    record.inference_ms = pruned_cost["median_ms"]
    record.inference_ms_dense = dense_cost["median_ms"]
    if record.params_removed:  # structured: the latency columns of a physically smaller model
        record.latency_ms_pruned, record.latency_ms_dense = (
            record.inference_ms,
            record.inference_ms_dense,
        )
    record.inference = {
        "pruned": pruned_cost, "dense": dense_cost,
        "batch": f"first {batch['input_ids'].shape[0]} examples of {job.dataset.eval_split}, "
                 "padded to the longest",
        # masks are applied by zeroing dense weights: no sparse kernel ran
        "sparse_kernel": None, "semi_structured_speedup_measured": False,
    }  # fmt: skip
    with stage(f"clean accuracy ({len(evals)} examples)"):
        clean = _clean_eval(job, model, tok, evals, record)
    for key, value in clean.fields().items():
        setattr(record, key, value)
    log.info("clean accuracy %.4f on %d examples (most predicted class: %.1f%%)",
             record.clean_acc, len(evals), 100 * record.pred_majority_share)  # fmt: skip
    if job.attack.enabled:
        with stage(f"attack ({job.names['attack']})"):
            _attack(job, model, tok, evals, record, eval_index, train)
    record.duration_s = time.perf_counter() - start
    record.status = "ok"
    return record


def clean_cache_file(job: Job, record: RunRecord, evals) -> Path:
    """Where the clean predictions of this job's pruned model on ``evals`` are cached: in its
    pruned-weights entry, named by everything they depend on (the texts and labels in order,
    max length, precision, batch size, device type, CPU thread count and the evaluation
    code)."""
    import hashlib

    texts = hashlib.sha256()
    for text, label in evals:
        texts.update(f"{label}\t{text}\n".encode())
    key = short_hash({
        "examples": texts.hexdigest(), "max_length": job.dataset.max_length,
        "precision": job.precision, "batch_size": job.eval_batch_size,
        "device": job.device.type, "code": code_hash("benchmark.attacks.evaluation.evaluate_clean"),
        # CPU reductions split by thread count can move a near-tie (docs/statistics.md)
        "threads": torch.get_num_threads() if job.device.type == "cpu" else None,
    })  # fmt: skip
    return job.cache_dir / "pruned" / record.prune_info["key"] / f"clean-{key}.npz"


def _clean_eval(job: Job, model, tok, evals, record: RunRecord):
    """Clean predictions on ``evals``: computed, or read from the pruned model's cache entry
    when another job (e.g. the same model's other attack) computed them on the same texts.
    The forward passes are deterministic for a given model, batch order and device, so the
    numbers are the ones this job would compute; the record names the entry it read."""
    import numpy as np

    from benchmark.attacks.evaluation import CleanEval

    path = clean_cache_file(job, record, evals) if job.cache_pruned else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                clean = CleanEval(labels=z["labels"], probs=z["probs"])
            if len(clean.labels) == len(evals):
                record.clean_from_cache = str(path.relative_to(job.cache_dir))
                log.info("clean predictions from cache %s", path)
                return clean
        except Exception as exc:  # truncated by a kill, corrupt: compute again
            log.warning("clean cache %s is unreadable (%s); evaluating again", path, exc)
    clean = evaluate_clean(model, tok, evals, job.dataset.max_length, job.device,
                           job.eval_batch_size, job.precision)  # fmt: skip
    if path is not None and path.parent.is_dir():  # only beside a stored pruned entry
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        try:
            np.savez(tmp, labels=clean.labels, probs=clean.probs)
            tmp.replace(path)
        except OSError as exc:  # a full disk costs the next job an evaluation, not this job
            log.warning("clean predictions not cached (%s)", exc)
        finally:
            tmp.unlink(missing_ok=True)
    return clean


def _sources_after_load(job: Job, record: RunRecord) -> None:
    """Name in the record the commits the cache resolves now that the model is loaded. A Hub
    repository that was not in the local cache when the job was identified was downloaded by
    the load: its commit joins the record (``sources.model_loaded``) with a warning, since the
    run id was computed without it (the next identical command resolves it from the cache and
    gets another run id: ``--plan`` lists such repositories beforehand)."""
    from benchmark.records.identity import model_sources, unresolved

    before = job.cfg.get("sources") or {}
    if not unresolved(before):
        return
    now = model_sources(job.cfg.get("model") or {})
    record.sources["model_loaded"] = now
    record.warnings.append(
        "run id computed before the download of "
        + ", ".join(unresolved(before))
        + "; the record names the commits loaded (sources.model_loaded)"
    )


def show_bars(progress: bool) -> bool:
    """Progress bars only on a terminal: under ``nohup``, Slurm or CI (stderr not a TTY) the
    loops write a periodic log line instead of hundreds of carriage-return updates."""
    import sys

    return bool(progress) and sys.stderr.isatty()


def evaluation_examples(job: Job, record: RunRecord) -> tuple[list, list[int]]:
    """The evaluation examples of a job and their indices in the split: the whole split, or a
    seeded label-stratified sample of it (``eval_sample``), then the first
    ``max_eval_examples``."""
    evals = load_split(job.dataset, job.dataset.eval_split, job.data_dir)
    record.warnings += split_warnings(evals, job.dataset, job.dataset.eval_split)
    index = list(range(len(evals)))
    if job.eval_sample:
        index = stratified_indices([y for _, y in evals], job.eval_sample, job.eval_sample_seed)
        evals = [evals[i] for i in index]
    if job.max_eval_examples:
        evals, index = evals[: job.max_eval_examples], index[: job.max_eval_examples]
        if len({y for _, y in evals}) == 1 and job.dataset.num_labels > 1:
            record.warnings.append(
                f"max_eval_examples={job.max_eval_examples} keeps one class only (the split is "
                "sorted by label?); use eval_sample=N for a label-stratified sample"
            )
    return evals, index


LATENCY_BATCH = 32


def prune_model(pruner, model, data: PruneData, sparsity: float, device) -> tuple[Any, int]:
    """Prune ``model`` in place and make the masks permanent; (cost, intra-op threads used).

    On CPU the pruner runs with single-threaded kernels (:func:`pruning_threads`), so its
    result does not depend on the thread count of the job.
    """
    threads = pruning_threads(device)
    with (
        measure(device) as cost,
        intra_op_threads(threads) if threads else contextlib.nullcontext(),
    ):
        masks = pruner.prune(model, data, sparsity)
        apply_masks(model, masks, permanent=True)
    return cost, threads or torch.get_num_threads()


def latency_batch(tok, evals, max_length: int, device) -> dict[str, torch.Tensor]:
    """The fixed batch of the cost figure: the first examples of the evaluation split."""
    texts = [t for t, _ in evals[:LATENCY_BATCH]]
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def calibration_split(job: Job, train):
    """The sentences a pruner calibrates on (and a training-based pruner trains on): the task's
    training split, or another task's (``pruner.calibration=sst2``), checked the same way."""
    if job.calibration is None:
        return train
    spec = DatasetSpec(**job.calibration)
    rows = load_split(spec, spec.train_split, job.data_dir)
    log.info("calibration on %s's %s split (%d sentences; pruner.calibration)", spec.name,
             spec.train_split, len(rows))  # fmt: skip
    return rows


def _prune(job: Job, model, tok, record: RunRecord, train) -> None:
    """Prune ``model`` in place (or load the cached pruned weights) and record the cost.

    ``train`` is the task's training split, already checked (classes against ``num_labels``)
    for a cache hit as for a fresh prune."""
    key = short_hash(
        {"dense": record.dense_info.get("key"), **job.prune_key_cfg,
         "base": job.cfg.get("pruner_base"),
         "code": code_hash(job.cfg.get("pruner", {}).get("_target_"))}
    )  # fmt: skip
    folder = job.cache_dir / "pruned" / key
    clean_stale_temp(folder.parent)
    info = _load_pruned(folder, model, job.device) if job.cache_pruned else None
    if info is not None:
        log.info("pruned weights from cache %s (pruning took %.1f s)", folder, info["seconds"])
    else:
        data = PruneData(
            tokenizer=tok, train=calibration_split(job, train),
            max_length=job.dataset.max_length, device=job.device, seed=job.seed,
            pretrained=lambda: load_pretrained(job.model, job.dataset, job.cache_dir / "tmp")[0],
            cache_dir=job.cache_dir / "method" / key,
        )  # fmt: skip
        cost, threads = prune_model(job.pruner, model, data, job.sparsity, job.device)
        info = {
            "seconds": cost.seconds, "peak_mem_mb": cost.peak_mem_mb,
            "memory_kind": cost.memory_kind, "method": getattr(job.pruner, "info", {}),
            "intra_op_threads": threads,
            "cached": False,
        }  # fmt: skip
        # a physically smaller model (structured pruning) is stored as it is; its removal is
        # replayed on the dense copy before the weights load (:func:`_load_pruned`)
        if job.cache_pruned:
            _store_pruned(folder, model, info)
    model.eval()
    record.prune_seconds = info["seconds"]
    record.prune_peak_mem_mb = info["peak_mem_mb"]
    record.prune_info = {**info, "key": key}  # the pruned-weights cache entry: pruned/<key>
    method = info.get("method") or {}
    if method.get("prunable_params_before"):  # heads and neurons removed, not zeroed
        record.sparsity_actual = (
            method["prunable_params_removed"] / method["prunable_params_before"]
        )
        record.params_removed = method.get("params_removed")
    else:
        record.sparsity_actual = measure_sparsity(model, record.scope or "encoder_linear")
    log.info(
        "pruned with %s: target %.4f, actual %.4f, %.2f s, peak +%.0f MiB",
        job.names["pruner"], job.sparsity, record.sparsity_actual, info["seconds"],
        info["peak_mem_mb"],
    )  # fmt: skip


def _load_pruned(folder: Path, model, device) -> dict[str, Any] | None:
    """A pruned-cache entry loaded into ``model``, or None when there is none. An entry that
    cannot be read (truncated by a kill, corrupt) is named in the log, removed and rebuilt."""
    if not (folder / "info.json").is_file():
        return None
    try:
        info = json.loads((folder / "info.json").read_text())
        state = torch.load(folder / "weights.pt", map_location=device)
        method = info.get("method") or {}
        if method.get("params_removed") and method.get("heads_removed") is not None:
            # heads and neurons removed: replay the removal, on a copy first so that an entry
            # that does not fit leaves the dense model as it was (it is then pruned again)
            import copy

            from benchmark.pruners.structured import replay_removal

            replay_removal(copy.deepcopy(model), method).load_state_dict(state)
            replay_removal(model, method)
        model.load_state_dict(state)
    except Exception as exc:  # truncated file, bad pickle, wrong shapes
        log.warning(
            "pruned cache %s is unreadable (%s: %s); pruning again",
            folder,
            type(exc).__name__,
            str(exc).splitlines()[0][:120] if str(exc) else "",
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None
    info["cached"] = True
    return info


def clean_stale_temp(cache: Path) -> list[Path]:
    """Remove the temporary folders of pruned-cache writes whose process is gone (a kill
    during the write left them); a live process's folder is left alone. Returns what went."""
    import re

    gone = []
    for tmp in cache.glob(".*.tmp*"):
        m = re.search(r"\.tmp(\d+)-\d+$", tmp.name)
        if not m or not tmp.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # the writing process is alive
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        gone.append(tmp)
    if gone:
        log.info("removed %d stale temporary pruned-cache folder(s) in %s", len(gone), cache)
    return gone


def _store_pruned(folder: Path, model, info: dict[str, Any]) -> None:
    """Write a pruned-cache entry under a unique temp name, then rename it into place.

    Concurrent jobs with the same key (joblib, Slurm arrays) each write their own temp folder;
    the first rename wins, a later one fails (the target exists and is not empty) and that
    job's copy is dropped. The temp folder is always removed, also when writing fails.
    """
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}-{time.time_ns()}")
    try:
        tmp.mkdir(parents=True)
        torch.save(model.state_dict(), tmp / "weights.pt")
        write_json_atomic(tmp / "info.json", info)
        try:
            tmp.rename(folder)
        except OSError:  # another job stored the same key first: keep its entry
            log.debug("pruned cache %s already written by another job", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TITLE_WORDS = 20  # longest leading part (a title) the suffix rule of a duplicate strips
SUFFIX_MIN_WORDS = 8  # shortest training text the suffix rule matches (SST-2 phrases: <= 5)


def cross_split_duplicates(evals, train) -> list[int]:
    """Positions in ``evals`` whose text also occurs in the training split: verbatim, or as a
    training text of at least ``SUFFIX_MIN_WORDS`` words that it ends with after at most
    ``TITLE_WORDS`` leading words (an AG News test text is title + " " + description, the
    mirror's training texts descriptions only; SST-2's training phrases, at most 5 words at
    the end of a validation sentence, do not count). They are left out of the attacked sample:
    a text the model (or a calibration) may have seen is no test of robustness."""
    seen = {" ".join(t.split()) for t, _ in train}
    out = []
    for pos, (text, _) in enumerate(evals):
        words = text.split()
        if " ".join(words) in seen or any(
            " ".join(words[k:]) in seen
            for k in range(1, min(TITLE_WORDS, len(words) - SUFFIX_MIN_WORDS) + 1)
        ):
            out.append(pos)
    return out


def attack_positions(n: int, k: int, seed: int, excluded: list[int]) -> list[int]:
    """The seeded attack sample over ``n`` evaluation examples without the ``excluded``
    positions; with none excluded exactly :func:`sample_indices` (``n``, ``k``, ``seed``)."""
    skip = set(excluded)
    eligible = [i for i in range(n) if i not in skip]
    return [eligible[j] for j in sample_indices(len(eligible), k, seed)]


def _attack(job: Job, model, tok, evals, record: RunRecord, eval_index: list[int],
            train=()) -> None:  # fmt: skip
    """Attack the fixed seeded sample and put the counts and metrics into the record.

    The log's ``example_index`` is the example's index in the evaluation split (through
    ``eval_index`` when the job evaluates a sample of it). Evaluation texts that also occur in
    the training split are left out of the sample (``attack_excluded`` in the record)."""
    from benchmark.attacks.adapter import PaddedModelWrapper, build_attack, run_attack
    from benchmark.attacks.external import resources_kind

    if job.attack.recipe == "transfer":
        _transfer(job, model, tok, record)
        return
    dups = cross_split_duplicates(evals, train)
    if dups:
        record.attack_excluded = {"reason": "text also in the training split",
                                  "example_index": [eval_index[p] for p in dups]}  # fmt: skip
        log.info("attack sample: %d evaluation texts that also occur in the training split "
                 "left out", len(dups))  # fmt: skip
    idx = attack_positions(len(evals), job.attack.num_examples, job.attack.seed, dups)
    sample = [evals[i] for i in idx]
    wrapper = PaddedModelWrapper(
        model, tok, job.dataset.max_length, job.attack.batch_size, precision=job.precision
    )
    resources = _attack_resources(job)
    attack = build_attack(job.attack, wrapper, resources)
    record.cfg["attack_build"] = attack.build_info  # resolved choices (not part of the run id)
    record.sources["attack_resources"] = resource_fingerprints(job.attack, resources)
    if record.sources["attack_resources"]:
        record.sources["resources"] = resources_kind(record.sources["attack_resources"])
    summary, rows = run_attack(
        attack, sample, job.attack.seed, partial_log_path(job), show_bars(job.progress),
        workers=job.attack.workers, indices=[eval_index[i] for i in idx],
        max_seconds_per_example=job.attack.max_seconds_per_example,
        query_budget=job.attack.query_budget,
    )  # fmt: skip
    for key, value in summary.metrics().items():
        if key == "seconds":
            record.attack_seconds = value
        else:
            setattr(record, key, value)
    if job.attack.recipe == "cascade":
        from benchmark.attacks.cascade import step_summary

        record.cascade = step_summary(rows, [s.recipe for s in job.attack.steps()])
    record.constant_clf_aua = constant_clf_aua([y for _, y in sample], record.pred_majority_label)
    log.info(
        "attack %s on %d examples: clean %.3f, aua %.3f, asr %.3f, %.1f queries, %.0f s",
        job.names["attack"], summary.n_total, summary.attack_clean_acc, summary.aua,
        summary.asr, summary.avg_queries, summary.seconds,
    )  # fmt: skip


def _transfer(job: Job, model, tok, record: RunRecord) -> None:
    """Replay the source log's adversarial texts (``attack=transfer``) and record the counts."""
    from benchmark.attacks.adapter import summarise
    from benchmark.attacks.transfer import replay, source_rows

    start = time.perf_counter()
    rows = replay(model, tok, source_rows(job.attack.options.get("source")),
                  job.dataset.max_length, job.device, job.attack.batch_size)  # fmt: skip
    path = partial_log_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = summarise(rows, time.perf_counter() - start)
    for key, value in summary.metrics().items():
        setattr(record, "attack_seconds" if key == "seconds" else key, value)
    record.cfg["attack_build"] = {"recipe": "transfer", "source": str(job.attack.options["source"])}
    log.info("transfer: %d adversarial texts of the source replayed, %.1f%% survived",
             summary.n_total, 100 * summary.aua)  # fmt: skip


def log_path(job: Job) -> Path:
    """The per-example attack log of a finished job (beside its record), gzip-compressed."""
    from benchmark.records.logs import log_path as path_of

    return path_of(job.results_dir / "runs" / job.exp_name, job.run_id)


def partial_log_path(job: Job) -> Path:
    """The log of a job in progress: renamed to :func:`log_path` when the job ends ``ok``, so
    a finished record and its log are always replaced together (a failed rerun leaves both)."""
    return job.results_dir / "runs" / job.exp_name / f"{job.run_id}.attack.partial.jsonl"


def resource_fingerprints(spec, resources) -> dict[str, Any]:
    """What the attack's external resources were: per kind the folder or file read (the
    library's own location where no key names one), its content fingerprint and the metadata
    it carries; a Hub masked LM by its commit (``external.describe_resources``)."""
    from benchmark.attacks.external import describe_resources
    from benchmark.attacks.recipes import recipe_def

    steps = spec.steps()  # a cascade: every kind any of its recipes needs, once
    kinds = list(dict.fromkeys(k for step in steps
                               for k in recipe_def(step.recipe).external(dict(step.options),
                                                                         resources)))  # fmt: skip
    return describe_resources(kinds, resources)


def _attack_resources(job: Job):
    """The attack's resource paths: the ``paths`` group of the job's config."""
    from benchmark.attacks.external import AttackResources

    return AttackResources.from_paths({**job.cfg.get("paths", {}), "nltk_data": job.nltk_data})


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"
