"""Records whose identity no longer matches the code.

A record is stale when the option it names in a config group no longer exists, or the
option's ``version`` or set of keys changed since the record was written (a method change that
can change numbers bumps its version, a new key changes the run id). Such a record will never
be found again by a rerun of the same command: ``python -m benchmark.aggregate`` lists them so
that they are migrated (``scripts/migrate_records.py``, when the change did not change numbers)
or rerun (when it did).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from benchmark.jobs.registry import CONF_DIR

GROUPS = ("model", "dataset", "dense", "pruner", "attack")


@functools.lru_cache(maxsize=256)
def option_file(group: str, name: str) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _preset_keys(exp_name: str, group: str) -> frozenset[str]:
    """Keys an experiment preset of this name sets in ``group`` for every option of it (e.g.
    ``attack.max_seconds_per_example`` from its protocol): present in the record though no
    option file names them, so not "lost"."""
    section = (option_file("experiment", exp_name) or {}).get(group) if exp_name else None
    return frozenset(section) if isinstance(section, dict) else frozenset()


def stale_reasons(record: dict[str, Any]) -> list[str]:
    """Why ``record`` no longer matches the current configs (empty list: it matches)."""
    cfg = record.get("cfg") or {}
    choices = cfg.get("choices") or {}
    reasons = []
    for group in GROUPS:
        name = choices.get(group)
        stored = cfg.get(group)
        if not name or not isinstance(stored, dict):
            continue
        current = option_file(group, str(name))
        if current is None:
            reasons.append(f"{group} {name!r} no longer exists")
            continue
        if "version" in current and current.get("version") != stored.get("version"):
            reasons.append(f"{group} {name!r} version {stored.get('version')} -> "
                           f"{current.get('version')}")  # fmt: skip
        added = sorted(set(current) - set(stored) - {"defaults"})
        removed = sorted(
            set(stored) - set(current) - _preset_keys(str(record.get("exp_name") or ""), group)
        )
        if added:
            reasons.append(f"{group} {name!r} has new keys {added}")
        if removed and group not in ("model", "dataset"):  # specs fill in their defaults
            reasons.append(f"{group} {name!r} lost keys {removed}")
    return reasons


def stale_records(results_dir: Path) -> list[tuple[Path, list[str]]]:
    """(path, reasons) of every stale ``ok`` record under ``results_dir/runs``."""
    from benchmark.records.store import CorruptRecord, read_record

    out = []
    for path in sorted(Path(results_dir, "runs").glob("*/*.json")):
        if path.name.endswith(".failed.json"):
            continue
        try:
            rec = read_record(path)
        except CorruptRecord:
            continue  # unreadable and hand-broken files are named by the loader
        if rec is None or rec.get("status") != "ok":
            continue
        reasons = stale_reasons(rec)
        if reasons:
            out.append((path, reasons))
    return out
