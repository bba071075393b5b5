"""One JSON record per job: schema, content-hashed run id, provenance, atomic write.

``run_id`` is a short SHA-256 of the resolved config without the keys that do not change
results (paths, logging, device, control flags), so rerunning a config finds the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Top-level config keys that do not change results and are left out of the run id.
# ``budget`` only names the budget: its values are in the pruner config, which is identity.
NON_IDENTITY_KEYS = (
    "paths", "logger", "hydra", "device", "force", "skip_existing", "progress", "budget",
)  # fmt: skip

# Nested keys that do not change results either: how many processes share an attack sample
# (each example is attacked under its own seed, so results are identical).
NON_IDENTITY_NESTED = {"attack": ("workers",)}

PACKAGES = ("torch", "transformers", "datasets", "textattack", "hydra-core", "numpy", "wandb")


def short_hash(obj: Any, n: int = 12) -> str:
    """Stable short hash of a JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def run_id_of(resolved_cfg: dict[str, Any]) -> str:
    """The run id of a resolved config (dict)."""
    ident = {k: v for k, v in resolved_cfg.items() if k not in NON_IDENTITY_KEYS}
    for group, keys in NON_IDENTITY_NESTED.items():
        if isinstance(ident.get(group), dict):
            ident[group] = {k: v for k, v in ident[group].items() if k not in keys}
    return short_hash(ident)


@dataclass
class RunRecord:
    """The result of one job; flat scalars for pandas plus the resolved config."""

    run_id: str
    status: str  # "ok" | "failed"
    exp_name: str
    model: str
    dataset: str
    pruner: str
    attack: str
    seed: int
    sparsity_target: float
    error: str | None = None
    schema_version: int = SCHEMA_VERSION
    pruner_version: int | None = None
    attack_version: int | None = None
    split: str | None = None
    scope: str | None = None
    sparsity_actual: float | None = None
    dense_acc: float | None = None
    clean_acc: float | None = None
    n_eval: int | None = None
    attack_clean_acc: float | None = None
    aua: float | None = None
    asr: float | None = None
    avg_queries: float | None = None
    avg_perturbed_frac: float | None = None
    n_total: int | None = None
    n_success: int | None = None
    n_failed: int | None = None
    n_skipped: int | None = None
    prune_seconds: float | None = None
    prune_peak_mem_mb: float | None = None
    attack_seconds: float | None = None
    duration_s: float | None = None
    prune_info: dict[str, Any] = field(default_factory=dict)
    dense_info: dict[str, Any] = field(default_factory=dict)
    git_sha: str | None = None
    git_dirty: bool | None = None
    versions: dict[str, str] = field(default_factory=dict)
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


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str, allow_nan=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_record(record: RunRecord, results_dir: Path) -> Path:
    """Write ``record`` atomically to its place under ``results_dir``; return the path."""
    path = record_path(results_dir, record.exp_name, record.run_id)
    write_json_atomic(path, record.to_dict())
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """Read a record, or None when the file does not exist."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """git sha and dirty flag of the project checkout, and the versions of key packages."""
    root = Path(__file__).resolve().parents[2]
    sha, dirty = None, None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip() or None  # fmt: skip
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                capture_output=True, text=True, timeout=10,
            ).stdout.strip()
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {"git_sha": sha, "git_dirty": dirty, "versions": versions}
