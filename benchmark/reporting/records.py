"""Records and attack logs as a DataFrame: the layer every table kind reads.

:func:`load_records` reads every ``results/runs/**/<run_id>.json`` (and its
``<run_id>.attack.jsonl.gz`` attack log) into one row per record, with the configuration's
identity (:func:`config_identity`: the resolved ``cfg`` without the seed and the keys that do
not change results), the model label, the majority-class rate and the log's path;
:func:`dedupe` counts a job stored twice once. Identities group records into configurations:
:func:`identity_differences` names what separates configurations that share their display keys,
:func:`identity_without_attack` drops the attack (a summary row spans attacks), and
:func:`is_default_pruner` / :func:`pruner_is` tell a pruner at its option's defaults or at given
settings. :func:`read_attack_log` and :func:`log_values` read the per-example logs the paired
tests and bootstrap intervals use.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.records.logs import find_log, log_lines, read_text, run_id_of_log
from benchmark.records.logs import log_path as log_file_path
from benchmark.records.logs import resolve as resolve_log
from benchmark.records.store import CorruptRecord, missing_keys, read_record, with_defaults

log = logging.getLogger(__name__)


KEYS = ["model", "dense", "dataset", "pruner", "budget", "sparsity_target", "attack"]
ROOT = Path(__file__).resolve().parents[2]


def config_identity(cfg: dict[str, Any] | None, rec: dict[str, Any]) -> dict[str, Any]:
    """What makes a record's configuration: its resolved ``cfg`` minus the seed and what follows
    from it (``attack.seed``, ``dense.seed`` when equal to ``seed``), minus the keys that do
    not change results (the run id's ``NON_IDENTITY_KEYS`` and ``NON_IDENTITY_NESTED``), minus
    ``exp_name`` and ``attack_build``; plus the record's own names (model, dataset, pruner,
    attack, sparsity, training budget), so that records without a full ``cfg`` still separate.
    """
    from benchmark.records.store import (
        ATTACK_IDENTITY,
        NON_IDENTITY_KEYS,
        without_nested_non_identity,
    )

    cfg = copy.deepcopy(cfg or {})
    seed = cfg.get("seed", rec.get("seed"))
    drop = {*NON_IDENTITY_KEYS, "seed", "exp_name", "attack_build"}
    ident = without_nested_non_identity({k: v for k, v in cfg.items() if k not in drop})
    if isinstance(ident.get("attack"), dict):
        ident["attack"].pop("seed", None)
        for key in ATTACK_IDENTITY:  # the attack's parts of the run id travel with the attack
            if key in ident:
                ident["attack"][key] = ident.pop(key)
    if isinstance(ident.get("dense"), dict) and ident["dense"].get("seed", object()) == seed:
        ident["dense"].pop("seed")
    ident["_record"] = {k: rec.get(k) for k in ("model", "dataset", "pruner", "attack",
                                                "sparsity_target", "budget", "dense")}  # fmt: skip
    return ident


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Identity blocks that name where bytes came from (file fingerprints, Hub commits): a difference
# is shown as one item, ``<key>=<folder or name>#<hash of the block>``, not one per nested field.
SOURCE_BLOCKS = ("calibration_source", "data_source", "sources")


def _source_label(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    from benchmark.records.store import short_hash

    name = block.get("folder") or block.get("name") or block.get("repo") or block.get("kind")
    return f"{name}#{short_hash(block, 8)}" if name else f"#{short_hash(block, 8)}"


def identity_differences(identities: list[str]) -> dict[str, str]:
    """For configurations that share their display keys: ``k=v`` of the keys that differ (a
    source block, :data:`SOURCE_BLOCKS`, as one item)."""
    idents = [json.loads(i) for i in identities]
    flats = [
        _flatten({k: (_source_label(v) if k in SOURCE_BLOCKS else v) for k, v in i.items()})
        for i in idents
    ]
    keys = sorted({k for f in flats for k in f})
    diff = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    return {
        ident: ", ".join(f"{k}={f.get(k)}" for k in diff)
        for ident, f in zip(identities, flats, strict=True)
    }


def identity_without_attack(identity: str | None) -> str:
    """A configuration's identity without its attack (a summary row spans attacks)."""
    if not identity:
        return ""
    d = json.loads(identity)
    d.pop("attack", None)
    d.pop("_record", None)
    if isinstance(d.get("choices"), dict):
        d["choices"] = {k: v for k, v in d["choices"].items() if k != "attack"}
    return json.dumps(d, sort_keys=True)


PROTOCOL_DEFAULT = re.compile(r"^\$\{oc\.select:protocol\.([\w.]+),([^${}]*)\}$")
"""An option value a preset may set through its protocol: ``${oc.select:protocol.KEY,FALLBACK}``."""


@functools.cache
def protocol_values(key: str) -> tuple:
    """Every value a preset (``conf/experiment/*.yaml``) or the root config sets for
    ``protocol.<key>``."""
    from benchmark.jobs.registry import CONF_DIR
    from benchmark.records.staleness import option_file

    found: list = []
    presets = [("experiment", p.stem) for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))]
    for group, name in [(".", "run"), *presets]:
        node: Any = (option_file(group, name) or {}).get("protocol")
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, dict) and node not in found:
            found.append(node)
    return tuple(found)


def option_defaults(option: dict[str, Any]) -> dict[str, tuple]:
    """The values at which each key of a group option counts as its default:
    the literal it sets, or for ``${oc.select:protocol.KEY,FALLBACK}`` the fallback and every
    value a preset pins through its protocol (e.g. AKR's ``obs_impl``: ``compiled``, and
    ``lowrank`` where a preset keeps its committed rows' solver). Other interpolations are
    left aside."""
    import yaml

    out: dict[str, tuple] = {}
    for key, value in option.items():
        if key == "defaults":
            continue
        if isinstance(value, str) and value.startswith("${"):
            m = PROTOCOL_DEFAULT.match(value)
            if m:
                out[key] = (yaml.safe_load(m.group(2)), *protocol_values(m.group(1)))
            continue
        out[key] = (value,)
    return out


def is_default_pruner(identity: str) -> bool:
    """Whether a configuration's pruner section equals its option's defaults
    (``conf/pruner/<name>.yaml``: every key the option sets, see :func:`option_defaults`)."""
    from benchmark.records.staleness import option_file

    ident = json.loads(identity)
    name = (ident.get("_record") or {}).get("pruner")
    stored = ident.get("pruner")
    option = option_file("pruner", str(name)) if name else None
    if not isinstance(stored, dict) or option is None:
        return False
    return all(stored.get(k) in ok for k, ok in option_defaults(option).items())


def pruner_is(identity: str, pruner: str, changed: tuple) -> bool:
    """Whether a configuration is ``pruner`` at its option's defaults with ``changed`` set
    (every key the option sets, as :func:`is_default_pruner`)."""
    from benchmark.records.staleness import option_file

    ident = json.loads(identity)
    stored = ident.get("pruner")
    option = option_file("pruner", pruner)
    if (ident.get("_record") or {}).get("pruner") != pruner or not isinstance(stored, dict):
        return False
    want = option_defaults(option or {})
    want.update({k: (v,) for k, v in dict(changed).items()})
    return all(stored.get(k) in ok for k, ok in want.items())


@functools.cache
def _default_pretrained(model: str) -> str | None:
    path = ROOT / "conf" / "model" / f"{model}.yaml"
    if not path.is_file():
        return None
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("pretrained")


def model_label(model: str | None, cfg: dict[str, Any] | None) -> str | None:
    """The model option, with the local folder name when ``pretrained`` is not its default."""
    pretrained = ((cfg or {}).get("model") or {}).get("pretrained")
    if model is None or pretrained is None or ":" in str(model):  # schema 3 names it already
        return model
    default = _default_pretrained(str(model))
    if default is None or pretrained == default:
        return model
    return f"{model} ({Path(str(pretrained).rstrip('/')).name})"


@functools.cache
def _majority_from_file(path: str, label_column: str) -> float | None:
    try:
        labels = pd.read_csv(path)[label_column]
    except (OSError, KeyError, ValueError):
        return None
    return float(labels.value_counts().max() / len(labels)) if len(labels) else None


def majority_rate(rec: dict[str, Any], cfg: dict[str, Any] | None) -> float | None:
    """Share of the majority class on the evaluation split: the record's ``majority_rate``,
    else counted from the split's CSV under ``paths.data_dir``/``dataset.local_name``."""
    if rec.get("majority_rate") is not None:
        return float(rec["majority_rate"])
    cfg = cfg or {}
    ds = cfg.get("dataset") or {}
    data_dir = (cfg.get("paths") or {}).get("data_dir")
    split = ds.get("eval_split") or rec.get("split")
    if not (data_dir and split and ds.get("local_name")):
        return None
    path = Path(data_dir) / str(ds["local_name"]) / f"{split}.csv"
    return _majority_from_file(str(path), str(ds.get("label_column") or "label"))


LOG_RESULTS = {"successful", "failed", "skipped", "limit"}


@functools.lru_cache(maxsize=256)
def _read_log_cached(path: str, mtime: float) -> tuple[dict[str, Any], ...] | None:
    rows = []
    try:
        # every line, a last one without its newline too (a cut-off log is unreadable here)
        for line in log_lines(read_text(path) + "\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("result") == "success":  # older spelling
                row["result"] = "successful"
            rows.append(row)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("unreadable attack log %s: %s", path, exc)
        return None
    return tuple(rows)


def read_attack_log(path: str | Path | None) -> list[dict[str, Any]] | None:
    """The rows of ``<run_id>.attack.jsonl.gz`` (or a plain ``.attack.jsonl`` of an older
    schema; ``None`` when it is missing or unreadable)."""
    if path is None or not isinstance(path, (str, Path)) or not str(path):
        return None  # missing (NaN in a DataFrame column)
    p = resolve_log(path)
    if not p.is_file():
        return None
    rows = _read_log_cached(str(p), p.stat().st_mtime)
    return None if rows is None else list(rows)


def transfer_label(cfg: dict[str, Any], folder: Path | None = None) -> str:
    """``transfer (<source attack>)`` for an ``attack=transfer`` record: the attack of the
    record beside its source log (``transfer (?)`` when that record is not there)."""
    source = ((cfg.get("attack") or {}).get("options") or {}).get("source")
    src_attack = "?"
    # schema 3: the source's (migrated) run id is identity; the path is as the job was given it
    run_id = (cfg.get("transfer_source") or {}).get("run_id") or (
        run_id_of_log(source) if source else None
    )
    places = [p for p in (folder, Path(str(source)).parent if source else None) if p]
    for place in places if run_id else []:  # beside the transfer record first (any clone)
        with contextlib.suppress(OSError, json.JSONDecodeError):
            src_attack = (
                json.loads((place / f"{run_id}.json").read_text(encoding="utf-8")).get("attack")
                or "?"
            )
            break
    return f"transfer ({src_attack})"


def log_problem(path: Path, rec: dict[str, Any]) -> str | None:
    """Why an attack log cannot stand for its record (None when it can): empty, unreadable,
    or its lines disagree with the record's counts (``n_total``, ``n_failed``)."""
    if path.stat().st_size == 0:
        return "empty file"
    rows = read_attack_log(path)
    if rows is None:
        return "unreadable"
    if rec.get("n_total") is not None and len(rows) != int(rec["n_total"]):
        return f"{len(rows)} lines, the record counts n_total={int(rec['n_total'])}"
    failed = sum(r.get("result") == "failed" for r in rows)
    if rec.get("n_failed") is not None and failed != int(rec["n_failed"]):
        return f"{failed} lines survived, the record counts n_failed={int(rec['n_failed'])}"
    return None


def attack_log_path(record_path: Path) -> Path:
    """Where the attack log of a record lives (beside it): the compressed log, or the plain log
    of an older schema when only that exists."""
    run_id = record_path.name.removesuffix(".json")
    return find_log(record_path.parent, run_id) or log_file_path(record_path.parent, run_id)


def log_values(rows: list[dict[str, Any]], metric: str) -> list[tuple[Any, float]]:
    """(example_index, value) per example of a log for a proportion of the attack sample.

    ``aua``: survived (``failed``); ``attack_clean_acc``: attacked (not ``skipped``); ``asr``:
    broken (``successful``) among the examples attacked to the end (successful or failed).
    """
    out = []
    for i, r in enumerate(rows):
        key = r.get("example_index", i)
        res = r.get("result")
        if metric == "aua":
            out.append((key, float(res == "failed")))
        elif metric == "attack_clean_acc":
            out.append((key, float(res != "skipped")))
        elif metric == "asr" and res in ("successful", "failed"):
            out.append((key, float(res == "successful")))
    return out


def load_records(results_dir: Path) -> pd.DataFrame:
    """All records under ``results_dir/runs`` as a DataFrame (one row per record).

    Adds ``_identity`` (the configuration, JSON), ``model_label``, ``majority_rate``,
    ``_log`` (the attack log's path, or ``None`` when it is missing) and ``_dense_noise``
    (the perturbation of a noise-floor record, JSON, else ``None``: :func:`without_noise`).
    """
    rows = []
    for path in sorted((Path(results_dir) / "runs").glob("*/*.json")):
        try:
            rec = read_record(path)
        except CorruptRecord as exc:  # truncated or hand-edited: named, and the rest goes on
            log.warning("skipping %s", exc)
            continue
        if rec is None:  # removed while listing
            continue
        missing = missing_keys(rec)
        if missing:  # a hand edit or partial copy: named, and read with empty values
            log.warning("record %s lacks key(s) %s; read with those empty", path,
                        ", ".join(missing))  # fmt: skip
        rec = with_defaults(rec)  # every field a column, also where an edit dropped one
        cfg = rec.pop("cfg", None) or {}
        # The dense recipe and the W&B mode live only in the resolved config.
        rec["dense"] = (cfg.get("choices") or {}).get("dense")
        rec["budget"] = (cfg.get("budget") or {}).get("name") or "paper"  # training budget
        logger = cfg.get("logger") or {}
        rec["logger_mode"] = logger.get("mode") if logger.get("enabled") else None
        rec["logger_project"] = logger.get("project")
        if rec.get("attack") == "transfer":  # name the source attack: one column per source
            rec["attack"] = transfer_label(cfg, path.parent)
        rec["_identity"] = json.dumps(config_identity(cfg, rec), sort_keys=True, default=str)
        rec["model_label"] = model_label(rec.get("model"), cfg)
        rec["majority_rate"] = majority_rate(rec, cfg)
        log_path = attack_log_path(path)
        rec["_log"] = str(log_path) if log_path.is_file() else None
        if rec["_log"] and rec.get("status") == "ok":
            problem = log_problem(log_path, rec)
            if problem:  # named once, and left out of every paired test
                log.warning("attack log %s left out: %s", log_path, problem)
                rec["_log"], rec["_log_problem"] = None, f"{log_path.name}: {problem}"
        noise = cfg.get("dense_noise")
        rec["_dense_noise"] = json.dumps(noise, sort_keys=True) if noise else None
        rec["_path"] = str(path)
        rows.append(rec)
    if not rows:
        return pd.DataFrame(columns=[*KEYS, "status"])
    df = pd.json_normalize(rows)
    return df


def without_noise(df: pd.DataFrame) -> pd.DataFrame:
    """The records of unperturbed dense models: a noise-floor record (``dense_noise`` set,
    :mod:`benchmark.models.noise`) measures numerical noise and belongs to no paper table,
    summary, comparison or claim; only an effects row that names its perturbation reads it."""
    if df.empty or "_dense_noise" not in df:
        return df
    return df[df["_dense_noise"].isna()]


RESULT_FIELDS = ("clean_acc", "attack_clean_acc", "aua", "asr", "n_total", "n_success",
                 "n_failed", "n_skipped", "sparsity_actual")  # fmt: skip


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One record per job: the same ``run_id`` found twice, or the same configuration and seed
    with the same results (a job copied under another exp_name), is kept once (the one with an
    attack log, then the newest). Same configuration and seed with DIFFERENT results are kept
    (with a warning): they are different runs, not copies.
    """
    if df.empty:
        return df
    out = df.copy()
    if "_identity" not in out:
        out["_identity"] = [
            json.dumps({k: r.get(k) for k in KEYS}, default=str) for r in out.to_dict("records")
        ]
    has_log = out["_log"].notna() if "_log" in out else pd.Series(False, index=out.index)
    started = out["started_at"].fillna("") if "started_at" in out else ""
    out = out.assign(_haslog=has_log, _started=started)
    out = out.sort_values(["_haslog", "_started"], ascending=False, kind="stable")
    n0 = len(out)
    if "run_id" in out:
        ids = out["run_id"]
        out = out[ids.isna() | ~ids.duplicated(keep="first")]
    fields = [f for f in RESULT_FIELDS if f in out]
    # element-wise str: pandas 3's astype(str) keeps missing values as NaN (records without an
    # attack, e.g. attack=none, have no counts), which "|".join cannot take
    sig = (out[fields].round(9).map(lambda v: "nan" if pd.isna(v) else str(v))
           .agg("|".join, axis=1)) if fields else ""  # fmt: skip
    seed = out["seed"].astype(str) if "seed" in out else ""
    key = out["_identity"].astype(str) + "#" + seed
    out = out[~(key + "#" + sig).duplicated(keep="first")]
    key = key.loc[out.index]
    clash = key[key.duplicated(keep=False)]
    if len(clash):
        log.warning("%d record(s) share configuration and seed but differ in results; kept "
                    "apart: %s", len(clash), sorted(set(out.loc[clash.index, "_path"]
                    if "_path" in out else clash.index)))  # fmt: skip
    # the run of a record: its seed, numbered when results of one seed differ (kept apart)
    out["_run"] = (
        (out["seed"].astype(str) if "seed" in out else "0")
        + "#"
        + (key.groupby(key).cumcount().astype(str))
    )
    if len(out) < n0:
        log.info("dedupe: %d duplicate record(s) of the same job counted once", n0 - len(out))
    return out.drop(columns=["_haslog", "_started"]).sort_index()


def report_stale(results_dir: Path) -> list[tuple[Path, list[str]]]:
    """Log the records whose identity no longer matches the code (they stay in the tables,
    but a rerun of their command would not find them)."""
    from benchmark.records.staleness import stale_records

    stale = stale_records(results_dir)
    if stale:
        log.warning("%d record(s) no longer match the current configs (rerun them, or migrate "
                    "with scripts/migrate_records.py when numbers cannot have changed):",
                    len(stale))  # fmt: skip
        for path, reasons in stale:
            log.warning("  %s: %s", Path(path).relative_to(results_dir), "; ".join(reasons))
    return stale
