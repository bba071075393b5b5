"""From a composed Hydra config to a :class:`~benchmark.jobs.pipeline.Job`, and its execution.

The only module besides ``run.py`` that sees a ``DictConfig``: it instantiates the groups'
``_target_`` objects, computes the run id, and wraps :func:`benchmark.jobs.pipeline.execute`
with skip-if-done, the failed-record path and the W&B mirror.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.data.loading import DatasetSpec
from benchmark.errors import SIGNALS_SEEN, JobTerminated, UserError, note_signal  # noqa: F401
from benchmark.jobs.pipeline import Job, execute, new_record
from benchmark.jobs.validate import validate
from benchmark.models.loading import ModelSpec, resolve_device
from benchmark.records.identity import data_source, model_sources, normalise
from benchmark.records.store import (
    CorruptRecord,
    RunRecord,
    failed_path,
    missing_keys,
    provenance,
    read_record,
    record_path,
    run_id_of,
    staged_json,
    without_nested_non_identity,
    write_json_atomic,
)
from benchmark.records.tracking import WandbMirror, default_mode, job_type_of

log = logging.getLogger("benchmark.run")

NAMED_GROUPS = ("model", "dataset", "dense", "pruner", "attack")
SUMMARY_FIELDS = (
    "dense_acc", "sparsity_actual", "clean_acc", "attack_clean_acc", "aua", "asr",
    "avg_queries", "prune_seconds",
)  # fmt: skip


@dataclass
class Identity:
    """A composed config's job identity: option names, resolved values, run id, record path."""

    names: dict[str, str]
    resolved: dict[str, Any]
    identity: dict[str, Any]
    run_id: str
    path: Path


def job_identity(cfg, choices: dict[str, Any]) -> Identity:
    """Validate the composed config (one line per problem) and compute its run identity.

    The identity is the resolved config (normalised, see :mod:`benchmark.records.identity`),
    the chosen option names and the data source (content fingerprint of local files, or the
    Hub name and revision); :func:`run_id_of` drops the keys that do not change results.
    """
    from omegaconf import OmegaConf

    names = {g: str(choices.get(g)) for g in NAMED_GROUPS}
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # a bad interpolation
        raise UserError(f"config cannot be resolved: {error_text(exc)}") from exc
    resolved = normalise(resolved)
    validate(resolved, names)
    from benchmark.models.precision import check_precision

    precision = str(resolved.get("precision", "float32"))
    if precision != "float32":  # what the device cannot run fails before any record
        check_precision(precision, resolve_device(str(cfg.device)))
    paths = resolved.get("paths") or {}
    identity = {
        **resolved, "choices": names,
        "data_source": data_source(resolved["dataset"], paths.get("data_dir")),
        "sources": model_sources(resolved["model"]),
    }  # fmt: skip
    base = _base_pruner_config(resolved.get("pruner") or {}, resolved.get("protocol"))
    if base is not None:  # a wrapper's base (OWL, DSnoT) is part of what it computes
        identity["pruner_base"] = base
    identity.update(attack_identity(resolved.get("attack") or {}))
    calibration = calibration_dataset(resolved)
    if calibration is not None:  # another task's training split calibrates the pruner
        identity["calibration_source"] = data_source(calibration, paths.get("data_dir"))
    run_id = run_id_of(identity)
    path = record_path(Path(paths["results_dir"]), str(resolved["exp_name"]), run_id)
    return Identity(names, resolved, identity, run_id, path)


def attack_identity(attack: dict[str, Any]) -> dict[str, Any]:
    """The attack's parts of a job's identity: the hash of its threat model (declared settings
    and TextAttack version, :func:`benchmark.attacks.recipes.threat_model`) and, for a transfer
    job, its source's run id and log content (not the log's path)."""
    from benchmark.attacks.recipes import threat_model

    out: dict[str, Any] = {}
    block = threat_model(attack)
    if block is not None:
        out["threat_model"] = block["hash"]
    if attack.get("recipe") == "transfer":
        from benchmark.attacks.transfer import source_identity

        out["transfer_source"] = source_identity((attack.get("options") or {}).get("source"))
    return out


def calibration_dataset(resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved dataset config whose training split calibrates the pruner when it is not
    the task's own (``pruner.calibration=sst2`` on another task); None otherwise."""
    from omegaconf import OmegaConf

    from benchmark.jobs.registry import CONF_DIR

    source = (resolved.get("pruner") or {}).get("calibration", "task")
    if source == "task" or source == (resolved.get("dataset") or {}).get("name"):
        return None
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{source}.yaml"))


def weights_label(option: str, resolved: dict[str, Any]) -> str:
    """The record's ``model``: the option's name when the weights are the option's own, else
    ``<option>:<source>`` (the ``finetuned`` checkpoint, else the ``pretrained`` source, that
    the config put in their place)."""
    from omegaconf import OmegaConf

    from benchmark.jobs.registry import CONF_DIR

    model = resolved.get("model") or {}
    path = CONF_DIR / "model" / f"{option}.yaml"
    if not path.is_file():  # a user's own option: its name is all there is
        return option
    own = OmegaConf.create({"dataset": resolved.get("dataset") or {},
                            "model": OmegaConf.load(path)})  # fmt: skip
    own_model = OmegaConf.to_container(own, resolve=True)["model"]
    keys = ("pretrained", "finetuned", "revision")
    if all(model.get(k) == own_model.get(k) for k in keys):
        return option
    return f"{option}:{model.get('finetuned') or model.get('pretrained')}"


def _base_pruner_config(
    pruner: dict[str, Any], protocol: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The resolved config of a wrapper pruner's base (``base: <conf/pruner name>`` plus
    ``base_overrides``), so that a change of the base's config re-keys the wrapper's jobs.
    The base file is resolved beside the job's ``protocol``, as ``pruner=<base>`` would be in
    the same preset (e.g. ``akr``'s ``obs_impl`` reads ``protocol.akr_obs_impl``)."""
    from omegaconf import OmegaConf

    from benchmark.jobs.registry import CONF_DIR

    name = pruner.get("base")
    if not isinstance(name, str) or not (CONF_DIR / "pruner" / f"{name}.yaml").is_file():
        return None
    cfg = OmegaConf.merge(
        OmegaConf.load(CONF_DIR / "pruner" / f"{name}.yaml"), pruner.get("base_overrides") or {}
    )
    root = OmegaConf.create({"protocol": protocol or {}, "pruner": cfg})
    return {"name": name, **OmegaConf.to_container(root.pruner, resolve=True)}


def _base_from_protocol(resolved: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    """The keys of a wrapper's base that the preset's ``protocol`` set (they differ from the
    base file resolved alone): handed to the wrapper as ``base_overrides``, so that the base
    that runs is the one in the run identity (``pruner_base``)."""
    base = identity.get("pruner_base")
    if not base:
        return {}
    alone = _base_pruner_config(resolved["pruner"]) or {}
    return {k: v for k, v in base.items() if k != "name" and alone.get(k) != v}


def existing_record(ident: Identity, force: bool) -> dict[str, Any] | None:
    """The job's record if one exists. A corrupt one is an error naming the file, unless
    ``force`` (then it is rebuilt)."""
    try:
        rec = read_record(ident.path)
    except CorruptRecord as exc:
        if not force:
            raise UserError(f"{exc}; rerun with force=true to rebuild it") from exc
        log.warning("%s; rebuilding it (force=true)", exc)
        return None
    missing = missing_keys(rec) if rec is not None else []
    if missing:  # a hand edit or partial copy: still the job's record, named once
        log.warning("record %s lacks key(s) %s (hand-edited?); force=true rebuilds it",
                    ident.path, ", ".join(missing))  # fmt: skip
    return rec


@contextlib.contextmanager
def job_lock(record: Path) -> Iterator[None]:
    """Hold a lock while one run id runs (``.<run_id>.lock`` beside its record), so that two
    identical jobs started together (two sweeps, a Slurm array run twice) never write one log
    at once: the second waits for the first, then finds its record and skips. The lock of a
    killed job is free again (``fcntl`` locks end with their process)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(record.with_name(f".{record.stem}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting: the same job (%s) is running in another process", record.stem)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def check_writable(folder: Path, key: str = "paths.results_dir") -> None:
    """Fail before any work when ``folder`` (records, or the caches: ``key``) cannot be
    written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(
            f"cannot write under {folder} ({exc.strerror or exc}); set {key} to a writable folder"
        ) from exc


def build_job(cfg, choices: dict[str, Any], ident: Identity | None = None,
              protect: bool = False) -> tuple[Job, WandbMirror]:  # fmt: skip
    """Instantiate everything a job needs from the composed config.

    A failure here (bad value or method config) still leaves a ``failed`` record under the
    job's run id, so a sweep's missing cells are explained; with ``protect`` (an ``ok`` record
    exists: a forced rerun) it goes beside it as ``<run_id>.failed.json``.
    """
    ident = ident or job_identity(cfg, choices)
    try:
        check_budget(cfg, choices)
        return _build(cfg, ident.names, ident.resolved, ident.identity, ident.run_id)
    except Exception as exc:
        _record_build_failure(cfg, ident, exc, protect)
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
    from omegaconf import OmegaConf

    from benchmark.jobs.registry import method_config

    device = resolve_device(str(cfg.device))
    objs = {}
    for group in ("pruner", "dense", "attack"):
        # the resolved values, without the keys the class never sees (pruner.calibration)
        values = resolved[group]
        extra = _base_from_protocol(resolved, identity) if group == "pruner" else {}
        if extra:  # not in the run identity as such: pruner_base already holds these values
            values = {**values, "base_overrides": {**(values.get("base_overrides") or {}), **extra}}
        node = method_config(group, OmegaConf.create(values))
        try:
            objs[group] = instantiate(node)
        except Exception as exc:  # unknown or mistyped hyper-parameter in a method config
            cause = exc.__cause__ or exc  # Hydra wraps the constructor's own error
            raise UserError(
                f"invalid {group} config {names[group]!r}: {error_text(cause)}"
            ) from exc
    pruner, dense, attack = objs["pruner"], objs["dense"], objs["attack"]
    check_max_length(resolved["model"], resolved["dataset"])
    job = Job(
        run_id=run_id, exp_name=str(cfg.exp_name), names=names,
        seed=int(cfg.seed), sparsity=sparsity, device=device,
        model=ModelSpec(**resolved["model"]), dataset=DatasetSpec(**resolved["dataset"]),
        dense=dense, pruner=pruner, attack=attack,
        results_dir=Path(cfg.paths.results_dir), cache_dir=Path(cfg.paths.cache_dir),
        data_dir=cfg.paths.data_dir, nltk_data=cfg.paths.nltk_data,
        eval_batch_size=int(cfg.eval_batch_size), max_eval_examples=cfg.max_eval_examples,
        eval_sample=resolved.get("eval_sample"), eval_sample_seed=int(resolved.get(
            "eval_sample_seed", 0)), precision=str(resolved.get("precision", "float32")),
        calibration=calibration_dataset(resolved), dense_noise=resolved.get("dense_noise"),
        cache_pruned=bool(cfg.cache_pruned), progress=bool(cfg.progress), cfg=identity,
        model_label=weights_label(names["model"], resolved),
        prune_key_cfg={"pruner": names["pruner"],
                       "pruner_cfg": without_nested_non_identity(resolved)["pruner"],
                       "sparsity": sparsity, "seed": int(cfg.seed),
                       "calibration_source": identity.get("calibration_source"),
                       # only when set, so the keys of unperturbed prunes stay what they were
                       **({"dense_noise": resolved["dense_noise"]}
                          if resolved.get("dense_noise") else {})},
    )  # fmt: skip
    logger = resolved["logger"]
    if logger.get("enabled") and not logger.get("mode"):  # the record says which mode ran
        logger["mode"] = default_mode()
    tracker = WandbMirror(**{k: v for k, v in logger.items() if k != "_target_"})
    return job, tracker


def position_limit(model: dict[str, Any]) -> int | None:
    """The longest input the model option's encoder takes (None when its config cannot be
    read here; loading it then says why). Read from the config alone: no weights load."""
    from benchmark.jobs.validate import model_config
    from benchmark.models.loading import is_tiny

    source = model.get("finetuned") or model.get("pretrained")
    if not source:
        return None
    if is_tiny(str(source)):
        return 128  # benchmark.models.loading._tiny_config: 128 positions for every family
    config = model_config(model)
    if config is None:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after the padding index
    return int(limit)


def check_max_length(model: dict[str, Any], dataset: dict[str, Any]) -> None:
    """``dataset.max_length`` must fit the model's positions (one line, before any work)."""
    limit = position_limit(model)
    if limit is not None and int(dataset.get("max_length", 0)) > limit:
        raise UserError(
            f"dataset.max_length={dataset['max_length']} exceeds the {limit} positions of "
            f"model {model.get('name')!r}; set dataset.max_length <= {limit}"
        )


def _record_build_failure(cfg, ident: Identity, exc: Exception, protect: bool) -> None:
    names = ident.names
    record = RunRecord(
        run_id=ident.run_id, status="failed", error=error_text(exc),
        exp_name=str(cfg.exp_name), model=names["model"], dataset=names["dataset"],
        pruner=names["pruner"], attack=names["attack"], seed=int(cfg.seed),
        sparsity_target=float(cfg.sparsity), cfg=ident.identity, **provenance(),
    )  # fmt: skip
    path = failed_path(ident.path) if protect else ident.path
    if write_failed_record(record, path, ident.path if protect else None):
        log.info("record: %s (failed before the job started)", path)


def write_failed_record(record: RunRecord, path: Path, ok_record: Path | None) -> bool:
    """Write a failed record; False when it cannot be written (a full disk, a folder gone).
    Then one line says so and which ``ok`` record stays as it was, and the job's own error
    goes on to the caller: the write's error never takes its place."""
    try:
        write_json_atomic(path, record.to_dict())
        return True
    except OSError as exc:
        kept = f"; the ok record {ok_record} is unchanged" if ok_record else ""
        log.error("error: could not write the failed record %s (%s)%s", path,
                  exc.strerror or exc, kept)  # fmt: skip
        return False


def _write_finished(job: Job, record: RunRecord, path: Path) -> None:
    """Put a finished job's attack log and ``ok`` record into place together: the record is
    staged first, so a full disk leaves the old record and log (a forced rerun's) as they
    were. Raises :class:`UserError` naming what could not be written."""
    from benchmark.jobs.pipeline import partial_log_path
    from benchmark.records.logs import finish_log, remove_logs

    try:
        with staged_json(path, record.to_dict()):
            partial = partial_log_path(job)
            if partial.exists():  # compressed into place just before the record
                finish_log(partial, path.parent, job.run_id)
            elif job.attack.enabled is False:
                remove_logs(path.parent, job.run_id)  # an old log of a rerun without attack
    except OSError as exc:
        raise UserError(
            f"could not write the record {path} ({exc.strerror or exc}); the job finished "
            "but its record and log were not replaced: free space and rerun it"
        ) from exc
    failed_path(path).unlink(missing_ok=True)


def error_text(exc: BaseException) -> str:
    """``<type>: <first line of the message>`` as stored in a failed record."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}"


def _check_not_interrupted() -> None:
    if "SIGTERM" in SIGNALS_SEEN:
        raise JobTerminated("SIGTERM received during the job (its exception was lost)")
    if SIGNALS_SEEN:
        raise KeyboardInterrupt(f"{SIGNALS_SEEN[0]} received during the job (its exception was "
                                "lost)")  # fmt: skip


def run_job(job: Job, tracker: WandbMirror, protect: bool = False) -> dict[str, Any]:
    """Run one job; always write a record, always close W&B.

    ``protect``: the job has an ``ok`` record (a ``force=true`` rerun). A failure of the rerun
    (error, Ctrl-C, SIGTERM) then goes to ``<run_id>.failed.json`` beside it, and the ``ok``
    record and its attack log stay as they were; a successful rerun replaces both together.
    """
    from benchmark.attacks.resources import use_nltk_data
    from benchmark.jobs.pipeline import log_path

    path = record_path(job.results_dir, job.exp_name, job.run_id)
    use_nltk_data(job.nltk_data)  # before TextAttack is imported
    record = new_record(job)
    out_dir = path.parent / "wandb"
    tags = [job.names["pruner"], job.names["attack"], job.names["dataset"]]
    failed = True
    try:
        kind = job_type_of(job.names["pruner"], bool(job.attack.enabled))
        SIGNALS_SEEN.clear()
        tracker.start(job.run_id, job.exp_name, job.cfg, tags, out_dir, job_type=kind)
        execute(job, record)
        _check_not_interrupted()  # a signal whose exception Python dropped still fails the job
        failed = False
    except BaseException as exc:
        record.status = "failed"
        record.error = error_text(exc)
        raise
    finally:
        record.wandb_run_id = tracker.run_id
        unwritten = None
        if record.status == "ok":
            try:
                _write_finished(job, record, path)
            except UserError as exc:  # a full disk: the job fails with that line
                record.status, record.error, unwritten = "failed", error_text(exc), exc
                failed = True
        written = path
        if record.status != "ok":
            written = failed_path(path) if protect else path
            if not write_failed_record(record, written, path if protect else None):
                written = None
        try:
            attack_log = log_path(job) if record.status == "ok" else None
            tracker.log_record(record.to_dict(), written, attack_log)
        finally:
            tracker.finish(failed=failed)
        if written is not None:
            log.info("record: %s (%s)", written, record.status)
        if unwritten is not None:
            raise unwritten
    log_summary(record.to_dict())
    return record.to_dict()


def log_summary(rec: dict[str, Any]) -> None:
    """Log a short table of the job's main numbers."""
    get = rec.get  # a hand-edited record may lack any of them
    title = (f"{get('model')} / {get('dataset')} / {get('pruner')} @ {get('sparsity_target')}"
             f" / {get('attack')} / seed {get('seed')}")  # fmt: skip
    rows = [f"  {k:<18} {_fmt(rec.get(k))}" for k in SUMMARY_FIELDS]
    log.info("summary: %s\n%s", title, "\n".join(rows))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)
