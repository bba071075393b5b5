"""The typed config contract: every key and value is checked before any work.

A validating layer over the composed Hydra config, with the effect of a structured-config
schema: top-level keys have a fixed schema (:data:`TOP_LEVEL`); a method group's keys (pruner,
dense, attack, logger) come from the signature of its ``_target_`` class, so a user's own
pruner from ``--config-dir`` is checked the same way without a registry; ``model`` and
``dataset`` keys come from :class:`ModelSpec` / :class:`DatasetSpec`. Every problem is one
:class:`UserError` line naming the key, the bad value and what is valid (did-you-mean where it
helps).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from benchmark.errors import UserError

PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_seed(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "a non-negative integer"


def _check_sparsity(v: Any) -> str | None:
    return None if _is_number(v) and 0.0 <= float(v) < 1.0 else "a number in [0, 1)"


def _check_exp_name(v: Any) -> str | None:
    ok = isinstance(v, str) and PLAIN_NAME.match(v) and v not in (".", "..")
    if ok and len(v.encode()) > 200:  # a folder name; <run_id>.failed.json must still fit
        return "a plain name of at most 200 bytes (it names a folder)"
    return None if ok else "a plain name (letters, digits, '-', '_', '.'; no '/', not empty)"


def _check_device(v: Any) -> str | None:
    return None if isinstance(v, str) and DEVICE.match(v) else "auto, cpu, cuda or cuda:N"


def _positive_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "a positive integer"


def _positive_or_null(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v > 0) else "a positive integer or null (= all)"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def _anything(_v: Any) -> str | None:
    return None


def _dense_noise(v: Any) -> str | None:
    from benchmark.models.noise import check_dense_noise

    return check_dense_noise(v)


def _cascade_recipes(v: Any) -> str | None:
    from benchmark.attacks.cascade import check_recipes

    return check_recipes(v)


# top-level key -> check (None = valid; else what is expected)
TOP_LEVEL: dict[str, Callable[[Any], str | None]] = {
    "exp_name": _check_exp_name, "seed": _check_seed, "sparsity": _check_sparsity,
    "device": _check_device, "eval_batch_size": _positive_int,
    "max_eval_examples": _positive_or_null, "skip_existing": _bool, "force": _bool,
    "cache_pruned": _bool, "progress": _bool, "eval_sample": _positive_or_null,
    "eval_sample_seed": _check_seed, "dense_noise": _dense_noise,
    "precision": lambda v: None if v in ("float32", "bfloat16", "float16")
    else "float32, bfloat16 or float16 (GPU)",
}  # fmt: skip
GROUP_KEYS = ("model", "dataset", "dense", "pruner", "attack", "logger", "budget", "paths",
              "hydra", "pruner_budget", "protocol")  # fmt: skip

# Keys of method configs that are not constructor arguments.
META_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}

# Keys of a group that the pipeline reads and the group's class never sees (removed before
# instantiation), with their checks: where a calibration pruner's sentences come from.
CALIBRATION_SOURCES = ("task", "sst2")
PIPELINE_KEYS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "pruner": {"calibration": lambda v: None if v in CALIBRATION_SOURCES
               else "task (the task's own training split) or sst2 (SST-2's, as AKR's script)"},
}  # fmt: skip

# Per-key range checks of group values (on top of the type from the signature).
RANGES: dict[tuple[str, str], Callable[[Any], str | None]] = {
    ("pruner", "nsamples"): _positive_int,
    ("pruner", "max_length"): _positive_int,
    ("pruner", "batch_size"): _positive_int,
    ("attack", "num_examples"): lambda v: None if _is_int(v) and v >= 0
    else "a non-negative integer (0 = the whole split)",
    ("attack", "batch_size"): _positive_int,
    ("attack", "workers"): _positive_int,
    ("attack", "query_budget"): _positive_or_null,
    ("attack", "max_seconds_per_example"): lambda v: None if v is None or (_is_number(v) and v > 0)
    else "a positive number of seconds or null (= no limit)",
    ("attack", "recipes"): _cascade_recipes,
    ("dataset", "max_length"): _positive_int,
    ("dataset", "num_labels"): lambda v: None if _is_int(v) and v >= 2 else "an integer >= 2",
    ("logger", "mode"): lambda v: None if v in (None, "offline", "online", "disabled")
    else "offline, online, disabled or null ($WANDB_MODE, else offline)",
}  # fmt: skip


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _bad(key: str, value: Any, expected: str) -> UserError:
    return UserError(f"invalid value {key}={value!r}: expected {expected}")


def check_top_level(cfg: Mapping[str, Any]) -> None:
    """Unknown top-level keys and bad top-level values."""
    for key in cfg:
        if key not in TOP_LEVEL and key not in GROUP_KEYS:
            valid = sorted([*TOP_LEVEL, *GROUP_KEYS])
            raise UserError(f"unknown config key {key!r}{_suggest(key, valid)}; valid "
                            f"top-level keys: {', '.join(valid)}")  # fmt: skip
    for key, check in TOP_LEVEL.items():
        if key in cfg:
            expected = check(cfg[key])
            if expected:
                raise _bad(key, cfg[key], expected)


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (a plain YAML value) fits ``annotation`` (best effort; unknown = ok)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_number(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return isinstance(value, list | tuple)
    if origin in (dict, typing.Mapping) or annotation is dict:
        return isinstance(value, Mapping)
    return True


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "null")


def _signature(target: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """(parameters with resolved annotations, accepts **kwargs) of a ``_target_``."""
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"_target_ {target!r} cannot be imported ({exc})") from exc
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    params = {}
    var_kw = False
    for p in inspect.signature(fn).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        params[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
    # The project's method classes forward **kwargs to the shared loop's TrainConfig (dense
    # recipes, IMP/LTH, SEVEN, ...): its fields are the remaining valid keys. A user's class
    # with **kwargs stays open (its own constructor reports unknown keys).
    if var_kw and target.startswith("benchmark."):
        from benchmark.training.loop import TrainConfig

        params = {**_dataclass_params(TrainConfig), **params}
        var_kw = False
    return params, var_kw


def _dataclass_params(cls) -> dict[str, inspect.Parameter]:
    hints = typing.get_type_hints(cls)
    return {f.name: inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                      annotation=hints.get(f.name, f.type))
            for f in dataclasses.fields(cls)}  # fmt: skip


def check_group(group: str, option: str, values: Mapping[str, Any]) -> None:
    """Keys and value types of one group's config against its schema."""
    from benchmark.data.loading import DatasetSpec
    from benchmark.models.loading import ModelSpec

    if group == "model":
        params, open_ = _dataclass_params(ModelSpec), False
    elif group == "dataset":
        params, open_ = _dataclass_params(DatasetSpec), False
    elif "_target_" in values:
        params, open_ = _signature(str(values["_target_"]))
    elif group == "logger":
        params, open_ = _signature("benchmark.records.tracking.WandbMirror")
    else:
        return
    pipeline_keys = PIPELINE_KEYS.get(group, {})
    for key, value in values.items():
        if key in META_KEYS:
            continue
        if key in pipeline_keys:
            expected = pipeline_keys[key](value)
            if expected:
                raise _bad(f"{group}.{key}", value, expected)
            continue
        if key not in params:
            if open_:
                continue
            valid = sorted([*params, *pipeline_keys])
            raise UserError(
                f"unknown key {group}.{key} for {group} {option!r}{_suggest(key, valid)}; "
                f"valid: {', '.join(valid)}"
            )
        ann = params[key].annotation
        if not _type_ok(value, ann):
            raise _bad(f"{group}.{key}", value, _type_name(ann))
        check = RANGES.get((group, key))
        expected = check(value) if check and value is not None else None  # None: type decides
        if expected:
            raise _bad(f"{group}.{key}", value, expected)


def check_structure(resolved: Mapping[str, Any]) -> None:
    """An N:M ``pruner.structure`` must parse and give the target sparsity (1 - N/M), checked
    before any work with the pruners' own rules (a layer width that M does not divide fails
    when the model is loaded, naming the layer)."""
    structure = (resolved.get("pruner") or {}).get("structure")
    if not isinstance(structure, str) or structure == "unstructured":
        return
    from benchmark.pruners.magnitude import check_nm_sparsity, parse_nm

    try:
        nm = parse_nm(structure)
        if nm is not None:
            check_nm_sparsity(nm, float(resolved.get("sparsity", 0.0)))
    except ValueError as exc:
        raise UserError(f"pruner.structure={structure}: {exc}") from None


# The model type of each in-process tiny family (``tiny:<kind>``, benchmark/models/loading.py),
# as its transformers config names it (tests/test_contract_cli.py checks it against the built
# models).
TINY_MODEL_TYPES = {"bert": "bert", "distilbert": "distilbert", "roberta": "roberta",
                    "deberta": "deberta-v2"}  # fmt: skip


def model_config(model: Mapping[str, Any]) -> Any | None:
    """The model option's ``transformers`` config, read from its ``config.json`` alone (no
    weights load), or None when it cannot be read here: a tiny in-process model, or a source
    not reachable now (loading the model then says why). The local cache is read first; only
    where the config is not there is the Hub asked (not with ``HF_HUB_OFFLINE=1``), its retry
    warnings silenced."""
    import logging
    import os

    from benchmark.models.loading import is_tiny, resolve_source

    source = model.get("finetuned") or model.get("pretrained")
    if not source or is_tiny(str(source)):
        return None
    from transformers import AutoConfig

    def read(**kw):
        try:
            return AutoConfig.from_pretrained(resolve_source(str(source)),
                                              revision=model.get("revision"), **kw)  # fmt: skip
        except Exception:
            return None

    config = read(local_files_only=True)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if config is not None or offline:
        return config
    quiet = [logging.getLogger(n) for n in ("huggingface_hub", "transformers")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        return read()
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def model_type(model: Mapping[str, Any]) -> str | None:
    """The model option's ``model_type`` (``bert``, ``distilbert``, ...) from its config alone,
    or None when it cannot be read here."""
    from benchmark.models.loading import is_tiny, tiny_kind

    source = str(model.get("finetuned") or model.get("pretrained") or "")
    if is_tiny(source):
        return TINY_MODEL_TYPES.get(tiny_kind(source))
    config = model_config(model)
    return getattr(config, "model_type", None) if config is not None else None


def check_pruner_model(resolved: Mapping[str, Any]) -> None:
    """A pruner that works on some model families only (its class has ``check_model_type``,
    called with the model type and the pruner's resolved config, on which a refusal may depend:
    SEVEN's ``head``) refuses the others here, before the dense model is loaded or
    fine-tuned, with the line its own ``prune`` would give."""
    pruner = resolved.get("pruner") or {}
    target = pruner.get("_target_")
    if not isinstance(target, str):
        return
    module, _, name = target.rpartition(".")
    try:
        check = getattr(getattr(importlib.import_module(module), name), "check_model_type", None)
    except (ImportError, AttributeError):
        return  # check_group names the bad _target_
    if check is None:
        return
    kind = model_type(resolved.get("model") or {})
    if kind is None:
        return
    check(kind, pruner)


def validate(resolved: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """The whole contract on a resolved config (a plain dict)."""
    check_top_level(resolved)
    check_structure(resolved)
    if names.get("pruner") == "none" and float(resolved.get("sparsity", 0.0)) != 0.0:
        raise UserError(
            f"pruner=none is the dense model: use sparsity=0.0 (got sparsity="
            f"{resolved.get('sparsity')}); a sweep's dense row is `pruner=none sparsity=0.0`"
        )
    for group in ("model", "dataset", "dense", "pruner", "attack", "logger"):
        if isinstance(resolved.get(group), Mapping):
            check_group(group, str(names.get(group, group)), resolved[group])
    check_pruner_model(resolved)
    attack = resolved.get("attack") or {}
    if isinstance(attack, Mapping) and attack.get("recipes") and attack.get("recipe") != "cascade":
        raise UserError(f"attack.recipes is for attack=cascade only (attack "
                        f"{names.get('attack')!r} runs one recipe)")  # fmt: skip
