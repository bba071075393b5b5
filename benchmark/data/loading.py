"""Task data from the Hugging Face Hub or from a local mirror, never one silently for the other.

With ``paths.data_dir`` set, a split is read from ``<data_dir>/<local_name>/<file>`` (CSV with
columns ``text,label``); a missing file is a :class:`UserError` naming the path and the key.
With ``paths.data_dir`` unset, the split comes from the Hub via ``datasets.load_dataset``; a
failure is a :class:`UserError` that says to set ``paths.data_dir``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.errors import UserError

log = logging.getLogger(__name__)

Example = tuple[str, int]


@dataclass(frozen=True)
class DatasetSpec:
    """A classification task as the config describes it.

    Attributes:
        name: short name (``sst2``).
        num_labels: number of classes.
        train_split / eval_split: split names (the papers attack SST-2 validation, IMDB and
            AG News test).
        max_length: tokenizer truncation length (METHODS.md: 128 SST-2, 256 IMDB / AG News).
        hub_path / hub_name: ``datasets.load_dataset(hub_path, hub_name)``.
        text_column / label_column: columns on the Hub.
        local_name: folder under ``data_dir``; local_files maps split -> file name.
        builtin: ``tiny`` for the in-process synthetic task (no files).
        textattack_name: suffix of the public textattack/bert-base-uncased-* checkpoint.
    """

    name: str
    num_labels: int
    train_split: str = "train"
    eval_split: str = "validation"
    max_length: int = 128
    hub_path: str | None = None
    hub_name: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    local_name: str | None = None
    local_files: dict[str, str] = field(default_factory=dict)
    builtin: str | None = None
    textattack_name: str | None = None


def load_split(spec: DatasetSpec, split: str, data_dir: str | None) -> list[Example]:
    """Load one split as a list of ``(text, label)``."""
    if spec.builtin == "tiny":
        from benchmark.data.tiny import tiny_splits

        splits = tiny_splits()
        if split not in splits:
            raise UserError(f"dataset {spec.name!r} has no split {split!r}")
        return [(str(t), int(y)) for t, y in splits[split]]
    if data_dir:
        return _load_local(spec, split, Path(data_dir))
    return _load_hub(spec, split)


def _load_local(spec: DatasetSpec, split: str, data_dir: Path) -> list[Example]:
    fname = spec.local_files.get(split, f"{split}.csv")
    path = data_dir / (spec.local_name or spec.name) / fname
    if not path.is_file():
        raise UserError(
            f"missing data file {path} (dataset {spec.name!r}, split {split!r}); "
            "set paths.data_dir to a folder holding <dataset>/<split>.csv, "
            "or paths.data_dir=null to load from the Hugging Face Hub"
        )
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise UserError(f"{path} must have a header with columns text,label")
        rows = [(r["text"], int(r["label"])) for r in reader]
    log.info("loaded %d examples from %s", len(rows), path)
    return rows


def _load_hub(spec: DatasetSpec, split: str) -> list[Example]:
    if not spec.hub_path:
        raise UserError(f"dataset {spec.name!r} has no Hub source; set paths.data_dir")
    try:
        import datasets

        ds = datasets.load_dataset(spec.hub_path, spec.hub_name, split=split)
    except Exception as exc:  # network, missing dataset, offline mode: all need the same fix
        raise UserError(
            f"could not load {spec.hub_path}/{spec.hub_name or ''} split {split!r} from the "
            f"Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "set paths.data_dir to a local mirror with <dataset>/<split>.csv"
        ) from exc
    return [(str(r[spec.text_column]), int(r[spec.label_column])) for r in ds]


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """A fixed, seeded sample of ``k`` of ``n`` indices (all of them, in order, when k >= n).

    The same (n, k, seed) gives the same sample for every pruner, so rows compare.
    """
    import numpy as np

    if k <= 0 or k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))
