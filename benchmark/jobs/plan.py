"""``scripts/reproduce.sh NAME --plan [ARGS]``: what a sweep would run, before it runs.

For every sweep behind a table or preset (:func:`benchmark.reporting.reproduce.plan`), the
jobs are expanded exactly as Hydra's basic sweeper does (the preset's ``hydra.sweeper.params``,
then the command line's values, the later winning), and each job is identified in-process as
``python -m benchmark.run`` would identify it (:func:`benchmark.jobs.build.job_identity`),
offline: nothing is trained, downloaded or written. The plan says per sweep

- how many jobs there are and how many already have an ``ok`` record (skipped by a run);
- what the remaining jobs need and this machine lacks: Hub models and datasets that are not in
  the local cache (with ``HF_HUB_OFFLINE=1`` they cannot be fetched), attack resources (NLTK
  data, embeddings, encoders), a GPU the config names;
- the estimated cost on this device, from the rates measured in existing records of the same
  model, dataset, pruner and attack on the same kind of device (dense fine-tune, pruning,
  clean evaluation, seconds per attacked example). A model without such records takes the
  rates of another model that has them on the same dataset, pruner and attack, scaled by a
  short calibration run: the forward time of a random-weight model of each architecture
  (its ``config.json``, from the local cache or the Hub; a few kilobytes, no weights) on a
  batch at the dataset's ``max_length``, this device, this process's threads. The plan says
  which jobs are scaled and by what ratio; a forward-time ratio under-estimates a solver
  whose cost grows faster than the forward pass with the width (AKR's OBS: about the width
  cubed per layer, the forward pass its square). A job for which neither exists says
  ``no measured rate``.

It ends with ``jobs: N total, M with records`` and exits 0 whenever it printed the plan.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.records.store import CorruptRecord, read_record

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("benchmark.reproduce")


@dataclass
class PlannedJob:
    """One job of a sweep: its overrides, identity, record state, needs and estimated cost."""

    overrides: list[str]
    run_id: str | None = None
    scaled: str | None = None  # "<reference model> x<ratio>": rates taken from another model
    done: bool = False
    error: str | None = None
    missing: list[str] = field(default_factory=list)
    seconds: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    kind: str = ""


def expand(sweep_args: list[str]) -> list[list[str]]:
    """The jobs of one ``python -m benchmark.run -m ARGS`` sweep, as override lists."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from benchmark.run import _overrides

    _register_resolvers()
    args = _overrides([a for a in sweep_args if a not in ("-m", "--multirun")])
    first = [a if "," not in a.partition("=")[2] else a.split(",")[0] for a in args]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=first, return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides([*params, *args])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))


def identify(overrides: list[str]):
    """``(identity, resolved config)`` of one job, composed as a real job is."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from benchmark.jobs.build import job_identity

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        full = compose("run", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(full)
        cfg = compose("run", overrides=overrides)
        return job_identity(cfg, dict(full.hydra.runtime.choices))


def _kind_key(rec: dict[str, Any]) -> tuple:
    return (rec.get("model"), rec.get("dataset"))


@dataclass
class Rates:
    """Measured seconds from existing records, by what they depend on."""

    dense: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    prune: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    clean: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    attack: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    split: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    model_cfgs: dict[tuple, dict[str, Any]] = field(default_factory=dict)  # (model, dataset)

    def models(self, dataset: str) -> list[tuple[str, dict[str, Any]]]:
        """(model, its model config) of the records on ``dataset``, most records first."""
        counts = Counter()
        for table in (self.dense, self.prune, self.clean, self.attack):
            for key, values in table.items():
                if key[1] == dataset:
                    counts[key[0]] += len(values)
        return [(m, self.model_cfgs[(m, dataset)]) for m, _ in counts.most_common()
                if (m, dataset) in self.model_cfgs]  # fmt: skip

    @classmethod
    def from_records(cls, results_dir: Path, device_kind: str) -> Rates:
        """Rates of the ``ok`` records under ``results_dir`` run on ``device_kind`` (cpu|cuda)."""
        out = cls()
        for path in sorted((Path(results_dir) / "runs").glob("*/*.json")):
            try:
                rec = read_record(path)
            except CorruptRecord:
                continue  # named by the aggregator and by the job itself
            if rec is None:
                continue
            if rec.get("status") != "ok" or not str(rec.get("device") or "").startswith(
                device_kind
            ):
                continue
            md = _kind_key(rec)
            cfg = rec.get("cfg") or {}
            if isinstance(cfg.get("model"), dict):
                out.model_cfgs.setdefault(md, cfg["model"])
            if rec.get("n_eval") and not (cfg.get("eval_sample") or cfg.get("max_eval_examples")):
                out.split[md].append(float(rec["n_eval"]))  # the whole evaluation split
            dense = rec.get("dense_info") or {}
            if dense.get("seconds"):
                out.dense[md].append(float(dense["seconds"]))
            info = rec.get("prune_info") or {}
            if rec.get("prune_seconds") is not None and not info.get("cached"):
                key = (*md, rec.get("pruner"), round(float(rec.get("sparsity_target") or 0), 3))
                out.prune[key].append(float(rec["prune_seconds"]))
            n_total = rec.get("n_total")
            if rec.get("attack_seconds") and n_total:
                out.attack[(*md, rec.get("attack"))].append(rec["attack_seconds"] / n_total)
            if rec.get("duration_s") and rec.get("n_eval"):
                rest = rec["duration_s"] - (rec.get("attack_seconds") or 0.0)
                rest -= 0.0 if info.get("cached") else (rec.get("prune_seconds") or 0.0)
                rest -= dense.get("seconds") or 0.0
                if rest > 0:
                    out.clean[md].append(rest / rec["n_eval"])
        return out


def _median(values: Iterable[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def estimate(job: PlannedJob, resolved: dict[str, Any], names: dict[str, str], rates: Rates,
             dense_seen: set, calibration: Calibration | None = None) -> None:  # fmt: skip
    """Fill ``job.seconds`` and ``job.parts`` from measured rates (None: no measured rate);
    where this model has none, from another model's on the same dataset, scaled by the
    ``calibration``'s forward-time ratio (``job.scaled`` names it)."""
    dense_id = ((names["model"], names["dataset"]),
                json.dumps(resolved.get("dense"), sort_keys=True, default=str))  # fmt: skip
    trains = dense_id not in dense_seen and not dense_cached(resolved)  # the first job trains it
    if trains:
        dense_seen.add(dense_id)
    _estimate(job, resolved, names, rates, trains, names["model"], 1.0)
    if job.seconds is not None or calibration is None:
        return
    mine = calibration.seconds(names["model"], resolved["model"], resolved["dataset"])
    if not mine:
        return
    for other, model_cfg in rates.models(names["dataset"]):
        theirs = None if other == names["model"] else calibration.seconds(
            other, model_cfg, resolved["dataset"])  # fmt: skip
        if not theirs:
            continue
        trial = PlannedJob(job.overrides)
        _estimate(trial, resolved, names, rates, trains, other, mine / theirs)
        if trial.seconds is not None:
            job.seconds, job.parts = trial.seconds, trial.parts
            job.scaled = f"{other} x{mine / theirs:.2g}"
            return


def _estimate(job: PlannedJob, resolved: dict[str, Any], names: dict[str, str], rates: Rates,
              trains: bool, model: str, ratio: float) -> None:  # fmt: skip
    """:func:`estimate` from the rates of ``model`` (this job's or another's) times ``ratio``;
    ``trains``: this job fine-tunes its dense model."""
    md = (model, names["dataset"])
    parts: dict[str, float | None] = {}
    if trains:
        parts["dense fine-tune"] = _median(rates.dense.get(md, []))
    if names["pruner"] != "none":
        key = (*md, names["pruner"], round(float(resolved.get("sparsity", 0.0)), 3))
        parts["pruning"] = _median(rates.prune.get(key, []))
    n_eval = resolved.get("eval_sample") or resolved.get("max_eval_examples")
    per_eval = _median(rates.clean.get(md, []))
    if n_eval and per_eval is not None:
        parts["clean evaluation"] = per_eval * int(n_eval)
    elif per_eval is not None:
        n_split = _median(rates.split.get(md, []))
        parts["clean evaluation"] = per_eval * n_split if n_split else None
    attack = resolved.get("attack") or {}
    if attack.get("recipe", "none") != "none":
        per_ex = _median(rates.attack.get((*md, names["attack"]), []))
        n = int(attack.get("num_examples") or 0) or (_median(rates.split.get(md, [])) or 0)
        parts[f"attack ({n:g} examples)"] = per_ex * n if per_ex is not None else None
    job.parts = {k: v * ratio for k, v in parts.items() if v is not None}
    job.seconds = None if any(v is None for v in parts.values()) else sum(job.parts.values())


class Calibration:
    """Seconds per sequence of a forward pass of a random-weight model of each architecture
    at a dataset's ``max_length`` on this device (batch of 8, median of 3 after a warm-up),
    measured once per (model, length): the scale between two models' measured rates. ``None``
    where the architecture's config cannot be read (not cached and the Hub unreachable); a
    source whose config could not be read is not asked for again."""

    def __init__(self) -> None:
        self._cache: dict[tuple, float | None] = {}
        self._unreadable: set[str] = set()

    def seconds(self, name: str, model_cfg: dict[str, Any], dataset_cfg: dict[str, Any]):
        length = int(dataset_cfg.get("max_length") or 128)
        key = (name, length)
        source = _source(model_cfg)
        if key not in self._cache and source not in self._unreadable:
            self._cache[key] = forward_seconds(model_cfg, int(dataset_cfg.get("num_labels") or 2),
                                               length)  # fmt: skip
            if self._cache[key] is None:
                self._unreadable.add(source)
        return self._cache.get(key)


def _source(model_cfg: dict[str, Any]) -> str:
    return str(model_cfg.get("finetuned") or model_cfg.get("pretrained") or "")


def forward_seconds(model_cfg: dict[str, Any], num_labels: int, length: int,
                    batch: int = 8) -> float | None:  # fmt: skip
    """One calibration run: seconds per sequence of a forward pass of a random-weight model of
    ``model_cfg``'s architecture (``None`` when its config cannot be read: the plan then says
    ``no measured rate``); the config as :func:`benchmark.jobs.validate.model_config` reads
    it."""
    import statistics
    import time

    import torch

    from benchmark.models.loading import build_tiny, is_tiny, tiny_kind

    source = _source(model_cfg)
    try:
        if is_tiny(source):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="plan_tiny_") as tmp:
                model, _ = build_tiny(tiny_kind(source), num_labels, Path(tmp))
        else:
            from transformers import AutoModelForSequenceClassification

            from benchmark.jobs.validate import model_config

            config = model_config(model_cfg)
            if config is None:
                return None
            config.num_labels = num_labels
            model = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, UserError):
        return None
    model.eval()
    limit = getattr(model.config, "max_position_embeddings", length) or length
    n = min(length, limit - 2 if limit > 2 else limit)
    ids = torch.randint(5, max(6, model.config.vocab_size), (batch, n))
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(4):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def dense_cached(resolved: dict[str, Any]) -> bool:
    """Whether the job's dense model is in the cache already (a given fine-tuned checkpoint
    counts as cached: it is loaded, not trained)."""
    from hydra.utils import instantiate

    from benchmark.data.loading import DatasetSpec
    from benchmark.models.loading import ModelSpec
    from benchmark.records.identity import data_source
    from benchmark.training.dense import dense_key

    model = ModelSpec(**resolved["model"])
    if model.finetuned:
        return True
    dataset = DatasetSpec(**resolved["dataset"])
    try:
        recipe = instantiate(resolved["dense"])
    except Exception:  # a bad recipe fails the job itself, with its own message
        return False
    data = data_source(resolved["dataset"], (resolved.get("paths") or {}).get("data_dir"))
    key = dense_key(model, dataset, recipe, None, data)
    folder = Path(resolved["paths"]["cache_dir"]) / "dense" / f"{model.name}-{dataset.name}-{key}"
    return (folder / "info.json").is_file()


def needs(ident, resolved: dict[str, Any]) -> list[str]:
    """What this job needs that this machine lacks (empty: nothing known to be missing)."""
    import torch

    from benchmark.attacks.adapter import AttackSpec
    from benchmark.attacks.external import AttackResources
    from benchmark.records.identity import unresolved

    out = []
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    for repo in unresolved(ident.identity.get("sources") or {}, ident.identity["data_source"]):
        how = "cannot be fetched: HF_HUB_OFFLINE=1" if offline else "to be downloaded"
        out.append(f"Hub {repo} (no commit in the local cache; {how})")
    device = str(resolved.get("device", "auto"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        out.append(f"a GPU (device={device})")
    attack = dict(resolved.get("attack") or {})
    if attack.get("recipe", "none") not in ("none", "transfer"):
        spec = AttackSpec(**{k: v for k, v in attack.items() if k != "_target_"})
        paths = {**(resolved.get("paths") or {})}
        try:
            spec.check_resources(AttackResources.from_paths(paths), ident.names["attack"])
        except UserError as exc:
            out.append(str(exc))
    return out


def make_plan(sweeps: list[list[str]], results_dir: Path | None = None) -> list[tuple]:
    """(sweep, [PlannedJob]) for every sweep."""
    device_kind = _device_kind()
    out = []
    rates = None
    calibration = Calibration()
    dense_seen: set = set()
    for sweep in sweeps:
        jobs = []
        for overrides in expand(sweep):
            job = PlannedJob(overrides)
            try:
                ident = identify(overrides)
            except UserError as exc:
                job.error = str(exc)
                jobs.append(job)
                continue
            resolved = ident.resolved
            if rates is None:
                rdir = results_dir or Path(resolved["paths"]["results_dir"])
                rates = Rates.from_records(rdir, device_kind)
            job.run_id = ident.run_id
            job.kind = " / ".join(ident.names[g] for g in ("model", "dataset", "pruner", "attack"))
            try:
                rec = read_record(ident.path)
                job.done = rec is not None and rec.get("status") == "ok"
            except CorruptRecord:
                job.done = False
            if not job.done:
                job.missing = needs(ident, resolved)
                estimate(job, resolved, ident.names, rates, dense_seen, calibration)
            jobs.append(job)
        out.append((sweep, jobs))
    return out


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(plan: list[tuple], device_kind: str) -> str:
    """The plan in one screen."""
    lines = []
    total = done = 0
    cost = 0.0
    unknown = 0
    for i, (sweep, jobs) in enumerate(plan, 1):
        args = " ".join(a for a in sweep if a != "-m")
        n_done = sum(j.done for j in jobs)
        total += len(jobs)
        done += n_done
        todo = [j for j in jobs if not j.done and not j.error]
        errors = [j for j in jobs if j.error]
        est = [j.seconds for j in todo if j.seconds is not None]
        cost += sum(est)
        unknown += sum(j.seconds is None for j in todo)
        lines.append(f"sweep {i}/{len(plan)}: {args}")
        invalid = f", {len(errors)} invalid" if errors else ""
        lines.append(f"  {len(jobs)} jobs, {n_done} with records, {len(todo)} to run{invalid}")
        for err, n in Counter(j.error for j in errors).most_common(3):
            lines.append(f"  invalid ({n}): {err}")
        for need, n in Counter(m for j in todo for m in j.missing).most_common(6):
            lines.append(f"  missing on this machine ({n} jobs): {need}")
        if todo:
            no_rate = Counter(j.kind for j in todo if j.seconds is None)
            kinds = ", ".join(sorted(no_rate)[:3]) + (", ..." if len(no_rate) > 3 else "")
            parts = [f"estimated {_hours(sum(est))} on this device ({device_kind}) for "
                     f"{len(est)} jobs"] if est else []  # fmt: skip
            scaled = Counter(j.scaled for j in todo if j.scaled)
            if scaled:
                how = ", ".join(f"{n} from {s}" for s, n in sorted(scaled.items()))
                parts.append(f"scaled by a forward-time calibration run: {how}")
            if no_rate:
                parts.append(f"no measured rate for {sum(no_rate.values())} ({kinds})")
            lines.append("  " + "; ".join(parts))
    lines.append(f"jobs: {total} total, {done} with records")
    lines.append(f"estimated cost of the jobs to run on this device ({device_kind}): "
                 f"{_hours(cost)}" + (f", plus {unknown} jobs with no measured rate"
                                      if unknown else ""))  # fmt: skip
    return "\n".join(lines)


def run_plan(sweeps: list[list[str]]) -> int:
    """Log the plan of ``sweeps`` (``benchmark.reproduce``'s lines); 0 when it was shown."""
    results = [a.split("=", 1)[1] for s in sweeps for a in s if a.startswith("paths.results_dir=")]
    plan = make_plan(sweeps, Path(results[-1]) if results else None)
    log.info("%s", render(plan, _device_kind()))
    return 0


def _device_kind() -> str:
    """``cuda`` or ``cpu``: what ``device=auto`` resolves to on this machine."""
    from benchmark.models.loading import resolve_device

    return resolve_device("auto").type
