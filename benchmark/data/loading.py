"""Task data from the Hugging Face Hub or from a local mirror, never one silently for the other.

With ``paths.data_dir`` set, a split is read from ``<data_dir>/<local_name>/<file>`` (CSV with
columns ``text,label``); a missing file is a :class:`UserError` naming the path and the key.
With ``paths.data_dir`` unset, the split comes from the Hub via ``datasets.load_dataset``; a
failure is a :class:`UserError` that says to set ``paths.data_dir``.
"""

from __future__ import annotations

import csv
import logging
import sys
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
    rows = _read_csv(path, spec.text_column, spec.label_column)
    check_labels(rows, spec, f"{path}")
    log.info("loaded %d examples from %s", len(rows), path)
    return rows


def _read_csv(path: Path, text_column: str = "text", label_column: str = "label") -> list[Example]:
    """Rows of a CSV with a header, validated with the file and line named: UTF-8 (a BOM is
    accepted), no ragged rows, integer labels, at least one row; fields of any length.

    The columns are ``text`` and ``label``, or, where the header has no such columns, the
    dataset's ``text_column`` / ``label_column`` (a CSV of your own with other names)."""
    csv.field_size_limit(sys.maxsize)
    rows: list[Example] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            cols = [h.strip() for h in header or []]
            tcol = "text" if "text" in cols else text_column
            lcol = "label" if "label" in cols else label_column
            if tcol not in cols or lcol not in cols:
                raise UserError(
                    f"{path} must have a header with columns text,label (or the dataset's "
                    f"text_column={text_column!r}, label_column={label_column!r})"
                )
            ti, li = cols.index(tcol), cols.index(lcol)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(cols):
                    raise UserError(f"{path}:{line}: {len(row)} fields, the header has "
                                    f"{len(cols)}")  # fmt: skip
                try:
                    label = int(row[li].strip())
                except ValueError:
                    raise UserError(f"{path}:{line}: label {row[li]!r} is not an integer") from None
                rows.append((row[ti], label))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise UserError(f"{path} has no examples")
    return rows


def check_labels(rows: list[Example], spec: DatasetSpec, where: str) -> None:
    """Labels must lie in [0, num_labels) (``dataset.num_labels``)."""
    for i, (_, y) in enumerate(rows):
        if not 0 <= y < spec.num_labels:
            raise UserError(
                f"{where}: example {i + 1} has label {y}, outside [0, {spec.num_labels}) "
                f"(dataset.num_labels={spec.num_labels})"
            )


def split_warnings(rows: list[Example], spec: DatasetSpec, split: str) -> list[str]:
    """Warnings a record carries about a split (an evaluation split with one class only); a
    training split whose classes do not match ``dataset.num_labels`` is a :class:`UserError`
    (one class included), checked on a cache hit as on a fresh run."""
    labels = {y for _, y in rows}
    out = []
    if split == spec.train_split and len(labels) != spec.num_labels:
        raise UserError(
            f"split {split!r} of {spec.name} has {len(labels)} class"
            f"{'es' if len(labels) != 1 else ''} but dataset.num_labels={spec.num_labels}; "
            "set dataset.num_labels or use a training split with every class"
        )
    if len(labels) == 1:
        out.append(f"split {split!r} of {spec.name} has one class only ({labels.pop()})")
    return out


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
    rows = [(str(r[spec.text_column]), int(r[spec.label_column])) for r in ds]
    check_labels(rows, spec, f"{spec.hub_path}/{spec.hub_name or ''} split {split!r}")
    return rows


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """A fixed, seeded sample of ``k`` of ``n`` indices (all of them, in order, when k >= n).

    The same (n, k, seed) gives the same sample for every pruner, so rows compare.
    """
    import numpy as np

    if k <= 0 or k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


def stratified_indices(labels: list[int], k: int, seed: int) -> list[int]:
    """A seeded, label-stratified sample of ``k`` of ``len(labels)`` indices, in split order.

    Each class gets its share of ``k`` (largest remainders break ties toward the larger
    class, then the smaller label), drawn without replacement under ``seed``; ``k >= n`` keeps
    every index. A split sorted by label (the IMDB mirror) still yields both classes, unlike
    its first ``k`` rows.
    """
    import numpy as np

    n = len(labels)
    if k <= 0 or k >= n:
        return list(range(n))
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    classes = sorted(by_class)
    exact = {c: k * len(by_class[c]) / n for c in classes}
    take = {c: int(exact[c]) for c in classes}
    rest = k - sum(take.values())
    order = sorted(classes, key=lambda c: (-(exact[c] - take[c]), -len(by_class[c]), c))
    for c in order[:rest]:
        take[c] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = by_class[c]
        chosen += [members[int(j)] for j in rng.choice(len(members), size=take[c], replace=False)]
    return sorted(chosen)
