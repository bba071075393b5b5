"""What makes two jobs the same job, and two cache entries the same entry.

- The data a job ran on is part of its identity: a local mirror by a content fingerprint of
  the split files it reads (SHA-256), a Hub dataset by its name and revision. The folder's
  absolute path is recorded (``data_source.dir``) but is not identity: the same files in
  another checkout are the same data, while flipped labels in the same folder are not.
- Values are normalised before hashing, so ``sparsity=0`` and ``sparsity=0.0`` are one job.
- Downloaded and installed bytes are identity too (:func:`model_sources`): a Hub repository by
  the commit its ``revision`` resolves to (read from the local cache's ``refs/``, offline; the
  Hub's API only where the cache does not have it and the Hub is reachable), an installed
  package's or a local folder's model by a content fingerprint of its files. Nothing here
  downloads a model or a dataset.
- Caches follow the code: :func:`source_hash` hashes the source of a module and every
  ``benchmark`` module it imports (transitively), except bookkeeping (records, reporting:
  :data:`BOOKKEEPING`), so an edit of a method or of a shared module it uses invalidates its
  cached dense or pruned weights, and an edit of how records are stored does not. Run ids do
  not include it (a refactor must not orphan records); a change that can change numbers bumps
  the method's ``version``, which is identity.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # benchmark/


@functools.lru_cache(maxsize=64)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes, cached per (path, size, mtime)."""
    st = Path(path).stat()
    return _file_sha(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 (16 hex digits) over a folder's files: relative names and content fingerprints
    (hidden files and ``__pycache__`` left out)."""
    h = hashlib.sha256()
    root = Path(folder)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        h.update(str(rel).encode())
        h.update(file_fingerprint(path).encode())
    return h.hexdigest()[:16]


COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir() -> Path:
    """The ``huggingface_hub`` cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``), read from the
    environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def datasets_cache_dir() -> Path:
    """The ``datasets`` cache (``HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "datasets"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_commit(repo: str, revision: str | None, repo_type: str = "model") -> str | None:
    """The commit ``revision`` of Hub repository ``repo`` resolves to: a commit given as the
    revision itself, else the local cache's ``refs/<revision>``, else (online only) the Hub's
    API; None when none of them knows."""
    rev = revision or "main"
    if COMMIT.match(rev):
        return rev
    folder = hub_cache_dir() / f"{repo_type}s--{repo.replace('/', '--')}"
    ref = folder / "refs" / rev
    if ref.is_file():
        return ref.read_text().strip() or None
    if repo_type == "dataset":  # a prepared datasets cache names the commit it was built from
        built = _datasets_cache_commits(repo)
        if built:
            return built[-1]
    if _hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        info = (api.dataset_info if repo_type == "dataset" else api.model_info)(
            repo, revision=rev, timeout=10
        )
        return getattr(info, "sha", None)
    except Exception:  # unreachable, unknown repo: the load itself will say what is wrong
        return None


def _datasets_cache_commits(repo: str) -> list[str]:
    """Commits of the prepared ``datasets`` caches of ``repo`` (oldest first, by mtime):
    ``<cache>/<namespace>___<name>/<config>/<version>/<commit>/``."""
    folder = datasets_cache_dir() / repo.replace("/", "___")
    found = [p for p in folder.glob("*/*/*") if p.is_dir() and COMMIT.match(p.name)]
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime)]


def model_source(source: str | None, revision: str | None = None) -> dict[str, Any] | None:
    """What a model option's ``pretrained`` / ``finetuned`` names, as identity: in-process
    (``tiny``), an installed package's folder or a local folder (content fingerprint), or a
    Hub repository (its resolved commit; None when it cannot be resolved yet)."""
    if not source:
        return None
    if source == "tiny" or source.startswith("tiny:"):
        return {"kind": "builtin", "id": source}
    if source.startswith("pkg:"):
        module, _, sub = source[4:].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return {"kind": "package", "id": source, "sha256": None}
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
        return {"kind": "package", "id": source,
                "sha256": folder_fingerprint(folder) if folder.is_dir() else None}  # fmt: skip
    path = Path(source).expanduser()
    if path.exists() or source.startswith(("/", ".", "~")):
        return {"kind": "local", "id": source,
                "sha256": folder_fingerprint(path) if path.is_dir() else None}  # fmt: skip
    return {"kind": "hub", "id": source, "revision": revision,
            "commit": hub_commit(source, revision)}  # fmt: skip


def model_sources(model: dict[str, Any]) -> dict[str, Any]:
    """The identity of the weights a model option loads: ``pretrained`` and ``finetuned``."""
    return {
        "pretrained": model_source(model.get("pretrained"), model.get("revision")),
        "finetuned": model_source(model.get("finetuned"), model.get("revision")),
    }


def unresolved(sources: dict[str, Any], data: dict[str, Any] | None = None) -> list[str]:
    """The Hub repositories whose commit could not be resolved (for ``--plan`` and logs)."""
    out = [s["id"] for s in sources.values() if s and s.get("kind") == "hub" and not s["commit"]]
    if data and data.get("kind") == "hub" and not data.get("commit"):
        out.append(f"dataset {data.get('path')}")
    return out


def data_source(dataset: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """The identity of the data a job reads (its train and evaluation splits).

    ``dataset`` is the resolved ``dataset`` config; ``data_dir`` is ``paths.data_dir``.
    A local file that does not exist is left out here; loading it fails with its own message.
    A Hub dataset is named with the commit its revision resolves to (:func:`hub_commit`).
    """
    if dataset.get("builtin"):
        return {"kind": "builtin", "name": dataset["builtin"]}
    if not data_dir:
        path = dataset.get("hub_path")
        return {"kind": "hub", "path": path, "name": dataset.get("hub_name"),
                "revision": dataset.get("revision"),
                "commit": hub_commit(path, dataset.get("revision"), "dataset") if path
                else None}  # fmt: skip
    folder = Path(data_dir) / (dataset.get("local_name") or dataset["name"])
    files = {}
    for split in sorted({dataset.get("train_split", "train"),
                         dataset.get("eval_split", "validation")}):  # fmt: skip
        fname = (dataset.get("local_files") or {}).get(split, f"{split}.csv")
        if (folder / fname).is_file():
            files[split] = {"file": fname, "sha256": file_fingerprint(folder / fname)}
    return {"kind": "local", "folder": folder.name, "files": files}


def normalise(resolved: dict[str, Any]) -> dict[str, Any]:
    """Canonical values of the keys whose spelling can differ (``sparsity=0`` vs ``0.0``;
    ``pruner.calibration`` naming the task itself is ``task``; an unset ``dense_noise`` is
    left out, so the run ids from before the key existed stay what they were)."""
    out = dict(resolved)
    if "dense_noise" in out and out["dense_noise"] is None:
        del out["dense_noise"]
    elif isinstance(out.get("dense_noise"), dict) and isinstance(
        out["dense_noise"].get("scale"), int | float
    ):
        out["dense_noise"] = {**out["dense_noise"], "scale": float(out["dense_noise"]["scale"])}
    if isinstance(out.get("sparsity"), int | float) and not isinstance(out["sparsity"], bool):
        out["sparsity"] = float(out["sparsity"])
    pruner, dataset = out.get("pruner"), out.get("dataset")
    if (
        isinstance(pruner, dict)
        and isinstance(dataset, dict)
        and (
            pruner.get("calibration") not in (None, "task")
            and pruner.get("calibration") == dataset.get("name")
        )
    ):
        out["pruner"] = {**pruner, "calibration": "task"}
    return out


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "benchmark" or n.startswith("benchmark.")}


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    base = PACKAGE_ROOT.joinpath(*parts) if parts else PACKAGE_ROOT
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


BOOKKEEPING = ("benchmark.records", "benchmark.reporting", "benchmark.errors")
"""Modules that store, name or report results and never compute weights: left out of the
closure that keys the dense and pruned caches."""


def _bookkeeping(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BOOKKEEPING)


def module_closure(module: str) -> list[Path]:
    """The source files of ``module`` and of every ``benchmark`` module it imports, except
    :data:`BOOKKEEPING` modules."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if _bookkeeping(name):
            continue
        path = _module_file(name)
        if path is None or str(path) in seen:
            continue
        seen[str(path)] = path
        todo.extend(_imports(path))
    return sorted(seen.values())


def source_hash(*modules: str) -> str:
    """SHA-256 (12 hex digits) of the source closure of ``modules`` (see module docstring)."""
    h = hashlib.sha256()
    files = sorted({p for m in modules for p in module_closure(m)})
    for path in files:
        h.update(str(path.relative_to(PACKAGE_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def target_module(target: str | None) -> str | None:
    """The module of a ``_target_`` (``benchmark.pruners.akr.AKRPruner`` -> ``...akr``);
    None for a target outside the project (a user's own class is hashed by its file too)."""
    if not target or "." not in target:
        return None
    module = target.rsplit(".", 1)[0]
    if module.startswith("benchmark."):
        return module
    spec = importlib.util.find_spec(module)
    return module if spec is not None else None


def code_hash(target: str | None) -> str | None:
    """Source hash of a method class's module closure (a user's module: its own file)."""
    module = target_module(target)
    if module is None:
        return None
    if module.startswith("benchmark."):
        return source_hash(module)
    spec = importlib.util.find_spec(module)
    origin = getattr(spec, "origin", None)
    if not origin or not Path(origin).is_file():
        return None
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()[:12]
