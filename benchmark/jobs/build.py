"""From a composed Hydra config to a :class:`~benchmark.jobs.pipeline.Job`, and its execution.

The only module besides ``run.py`` that sees a ``DictConfig``: it instantiates the groups'
``_target_`` objects, computes the run id, and wraps :func:`benchmark.jobs.pipeline.execute`
with skip-if-done, the failed-record path and the W&B mirror.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from benchmark.data.loading import DatasetSpec
from benchmark.errors import UserError
from benchmark.models.loading import ModelSpec, resolve_device
from benchmark.jobs.pipeline import Job, execute, new_record
from benchmark.records.store import (
    RunRecord,
    provenance,
    read_record,
    record_path,
    run_id_of,
    write_record,
)
from benchmark.records.tracking import WandbMirror

log = logging.getLogger("benchmark.run")

NAMED_GROUPS = ("model", "dataset", "dense", "pruner", "attack")
SUMMARY_FIELDS = (
    "dense_acc", "sparsity_actual", "clean_acc", "attack_clean_acc", "aua", "asr",
    "avg_queries", "prune_seconds",
)  # fmt: skip


def build_job(cfg, choices: dict[str, Any]) -> tuple[Job, WandbMirror]:
    """Instantiate everything a job needs from the composed config.

    A failure here (bad value or method config) still leaves a ``failed`` record under the
    job's run id, so a sweep's missing cells are explained.
    """
    from omegaconf import OmegaConf

    names = {g: str(choices.get(g)) for g in NAMED_GROUPS}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    identity = {**resolved, "choices": names}
    run_id = run_id_of(identity)
    try:
        check_budget(cfg, choices)
        return _build(cfg, names, resolved, identity, run_id)
    except Exception as exc:
        _record_build_failure(cfg, names, identity, run_id, exc)
        raise


def check_budget(cfg, choices: dict[str, Any]) -> None:
    """A training-based pruner asked for a non-paper budget it has no file for fails here,
    rather than silently training with the paper's budget."""
    budget = str(choices.get("budget") or "paper")
    if budget == "paper" or choices.get("pruner_budget") is not None:
        return
    if any(str(key).endswith("max_steps") for key in cfg.pruner):  # it trains
        pruner = choices.get("pruner")
        raise UserError(
            f"pruner {pruner!r} has no {budget!r} budget: add "
            f"conf/pruner_budget/{pruner}_{budget}.yaml or use budget=paper"
        )


def _build(cfg, names, resolved, identity, run_id) -> tuple[Job, WandbMirror]:
    from hydra.utils import instantiate

    sparsity = float(cfg.sparsity)
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"sparsity must be in [0, 1), got {cfg.sparsity}")
    objs = {}
    for group in ("pruner", "dense", "attack"):
        try:
            objs[group] = instantiate(cfg[group])
        except Exception as exc:  # unknown or mistyped hyper-parameter in a method config
            cause = exc.__cause__ or exc  # Hydra wraps the constructor's own error
            raise UserError(
                f"invalid {group} config {names[group]!r}: {error_text(cause)}"
            ) from exc
    pruner, dense, attack = objs["pruner"], objs["dense"], objs["attack"]
    job = Job(
        run_id=run_id, exp_name=str(cfg.exp_name), names=names,
        seed=int(cfg.seed), sparsity=sparsity, device=resolve_device(str(cfg.device)),
        model=ModelSpec(**resolved["model"]), dataset=DatasetSpec(**resolved["dataset"]),
        dense=dense, pruner=pruner, attack=attack,
        results_dir=Path(cfg.paths.results_dir), cache_dir=Path(cfg.paths.cache_dir),
        data_dir=cfg.paths.data_dir, nltk_data=cfg.paths.nltk_data,
        eval_batch_size=int(cfg.eval_batch_size), max_eval_examples=cfg.max_eval_examples,
        cache_pruned=bool(cfg.cache_pruned), progress=bool(cfg.progress), cfg=identity,
        prune_key_cfg={"pruner": names["pruner"], "pruner_cfg": resolved["pruner"],
                       "sparsity": sparsity, "seed": int(cfg.seed)},
    )  # fmt: skip
    tracker = WandbMirror(**{k: v for k, v in resolved["logger"].items() if k != "_target_"})
    return job, tracker


def _record_build_failure(cfg, names, identity, run_id: str, exc: Exception) -> None:
    try:
        sparsity = float(cfg.sparsity)
    except (TypeError, ValueError):
        sparsity = float("nan")
    record = RunRecord(
        run_id=run_id, status="failed", error=error_text(exc), exp_name=str(cfg.exp_name),
        model=names["model"], dataset=names["dataset"], pruner=names["pruner"],
        attack=names["attack"], seed=int(cfg.seed), sparsity_target=sparsity, cfg=identity,
        **provenance(),
    )  # fmt: skip
    path = write_record(record, Path(cfg.paths.results_dir))
    log.info("record: %s (failed before the job started)", path)


def error_text(exc: BaseException) -> str:
    """``<type>: <first line of the message>`` as stored in a failed record."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}"


def run_job(job: Job, tracker: WandbMirror, force: bool, skip_existing: bool) -> dict[str, Any]:
    """Run one job unless its record exists; always write a record, always close W&B."""
    path = record_path(job.results_dir, job.exp_name, job.run_id)
    existing = read_record(path)
    if existing and existing.get("status") == "ok" and skip_existing and not force:
        log.info("skip: record %s exists (force=true to rerun)", path)
        log_summary(existing)
        return existing
    from benchmark.attacks.resources import use_nltk_data

    use_nltk_data(job.nltk_data)  # before TextAttack is imported
    record = new_record(job)
    out_dir = path.parent / "wandb"
    tags = [job.names["pruner"], job.names["attack"], job.names["dataset"]]
    tracker.start(job.run_id, job.exp_name, job.cfg, tags, out_dir)
    failed = True
    try:
        execute(job, record)
        failed = False
    except BaseException as exc:
        record.status = "failed"
        record.error = error_text(exc)
        raise
    finally:
        record.wandb_run_id = tracker.run_id
        write_record(record, job.results_dir)
        tracker.log_record(record.to_dict())
        tracker.finish(failed=failed)
        log.info("record: %s (%s)", path, record.status)
    log_summary(record.to_dict())
    return record.to_dict()


def log_summary(rec: dict[str, Any]) -> None:
    """Log a short table of the job's main numbers."""
    title = (f"{rec['model']} / {rec['dataset']} / {rec['pruner']} @ {rec['sparsity_target']}"
             f" / {rec['attack']} / seed {rec['seed']}")  # fmt: skip
    rows = [f"  {k:<18} {_fmt(rec.get(k))}" for k in SUMMARY_FIELDS]
    log.info("summary: %s\n%s", title, "\n".join(rows))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)
