"""One JSON record per job: schema, content-hashed run id, provenance, atomic write.

``run_id`` is a short SHA-256 of the resolved config without the keys that do not change
results (paths, logging, device, control flags), so rerunning a config finds the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# 2: intervals, degenerate-model and calibration fields, n_limit, data source in identity,
#    per-example logs with example_index, thread/BLAS provenance.
# 3: resolved model and data sources (Hub commits, content fingerprints) and the threat model
#    in identity; job-level precision; calibration source and evaluation sample; transfer
#    jobs keyed on their source's run id and log content; gzip logs; cache_pruned and the
#    transfer source's path out of the run id; finite per-example attack time limits.
SCHEMA_VERSION = 3

# Top-level config keys that do not change results and are left out of the run id.
# ``budget`` only names the budget: its values are in the pruner config, which is identity.
NON_IDENTITY_KEYS = (
    "paths", "logger", "hydra", "device", "force", "skip_existing", "progress", "budget",
    "cache_pruned",  # whether pruned weights are cached, not what they are
    "attack_build",  # resolved at build time and stored in the record, never an input
    "protocol",  # a preset's per-dataset/attack table; its values reach identity where used
)  # fmt: skip

# Nested keys that do not change results either: how many processes share an attack sample
# (each example is attacked under its own seed, so results are identical), and how many threads
# AKR's blocked solver runs (fixed row chunks, each single-threaded: bitwise the same result).
NON_IDENTITY_NESTED = {"attack": ("workers",), "pruner": ("obs_workers",)}

# Top-level identity keys that belong to the attack (its threat-model hash, a transfer job's
# source): a table row that spans attacks leaves them out with the attack.
ATTACK_IDENTITY = ("threat_model", "transfer_source")

PACKAGES = ("torch", "transformers", "datasets", "textattack", "hydra-core", "numpy", "wandb")


def short_hash(obj: Any, n: int = 12) -> str:
    """Stable short hash of a JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def without_nested_non_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a shallow copy) with the ``NON_IDENTITY_NESTED`` keys removed from its groups,
    and a transfer job's source path (its identity is ``transfer_source``: the source's run id
    and log content)."""
    out = dict(cfg)
    for group, keys in NON_IDENTITY_NESTED.items():
        if isinstance(out.get(group), dict):
            out[group] = {k: v for k, v in out[group].items() if k not in keys}
    attack = out.get("attack")
    if isinstance(attack, dict) and attack.get("recipe") == "transfer":
        options = {k: v for k, v in (attack.get("options") or {}).items() if k != "source"}
        out["attack"] = {**attack, "options": options}
    return out


def run_id_of(resolved_cfg: dict[str, Any]) -> str:
    """The run id of a resolved config (dict)."""
    ident = {k: v for k, v in resolved_cfg.items() if k not in NON_IDENTITY_KEYS}
    return short_hash(without_nested_non_identity(ident))


@dataclass
class RunRecord:
    """The result of one job; flat scalars for pandas plus the resolved config."""

    run_id: str
    status: str  # "ok" | "failed"
    exp_name: str
    model: str  # the model option's name; ``<option>:<source>`` when other weights ran
    dataset: str
    pruner: str
    attack: str
    seed: int
    sparsity_target: float
    dense_seed: int | None = None  # seed of the dense fine-tune (follows seed unless pinned)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    pruner_version: int | None = None
    attack_version: int | None = None
    split: str | None = None
    scope: str | None = None
    sparsity_actual: float | None = None
    dense_acc: float | None = None
    clean_acc: float | None = None
    clean_acc_ci_low: float | None = None
    clean_acc_ci_high: float | None = None
    n_eval: int | None = None
    n_eval_correct: int | None = None
    majority_rate: float | None = None  # share of the most frequent TRUE class of the split
    pred_majority_label: int | None = None
    pred_majority_share: float | None = None  # share of the most PREDICTED class
    ece: float | None = None
    mean_max_prob: float | None = None
    attack_clean_acc: float | None = None
    attack_clean_acc_ci_low: float | None = None
    attack_clean_acc_ci_high: float | None = None
    aua: float | None = None
    aua_ci_low: float | None = None
    aua_ci_high: float | None = None
    aua_upper: float | None = None  # (failed + limit) / total
    constant_clf_aua: float | None = None
    asr: float | None = None
    asr_ci_low: float | None = None
    asr_ci_high: float | None = None
    avg_queries: float | None = None
    avg_perturbed_frac: float | None = None
    n_total: int | None = None
    n_success: int | None = None
    n_failed: int | None = None
    n_skipped: int | None = None
    n_limit: int | None = None
    inference_ms: float | None = None  # median forward latency of the pruned model (a cost)
    inference_ms_dense: float | None = None  # the same batch through the dense model
    inference: dict[str, Any] = field(default_factory=dict)  # both measurements in full
    params_removed: int | None = None  # structured pruning: parameters physically removed
    latency_ms_dense: float | None = None  # structured pruning: = inference_ms_dense
    latency_ms_pruned: float | None = None  # structured pruning: = inference_ms
    prune_seconds: float | None = None
    prune_peak_mem_mb: float | None = None
    attack_seconds: float | None = None
    duration_s: float | None = None
    precision: str | None = None  # forward passes of clean evaluation and attacks
    threat_model: dict[str, Any] | None = None  # the attack's declared settings and their hash
    cascade: list[dict[str, Any]] | None = None  # attack=cascade: per recipe, in order
    sources: dict[str, Any] = field(default_factory=dict)  # what was loaded (commits, hashes)
    attack_excluded: dict[str, Any] | None = None  # evaluation texts left out of the sample
    prune_info: dict[str, Any] = field(default_factory=dict)
    # the clean predictions' cache entry (pruned/<key>/clean-<hash>.npz) when another job of the
    # same pruned model computed them on the same texts; None when computed by this job
    clean_from_cache: str | None = None
    dense_info: dict[str, Any] = field(default_factory=dict)
    git_sha: str | None = None
    git_dirty: bool | None = None
    versions: dict[str, str] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)  # threads, BLAS, deterministic flags
    device: str | None = None
    started_at: str | None = None
    wandb_run_id: str | None = None
    cfg: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict."""
        return asdict(self)


def record_path(results_dir: Path, exp_name: str, run_id: str) -> Path:
    """Where a job's record lives."""
    return Path(results_dir) / "runs" / exp_name / f"{run_id}.json"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename (a
    kill leaves the old file or the new one, never a part)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged_json(path: Path, data: dict[str, Any]) -> Iterator[None]:
    """Write ``data`` as JSON to a temp file beside ``path`` now (a full disk fails here, with
    ``path`` untouched), run the block, then rename the temp file onto ``path``. A block that
    raises leaves ``path`` as it was. A finished job stages its record around moving its attack
    log into place, so that a write that cannot finish replaces neither."""
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False, default=str, allow_nan=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        yield
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` atomically (:func:`write_bytes_atomic`); a value that cannot be
    serialised fails before anything is written."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str, allow_nan=True)
    write_bytes_atomic(path, text.encode("utf-8"))


def write_record(record: RunRecord, results_dir: Path) -> Path:
    """Write ``record`` atomically to its place under ``results_dir``; return the path."""
    path = record_path(results_dir, record.exp_name, record.run_id)
    write_json_atomic(path, record.to_dict())
    return path


class CorruptRecord(Exception):
    """A record file that exists but is not a readable record (truncated, invalid JSON)."""


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a :class:`RunRecord` field's type. Numbers are numbers: an
    int where a float is declared, a float (``1000.0``, NaN) where an int is, both fit; a bool
    is not a number here."""
    import types
    import typing

    if hint is Any:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint in (int, float):
        return isinstance(value, (int, float))
    return isinstance(value, typing.get_origin(hint) or hint)


def record_problem(data: Any) -> str | None:
    """Why a parsed JSON file cannot be used as a record (None when it can): not an object, no
    ``run_id`` or ``status``, a status other than ok/failed, or a known field of the wrong type
    (a hand edit such as ``"aua": "high"``). Unknown extra keys are accepted, and missing
    fields read as their defaults (:func:`missing_keys` names the ones a record should have)."""
    import dataclasses
    import typing

    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not a record object"
    absent = [key for key in ("run_id", "status") if key not in data]
    if absent:
        return f"missing key(s) {', '.join(absent)}"
    if data["status"] not in ("ok", "failed"):
        return f"status {data['status']!r} (expected 'ok' or 'failed')"
    hints = typing.get_type_hints(RunRecord)
    wrong = [f"{f.name}={data[f.name]!r}" for f in dataclasses.fields(RunRecord)
             if f.name in data and not _fits(data[f.name], hints[f.name])]  # fmt: skip
    if wrong:
        shown = ", ".join(w if len(w) <= 60 else w[:57] + "..." for w in wrong[:3])
        return f"wrong type: {shown}{' ...' if len(wrong) > 3 else ''}"
    return None


def missing_keys(rec: dict[str, Any]) -> list[str]:
    """The fields every written record has (those without a default in :class:`RunRecord`:
    the job's names, seed, sparsity) that ``rec`` lacks: a hand edit or a partial copy."""
    import dataclasses

    none = dataclasses.MISSING
    return [f.name for f in dataclasses.fields(RunRecord)
            if f.default is none and f.default_factory is none and f.name not in rec]  # fmt: skip


def with_defaults(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with every :class:`RunRecord` field it lacks set to the field's default (an
    older schema's record, or a hand-edited one missing an optional field, reads like one
    written today)."""
    import dataclasses

    out = dict(rec)
    for f in dataclasses.fields(RunRecord):
        if f.name not in out and f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        elif f.name not in out and f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out


def read_record(path: Path) -> dict[str, Any] | None:
    """Read a record, or None when the file does not exist; :class:`CorruptRecord` when it
    cannot be read as one: truncated or invalid JSON, or a hand-edited file that
    :func:`record_problem` rejects (the message names the path and what is wrong)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"record {path} is not valid JSON ({exc})") from exc
    except OSError as exc:
        raise CorruptRecord(f"record {path} cannot be read ({exc.strerror or exc})") from exc
    problem = record_problem(data)
    if problem:
        raise CorruptRecord(f"record {path} is not a usable record ({problem})")
    return data


def failed_path(path: Path) -> Path:
    """Where a failed rerun of a finished job is written: beside the ``ok`` record."""
    return Path(path).with_name(Path(path).stem + ".failed.json")


def compute_provenance() -> dict[str, Any]:
    """What decides the floating-point results on this machine: torch threads, the BLAS and
    LAPACK backends torch was built with, and the deterministic-algorithm flags."""
    import re

    import torch

    cfg = torch.__config__.show()

    def info(key: str) -> str | None:
        m = re.search(rf"\b{key}=([^,\s]+)", cfg)
        return m.group(1) if m else None

    blas, lapack = info("BLAS_INFO"), info("LAPACK_INFO")
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas": blas, "lapack": lapack,
        "mkl": torch.backends.mkl.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }  # fmt: skip


NOT_CODE = (
    "results/", "docs/", "tests/", "scripts/", "benchmark/reporting/", "conf/table/",
    "conf/claims/", "conf/compare/", "conf/effects/",
)  # fmt: skip
"""Tracked paths whose edits cannot change a result: regenerated tables and records, docs,
tests, scripts and the reporting code that only reads records, and the table and claims specs.
The exception is :data:`RESULT_CODE`."""
RESULT_CODE = ("benchmark/reporting/stats.py",)
"""Reporting code a job itself runs (the record's Wilson intervals and calibration error)."""


def code_dirty(porcelain: str) -> bool:
    """Whether ``git status --porcelain`` lists a modified tracked file that can change a
    result: anything but :data:`NOT_CODE` and Markdown files (a regenerated table, or a table
    writer being edited, beside a running sweep does not make its records "dirty")."""
    for line in porcelain.splitlines():
        path = line[3:].split(" -> ")[-1].strip().strip('"')
        if not path:
            continue
        if path in RESULT_CODE or not (path.startswith(NOT_CODE) or path.endswith(".md")):
            return True
    return False


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``git_sha`` (HEAD) and ``git_dirty`` (:func:`code_dirty`) of the project checkout now;
    both None outside a git checkout."""
    root = root or Path(__file__).resolve().parents[2]
    sha, dirty = None, None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip() or None  # fmt: skip
        dirty = code_dirty(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                capture_output=True, text=True, timeout=10,
            ).stdout
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pass
    return {"git_sha": sha, "git_dirty": dirty}


_PROCESS_GIT: dict[str, Any] = {}


def process_git_state() -> dict[str, Any]:
    """The checkout's :func:`git_state` when this process first asked: ``benchmark.run.main``
    asks before the first job, a launcher's worker at its first job. Every record the process
    writes carries it, because the code a process runs is what it imported then; a commit or
    an edit made while a sweep runs does not change what its later jobs run (and reading git
    again per record would say it does)."""
    if not _PROCESS_GIT:
        _PROCESS_GIT.update(git_state())
    return dict(_PROCESS_GIT)


def provenance() -> dict[str, Any]:
    """git sha and dirty flag of the code this process runs (:func:`process_git_state`), the
    versions of key packages, and the compute settings."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {**process_git_state(), "versions": versions, "compute": compute_provenance()}
