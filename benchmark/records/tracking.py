"""Weights & Biases mirror of a job (the JSON record and its attack log stay the source of truth).

One W&B run per job, offline unless ``$WANDB_MODE`` or ``logger.mode`` says otherwise, always
finished. What a job's run holds:

- config: the job's resolved config (the record's ``cfg``); ``job_type`` ``dense`` or
  ``prune``, ``-attack`` when it attacks; ``group`` ``logger.group`` or the experiment name;
- history: the training curves of every training loop of the job (the dense fine-tune when it
  is not cached, every training-based pruner), on the ``train/global_step`` axis:
  ``train/loss``, ``train/loss_ema``, ``train/lr``, ``train/sparsity`` (masks enforced, or
  RobustT's expected gate sparsity), ``train/heldout_acc`` (where a method evaluates),
  ``train/phase`` / ``train/phase_step`` (which loop: ``dense fine-tune``, ``imp round 2``);
- ``attack/examples``: the per-example attack log as a ``wandb.Table`` (one column per field);
- the summary: the record's metrics (:data:`METRIC_KEYS`), status and the phases;
- an artifact ``record-<run_id>`` of type ``record``: the record JSON, metadata with the
  pruned-weights and dense cache keys.

:func:`log_tables` logs DataFrames (``python -m benchmark.aggregate``) as typed tables. The
suite logs from its own code: TextAttack's own W&B logger crashes with wandb 0.31.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# record field -> W&B summary key
METRIC_KEYS = {
    "dense_acc": "dense/acc", "clean_acc": "clean/acc", "attack_clean_acc": "attack/clean_acc",
    "aua": "attack/aua", "asr": "attack/asr", "avg_queries": "attack/avg_queries",
    "avg_perturbed_frac": "attack/perturbed_frac", "sparsity_actual": "prune/sparsity_actual",
    "prune_seconds": "prune/seconds", "prune_peak_mem_mb": "prune/peak_mem_mb",
    "n_success": "attack/n_success", "n_failed": "attack/n_failed",
    "n_skipped": "attack/n_skipped", "n_total": "attack/n_total",
}  # fmt: skip

MODES = ("offline", "online", "disabled")


def default_mode(mode: str | None = None) -> str:
    """The W&B mode of a run: ``mode`` when given, else ``$WANDB_MODE``, else ``offline``."""
    return mode or os.environ.get("WANDB_MODE") or "offline"


def one_line(exc: BaseException) -> str:
    """``<type>: <first line of the message>`` (at most 160 characters of it)."""
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


class WandbMirror:
    """Mirror one job to W&B; a no-op when ``enabled`` is false."""

    def __init__(
        self,
        enabled: bool = False,
        project: str = "robust-prune-bench",
        entity: str | None = None,
        mode: str | None = None,
        tags: list[str] | None = None,
        group: str | None = None,
        job_type: str | None = None,
        init_timeout: float = 30.0,
    ) -> None:
        """Args: W&B settings from ``conf/logger/*.yaml`` (``mode`` None: ``$WANDB_MODE``,
        else offline; ``group`` / ``job_type`` None: the experiment name / the job's kind;
        ``init_timeout``: seconds W&B may take to start, so an online run without a network
        fails in that time, not W&B's own 90 s and retries)."""
        self.enabled = enabled
        self.init_timeout = float(init_timeout)
        self.project, self.entity, self.mode = project, entity, mode
        self.tags = list(tags or [])
        self.group, self.job_type = group, job_type
        self.run: Any = None
        self._phases: list[dict[str, Any]] = []

    def start(
        self, run_id: str, group: str, config: dict, tags: list[str], out_dir: Path,
        job_type: str | None = None,
    ) -> None:  # fmt: skip
        """Open the W&B run of a job and take the training loops' metrics."""
        if not self.enabled:
            return
        import wandb

        from benchmark.errors import UserError

        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=self.project, entity=self.entity, mode=default_mode(self.mode),
                group=self.group or group, job_type=self.job_type or job_type, name=run_id,
                config=config, tags=[*self.tags, *tags], dir=str(out_dir),
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=self.init_timeout),
            )  # fmt: skip
            self.run.define_metric("train/global_step")
            self.run.define_metric("train/*", step_metric="train/global_step")
        except Exception as exc:  # no login, no network, bad settings
            raise UserError(
                f"W&B could not start within logger.init_timeout={self.init_timeout:g} s "
                f"({one_line(exc)}); use logger.mode=offline or logger=none"
            ) from exc
        from benchmark.training.loop import set_metrics_sink

        self._phases = []
        set_metrics_sink(self.log_metrics)

    def log_metrics(self, metrics: dict[str, float], step: int, phase: str) -> None:
        """One point of a training curve (the sink of :mod:`benchmark.training.loop`)."""
        if self.run is None:
            return
        if not self._phases or self._phases[-1]["name"] != phase:
            self._phases.append({"name": phase, "first_step": step, "last_step": step})
        self._phases[-1]["last_step"] = step
        row = {f"train/{k}": v for k, v in metrics.items()}
        self.run.log({**row, "train/global_step": step, "train/phase": phase})

    def log_attack_log(self, path: Path | None) -> None:
        """The per-example attack log (``<run_id>.attack.jsonl.gz``) as ``attack/examples``."""
        if self.run is None or path is None or not Path(path).is_file():
            return
        try:
            from benchmark.records.logs import read_rows

            rows = read_rows(path)
            if rows:
                self.run.log({"attack/examples": rows_table(rows)})
        except Exception as exc:  # the log on disk is what counts
            log.warning("W&B: attack log not mirrored (%s)", one_line(exc))

    def log_record(
        self, record: dict[str, Any], record_file: Path | None = None,
        attack_log: Path | None = None,
    ) -> None:  # fmt: skip
        """Put the record's metrics and status into the summary; the attack log as a table;
        the record file and the cache keys as an artifact of type ``record``."""
        if self.run is None:
            return
        summary: dict[str, Any] = {"status": record.get("status"), "run_id": record.get("run_id")}
        for field, key in METRIC_KEYS.items():
            value = record.get(field)
            if isinstance(value, (int, float)) and not (
                isinstance(value, float) and math.isnan(value)
            ):
                summary[key] = value
        if self._phases:
            summary["train/phases"] = self._phases
        self.run.summary.update(summary)
        self.log_attack_log(attack_log)
        if record_file is not None and Path(record_file).is_file():
            try:
                self.run.log_artifact(record_artifact(record, Path(record_file), attack_log))
            except Exception as exc:
                log.warning("W&B: record artifact not logged (%s)", one_line(exc))

    @property
    def run_id(self) -> str | None:
        """The W&B run id, once started."""
        return getattr(self.run, "id", None)

    def finish(self, failed: bool = False) -> None:
        """Close the run (always called, in ``finally``)."""
        if self.run is not None:
            from benchmark.training.loop import set_metrics_sink

            set_metrics_sink(None)
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def job_type_of(pruner: str, attacks: bool) -> str:
    """``dense`` (pruner ``none``) or ``prune``, with ``-attack`` when the job attacks."""
    return ("dense" if pruner == "none" else "prune") + ("-attack" if attacks else "")


def record_artifact(record: dict[str, Any], record_file: Path, attack_log: Path | None = None):
    """The ``record-<run_id>`` artifact: the record JSON (and the attack log when given),
    with the pruned-weights and dense cache keys in its metadata."""
    import wandb

    keys = {
        "run_id": record.get("run_id"), "status": record.get("status"),
        "pruned_key": (record.get("prune_info") or {}).get("key"),
        "dense_key": (record.get("dense_info") or {}).get("key"),
        "pruned_cache": f"pruned/{(record.get('prune_info') or {}).get('key')}",
    }  # fmt: skip
    art = wandb.Artifact(f"record-{record.get('run_id')}", type="record", metadata=keys)
    art.add_file(str(record_file), name="record.json")
    if attack_log is not None and Path(attack_log).is_file():
        art.add_file(str(attack_log), name=Path(attack_log).name.split(".", 1)[1])
    return art


def rows_table(rows: list[dict[str, Any]]):
    """A ``wandb.Table`` of dict rows: the union of their keys as columns (first-seen order),
    missing fields None; nested values as JSON text."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    import pandas as pd

    df = pd.DataFrame([[_cell(row.get(c)) for c in columns] for row in rows], columns=list(columns))
    return typed_table(df)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


# "88.3", "88.3 ± 1.2", "88.3 [86.0, 90.3]", "12.2 [10.2, 14.5] / 86.2" (formatted table cells)
_NUM = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_CELL = re.compile(
    rf"^\s*({_NUM})(?:\s*±\s*({_NUM}))?(?:\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*\])?"
    rf"(?:\s*/\s*({_NUM}))?\s*$"
)
_MISSING = {"", "-", "—", "not run", "n/a", "nan", "none"}


def typed_frame(df):
    """``df`` with numbers as numbers: text columns of numbers become numeric, and formatted
    cells (``mean [low, high] / second``) are split into numeric columns (``<col>``, ``<col> std``,
    ``<col> ci_low``, ``<col> ci_high``; ``X Aua/Suc %`` into ``X Aua %`` ... and ``X Suc %``),
    the text kept as ``<col> (text)``. Markers such as ``not run`` become NaN."""
    import pandas as pd

    out: dict[str, Any] = {}
    for col in df.columns:
        s = df[col]
        name = str(col)
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            out[name] = s
            continue
        text = s.astype("string").str.strip()
        present = s.notna() & ~text.str.lower().isin(_MISSING).fillna(True)
        if not present.any():
            out[name] = s
            continue
        as_num = _floats(text.where(present))
        if as_num[present].notna().all():
            out[name] = as_num
            continue
        parts = text.where(present).str.extract(_CELL)
        if parts[0][present].notna().all():
            first, second = _split_name(name)
            labels = [first, f"{first} std", f"{first} ci_low", f"{first} ci_high", second]
            for j, label in enumerate(labels):
                if parts[j].notna().any():
                    out[label] = _floats(parts[j])
            out[f"{name} (text)" if name in out else name] = s
            continue
        out[name] = s
    return pd.DataFrame(out, index=df.index)


def _floats(s):
    import pandas as pd

    return pd.to_numeric(s.astype(object).where(s.notna(), None), errors="coerce").astype(float)


def _split_name(col: str) -> tuple[str, str]:
    """Column names of a cell's first and second number (``A/B %`` -> ``A %``, ``B %``)."""
    m = re.match(r"^(.*?)(\S+)/(\S+)(\s*%?)$", col)
    if m:
        prefix, a, b, pct = m.groups()
        return f"{prefix}{a}{pct}", f"{prefix}{b}{pct}"
    return col, f"{col} (2)"


def typed_table(df):
    """A ``wandb.Table`` of :func:`typed_frame` (missing text None, so columns stay typed)."""
    import pandas as pd
    import wandb

    frame = typed_frame(df).reset_index(drop=True)
    for col in frame.columns:
        dtype = frame[col].dtype
        if isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(
            dtype
        ):  # nullable Int64 / Float64: NaN for missing
            frame[col] = frame[col].astype(float)
        elif not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    try:
        return wandb.Table(dataframe=frame)
    except TypeError:  # a column wandb cannot type: mixed values
        return wandb.Table(dataframe=frame, allow_mixed_types=True)


def log_tables(
    tables: dict[str, Any], project: str = "robust-prune-bench", mode: str | None = None,
    out_dir: Path | None = None, name: str = "aggregate", entity: str | None = None,
) -> bool:  # fmt: skip
    """Log DataFrames as typed tables ``tables/<name>`` to one run of job type ``aggregate``
    (mode None: ``$WANDB_MODE``, else offline). Returns whether they were logged; a W&B
    failure is one warning line."""
    if not tables:
        return False
    import wandb

    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=project, entity=entity, job_type="aggregate", group="aggregate", name=name,
            mode=default_mode(mode), dir=None if out_dir is None else str(out_dir),
            reinit="finish_previous",
        )  # fmt: skip
    except Exception as exc:
        log.warning("W&B: tables not logged (%s)", one_line(exc))
        return False
    try:
        run.log({f"tables/{key}": typed_table(df) for key, df in tables.items()})
        run.summary.update({f"tables/{key}/rows": len(df) for key, df in tables.items()})
    except Exception as exc:
        log.warning("W&B: tables not logged (%s)", one_line(exc))
        return False
    finally:
        run.finish()
    return True
