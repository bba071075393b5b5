"""Reading the YAML specs of the generated tables (``conf/claims/``, ``conf/effects/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_spec(name: str | Path, directory: Path, kind: str) -> tuple[dict[str, Any], Path]:
    """The spec ``<directory>/<name>.yaml``, or the file ``name`` itself, and its path.

    A name that is neither raises a ``ValueError`` listing the valid names."""
    import yaml

    path = Path(name) if Path(name).is_file() else directory / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ValueError(f"no {kind} spec {name!r} (conf/{directory.name}/); "
                         f"valid: {', '.join(names)}")  # fmt: skip
    return yaml.safe_load(path.read_text(encoding="utf-8")), path
