"""Config groups are the registry: ``conf/<group>/<name>.yaml`` defines option ``name``.

Unknown names fail with the valid names and a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from benchmark.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GROUPS = (
    "model", "dataset", "dense", "pruner", "attack", "logger", "paths", "experiment", "budget",
)  # fmt: skip


def options(group: str, extra_dirs: list[Path] | tuple[Path, ...] = ()) -> list[str]:
    """Names of the options of a config group (built-in, plus a user's config folders)."""
    names = {p.stem for d in (CONF_DIR, *extra_dirs) for p in (Path(d) / group).glob("*.yaml")}
    return sorted(names)


def check_option(group: str, name: str, extra_dirs: list[Path] | tuple[Path, ...] = ()) -> None:
    """Raise :class:`UserError` when ``name`` is not an option of ``group``."""
    valid = options(group, extra_dirs)
    if name in valid or (group == "experiment" and name == "null"):
        return
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown {group} {name!r}{hint}; valid: {', '.join(valid)}")


def build(group: str, name: str, **overrides):
    """Compose option ``name`` of ``group`` alone and instantiate it (Python callers, tests)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    check_option(group, name)
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"), overrides)
    cfg = method_config(group, cfg)
    # interpolations such as ``seed: ${seed}`` refer to the top level of the run config
    # (the run's default seed 0 here; a caller sets the group's own ``seed`` by override)
    root = OmegaConf.create({"seed": 0, group: cfg})
    return instantiate(root[group])


def method_config(group: str, cfg):
    """A group's config without the keys the pipeline reads and its class never sees
    (:data:`benchmark.jobs.validate.PIPELINE_KEYS`, e.g. ``pruner.calibration``)."""
    from omegaconf import OmegaConf

    from benchmark.jobs.validate import PIPELINE_KEYS

    drop = PIPELINE_KEYS.get(group, {})
    if not drop or not any(k in cfg for k in drop):
        return cfg
    data = OmegaConf.to_container(cfg, resolve=False)
    return OmegaConf.create({k: v for k, v in data.items() if k not in drop})
