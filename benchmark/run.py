"""``python -m benchmark.run``: one job (or a ``-m`` sweep of jobs) from the Hydra config.

Each job loads or fine-tunes the dense model, prunes it, measures clean accuracy and runs the
attack, then writes one JSON record to ``results/runs/<exp_name>/<run_id>.json``. A job
whose record exists (status ok) is skipped unless ``force=true``. Bad input (unknown option,
sparsity outside [0, 1), missing file or resource) prints one line and exits with code 2.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.jobs.registry import GROUPS, check_option

log = logging.getLogger("benchmark.run")
ROOT = Path(__file__).resolve().parents[1]
SWEEP_SYNTAX = re.compile(r"[()\[\]{}$]")  # range(), choice(), interpolations: left to Hydra


def check_overrides(argv: list[str]) -> None:
    """Validate simple ``group=a,b`` and ``sparsity=x,y`` overrides before Hydra starts."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if SWEEP_SYNTAX.search(value):
            continue
        for item in value.split(","):
            item = item.strip()
            if key in GROUPS and key != "paths":
                check_option(key, item)
            elif key in ("sparsity", "sparsity_target"):
                try:
                    s = float(item)
                except ValueError:
                    raise UserError(f"sparsity must be a number in [0, 1), got {item!r}") from None
                if not 0.0 <= s < 1.0:
                    raise UserError(f"sparsity must be in [0, 1), got {item}")


def _hydra_main() -> Any:
    import hydra
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(ROOT))

    @hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="run")
    def task(cfg) -> dict[str, Any] | None:
        return run_task(cfg)

    return task()


def run_task(cfg) -> dict[str, Any] | None:
    """The body of one Hydra job; returns the record as a dict."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from benchmark.jobs.build import build_job, run_job

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        job, tracker = build_job(cfg, HydraConfig.get().runtime.choices)
        return run_job(job, tracker, force=cfg.force, skip_existing=cfg.skip_existing)
    except UserError as exc:
        log.error("error: %s", exc)
        if multirun:
            raise  # recorded as a failed job; the sweep goes on and exits non-zero at the end
        sys.exit(2)
    except Exception:
        log.debug(traceback.format_exc())
        raise


def main() -> None:
    """Entry point: validate the command line, then hand over to Hydra."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        check_overrides(sys.argv[1:])
    except UserError as exc:
        logging.getLogger("benchmark.run").error("error: %s", exc)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
