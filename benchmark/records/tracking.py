"""Weights & Biases mirror of a job's record (the JSON record stays the source of truth).

One W&B run per job, offline unless ``logger.mode`` says otherwise, always finished. The
suite logs from its own code: TextAttack's own W&B logger crashes with wandb 0.31.
"""

from __future__ import annotations

import logging
import math
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


class WandbMirror:
    """Mirror one job to W&B; a no-op when ``enabled`` is false."""

    def __init__(
        self,
        enabled: bool = False,
        project: str = "robust-prune-bench",
        entity: str | None = None,
        mode: str = "offline",
        tags: list[str] | None = None,
    ) -> None:
        """Args: W&B settings from ``conf/logger/*.yaml``."""
        self.enabled = enabled
        self.project, self.entity, self.mode = project, entity, mode
        self.tags = list(tags or [])
        self.run: Any = None

    def start(self, run_id: str, group: str, config: dict, tags: list[str], out_dir: Path) -> None:
        """Open the W&B run of a job."""
        if not self.enabled:
            return
        import wandb

        from benchmark.errors import UserError

        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=self.project, entity=self.entity, mode=self.mode, group=group,
                name=run_id, config=config, tags=[*self.tags, *tags], dir=str(out_dir),
                reinit="finish_previous",
            )  # fmt: skip
        except Exception as exc:  # no login, no network, bad settings
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise UserError(
                f"W&B could not start ({type(exc).__name__}: {first}); use logger.mode=offline "
                "or logger=none"
            ) from exc

    def log_record(self, record: dict[str, Any]) -> None:
        """Put the record's metrics and status into the run summary."""
        if self.run is None:
            return
        summary = {"status": record.get("status"), "run_id": record.get("run_id")}
        for field, key in METRIC_KEYS.items():
            value = record.get(field)
            if isinstance(value, (int, float)) and not (
                isinstance(value, float) and math.isnan(value)
            ):
                summary[key] = value
        self.run.summary.update(summary)

    @property
    def run_id(self) -> str | None:
        """The W&B run id, once started."""
        return getattr(self.run, "id", None)

    def finish(self, failed: bool = False) -> None:
        """Close the run (always called, in ``finally``)."""
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
