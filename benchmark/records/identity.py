"""What makes two jobs the same job, and two cache entries the same entry.

- The data a job ran on is part of its identity: a local mirror by a content fingerprint of
  the split files it reads (SHA-256), a Hub dataset by its name and revision. The folder's
  absolute path is recorded (``data_source.dir``) but is not identity: the same files in
  another checkout are the same data, while flipped labels in the same folder are not.
- Values are normalised before hashing, so ``sparsity=0`` and ``sparsity=0.0`` are one job.
- Caches follow the code: :func:`source_hash` hashes the source of a module and every
  ``benchmark`` module it imports (transitively), so an edit of a method or of a shared module
  it uses invalidates its cached dense or pruned weights. Run ids do not include it (a
  refactor must not orphan records); a change that can change numbers bumps the method's
  ``version``, which is identity.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
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


def data_source(dataset: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """The identity of the data a job reads (its train and evaluation splits).

    ``dataset`` is the resolved ``dataset`` config; ``data_dir`` is ``paths.data_dir``.
    A local file that does not exist is left out here; loading it fails with its own message.
    """
    if dataset.get("builtin"):
        return {"kind": "builtin", "name": dataset["builtin"]}
    if not data_dir:
        return {"kind": "hub", "path": dataset.get("hub_path"), "name": dataset.get("hub_name"),
                "revision": dataset.get("revision")}  # fmt: skip
    folder = Path(data_dir) / (dataset.get("local_name") or dataset["name"])
    files = {}
    for split in sorted({dataset.get("train_split", "train"),
                         dataset.get("eval_split", "validation")}):  # fmt: skip
        fname = (dataset.get("local_files") or {}).get(split, f"{split}.csv")
        if (folder / fname).is_file():
            files[split] = {"file": fname, "sha256": file_fingerprint(folder / fname)}
    return {"kind": "local", "folder": folder.name, "files": files}


def normalise(resolved: dict[str, Any]) -> dict[str, Any]:
    """Canonical values of the keys whose spelling can differ (``sparsity=0`` vs ``0.0``)."""
    out = dict(resolved)
    if isinstance(out.get("sparsity"), int | float) and not isinstance(out["sparsity"], bool):
        out["sparsity"] = float(out["sparsity"])
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


def module_closure(module: str) -> list[Path]:
    """The source files of ``module`` and of every ``benchmark`` module it imports."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
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
