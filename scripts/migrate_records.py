"""Re-key committed records after a change of run identity, so that none is orphaned.

A record stores the identity it was hashed from (``cfg``). A migration edits that identity the
way the code change did (e.g. a renamed ``_target_``), recomputes the run id with the current
:func:`benchmark.records.store.run_id_of`, and moves the record and its per-example attack log
(``<run_id>.attack.jsonl``) to the new id. Records whose id already matches are left alone, so
the script is safe to run twice.

    python scripts/migrate_records.py [--results-dir results] [--dry-run]

Each migration is a function ``cfg -> cfg`` in ``MIGRATIONS``, named after the change.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.records.identity import data_source, normalise  # noqa: E402
from benchmark.records.store import run_id_of, write_json_atomic  # noqa: E402

# Module moves of the "house" regrouping (benchmark/<module>.py -> benchmark/<room>/<module>.py).
MOVED_TARGETS = {
    "benchmark.dense.": "benchmark.training.dense.",
    "benchmark.dense_recipes.": "benchmark.training.dense_recipes.",
}


def _rename_targets(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _rename_targets(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename_targets(v) for v in obj]
    if isinstance(obj, str):
        for old, new in MOVED_TARGETS.items():
            if obj.startswith(old):
                return new + obj[len(old) :]
    return obj


def _add_data_source(cfg: dict[str, Any]) -> dict[str, Any]:
    """Identity includes the data source (contract): the fingerprint of the files the record's
    ``paths.data_dir`` holds now. Run only where those files are the ones the records were made
    from (here: the shared SST-2 mirror, unchanged since)."""
    if "data_source" in cfg:
        return cfg
    data_dir = (cfg.get("paths") or {}).get("data_dir")
    return {**cfg, "data_source": data_source(cfg["dataset"], data_dir)}


def _attack_time_limit(cfg: dict[str, Any]) -> dict[str, Any]:
    """New attack key ``max_seconds_per_example`` (default null: no limit, as before)."""
    attack = cfg.get("attack")
    if not isinstance(attack, dict) or attack.get("recipe") == "none":
        return cfg
    return {
        **cfg,
        "attack": {**attack, "max_seconds_per_example": attack.get("max_seconds_per_example")},
    }


MIGRATIONS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("house: module moves", _rename_targets),
    ("contract: normalised values", normalise),
    ("contract: data source in identity", _add_data_source),
    ("contract: per-example attack time limit", _attack_time_limit),
]


def migrate(results_dir: Path, dry_run: bool = False) -> list[tuple[Path, str]]:
    """Apply every migration; return (old path, new run id) of each record that moved."""
    moved = []
    for path in sorted((results_dir / "runs").glob("*/*.json")):
        rec = json.loads(path.read_text())
        cfg = rec.get("cfg")
        if not isinstance(cfg, dict):
            continue
        for _, fn in MIGRATIONS:
            cfg = fn(cfg)
        new_id = run_id_of(cfg)
        if new_id == rec["run_id"] and cfg == rec["cfg"]:
            continue
        old_id = rec["run_id"]
        rec["cfg"], rec["run_id"] = cfg, new_id
        rec.setdefault("migrated_from", []).append(old_id)
        moved.append((path, new_id))
        if dry_run:
            continue
        target = path.with_name(f"{new_id}.json")
        if target.exists() and target != path:
            raise SystemExit(f"error: {target} exists; two records migrate to one id")
        write_json_atomic(target, rec)
        log_old = path.with_name(f"{old_id}.attack.jsonl")
        if log_old.exists():
            log_old.rename(path.with_name(f"{new_id}.attack.jsonl"))
        if target != path:
            path.unlink()
    return moved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=ROOT / "results")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    moved = migrate(args.results_dir, args.dry_run)
    for path, new_id in moved:
        print(f"{path.relative_to(args.results_dir)} -> {new_id}")
    print(f"{len(moved)} record(s) {'would move' if args.dry_run else 'moved'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
