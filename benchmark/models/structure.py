"""Where the prunable weights of each model family live.

METHODS.md: in every encoder layer the attention query, key, value, attention output dense,
intermediate dense and output dense linears are prunable; embeddings and the classifier never
are. ``scope`` picks a subset and is recorded with every result.

A *layout* says where these linears are: ``layers`` (the dotted path of the list of encoder
blocks), ``linears`` (the six prunable linears inside a block, dotted paths relative to the
block, in module order: query, key, value, attention output, FFN in, FFN out) and ``pooler``
(the dotted path of the pooler dense, or None when the model has none). Paths are looked up
under the base model (``model.base_model_prefix``, e.g. ``bert``) first, then under the model
itself; qualified names are always relative to the model passed in, so a BERT classifier's
names stay ``bert.encoder.layer.0.attention.self.query``.

The layout is chosen by ``model.config.model_type`` (:data:`LAYOUTS`), unless the model carries
one a user declared in config (``model.layout``; :func:`declared_layout`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from benchmark.errors import UserError

# Module order inside a block matters for layer-wise methods (AKR prunes in this order).
BERT_BLOCK_LINEARS: tuple[str, ...] = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)

SCOPES = ("encoder_linear", "encoder_linear+pooler")

LAYOUT_ATTR = "prune_layout"
"""Name of the ``model.config`` attribute (or, for a model without a config, the model
attribute) that holds a user-declared layout. Kept in ``config`` so it survives
``save_pretrained`` / ``from_pretrained`` (the dense cache)."""


@dataclass(frozen=True)
class Layout:
    """Where a model family keeps its encoder blocks, prunable linears and pooler dense."""

    layers: str
    linears: tuple[str, ...]
    pooler: str | None = None


_BERT = Layout("encoder.layer", BERT_BLOCK_LINEARS, "pooler.dense")
LAYOUTS: dict[str, Layout] = {
    # BERT layout. RoBERTa / XLM-R / ELECTRA classifiers have no pooler (their head's dense is
    # part of the classifier); the pooler scope then adds nothing.
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "distilbert": Layout(
        "transformer.layer",
        ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
         "ffn.lin1", "ffn.lin2"),
        None,  # DistilBERT has no pooler: its classifier reads the [CLS] state directly
    ),
    # DeBERTa-v2 and -v3 (both model_type deberta-v2). The ContextPooler sits on the task
    # model (``pooler.dense``), not on the base model.
    "deberta-v2": Layout(
        "encoder.layer",
        ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
         "attention.output.dense", "intermediate.dense", "output.dense"),
        "pooler.dense",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class BlockInfo:
    """One encoder block: its qualified module name and its prunable linears in order."""

    name: str
    module: nn.Module
    linears: dict[str, nn.Linear]  # qualified module name -> linear, in module order


def parse_layout(layout: Mapping[str, Any] | Layout, key: str = "model.layout") -> Layout:
    """Validate a declared layout (``{layers: str, linears: [str, ...], pooler: str|null}``)."""
    if isinstance(layout, Layout):
        return layout
    if not isinstance(layout, Mapping):
        raise UserError(f"{key} must be a mapping {{layers: ..., linears: [...]}}, got {layout!r}")
    unknown = set(layout) - {"layers", "linears", "pooler"}
    if unknown:
        raise UserError(f"{key} has unknown keys {sorted(unknown)}; valid: layers, linears, pooler")
    layers, linears, pooler = layout.get("layers"), layout.get("linears"), layout.get("pooler")
    if not isinstance(layers, str) or not layers:
        raise UserError(f"{key}.layers must be the dotted path of the encoder blocks, e.g. "
                        f"'encoder.layer'; got {layers!r}")  # fmt: skip
    if (
        isinstance(linears, str)
        or not linears
        or not all(isinstance(s, str) and s for s in linears)
    ):
        raise UserError(f"{key}.linears must be a non-empty list of dotted paths inside a "
                        f"block (query, key, value, attention output, FFN in, FFN out); "
                        f"got {linears!r}")  # fmt: skip
    if pooler is not None and not isinstance(pooler, str):
        raise UserError(f"{key}.pooler must be a dotted path or null, got {pooler!r}")
    return Layout(layers, tuple(linears), pooler)


def declared_layout(model: nn.Module) -> Layout | None:
    """The layout a user declared for ``model`` (``model.layout`` in config), or None."""
    config = getattr(model, "config", None)
    layout = getattr(config, LAYOUT_ATTR, None) if config is not None else None
    if layout is None:
        layout = getattr(model, LAYOUT_ATTR, None)
    return None if layout is None else parse_layout(layout)


def model_layout(model: nn.Module) -> Layout:
    """The layout of ``model``: the declared one, else the one of its ``model_type``.

    Raises :class:`UserError` naming ``model.layout`` for a model type without a known layout.
    """
    declared = declared_layout(model)
    if declared is not None:
        return declared
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None and config is None and hasattr(model, "encoder"):
        return _BERT  # a bare BERT-style encoder module without a Hugging Face config
    if model_type in LAYOUTS:
        return LAYOUTS[model_type]
    raise UserError(
        f"no known layout of prunable linears for model type {model_type!r} "
        f"({type(model).__name__}; known: {', '.join(sorted(LAYOUTS))}); declare it in the "
        "model config as model.layout: {layers: <dotted path of the encoder blocks>, "
        "linears: [<query>, <key>, <value>, <attention output>, <FFN in>, <FFN out>], "
        "pooler: <pooler dense or null>}"
    )


def _lookup(model: nn.Module, path: str) -> tuple[str, nn.Module] | None:
    """(qualified name, module) of ``path`` under the base model, else under the model."""
    prefix = getattr(model, "base_model_prefix", "")
    roots = []
    if prefix and isinstance(getattr(model, prefix, None), nn.Module):
        roots.append((f"{prefix}.", getattr(model, prefix)))
    roots.append(("", model))
    for qual, root in roots:
        try:
            return f"{qual}{path}", root.get_submodule(path)
        except AttributeError:
            continue
    return None


def encoder_blocks(model: nn.Module) -> list[BlockInfo]:
    """Return the encoder blocks of a classifier (or bare encoder) with their prunable linears."""
    layout = model_layout(model)
    found = _lookup(model, layout.layers)
    if found is None:
        raise UserError(
            f"{type(model).__name__} has no module {layout.layers!r} (the encoder blocks of its "
            "layout); check model.layout.layers"
        )
    layers_name, layers = found
    blocks = []
    for i, block in enumerate(layers):
        name = f"{layers_name}.{i}"
        linears = {}
        for sub in layout.linears:
            try:
                lin = block.get_submodule(sub)
            except AttributeError:
                raise UserError(
                    f"encoder block {name} has no module {sub!r}; check model.layout.linears"
                ) from None
            if not isinstance(lin, nn.Linear):
                raise UserError(
                    f"{name}.{sub} is a {type(lin).__name__}, not nn.Linear; "
                    "check model.layout.linears"
                )
            linears[f"{name}.{sub}"] = lin
        blocks.append(BlockInfo(name=name, module=block, linears=linears))
    return blocks


def pooler_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """(qualified name, linear) of the pooler dense, or None where the model has none."""
    layout = model_layout(model)
    if layout.pooler is None:
        return None
    found = _lookup(model, layout.pooler)
    if found is None or not isinstance(found[1], nn.Linear):
        return None  # e.g. a RoBERTa classifier (built without the pooling layer)
    return found  # type: ignore[return-value]


def prunable_linears(model: nn.Module, scope: str = "encoder_linear") -> dict[str, nn.Linear]:
    """Qualified module name -> ``nn.Linear`` for every prunable linear layer in ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    out: dict[str, nn.Linear] = {}
    for block in encoder_blocks(model):
        out.update(block.linears)
    if scope == "encoder_linear+pooler":
        pooler = pooler_linear(model)
        if pooler is not None:
            out[pooler[0]] = pooler[1]
    return out


def canonical_names(model: nn.Module) -> dict[str, str]:
    """Qualified linear name -> the BERT block-relative name of the same role, by position in
    the layout (DistilBERT ``...layer.0.ffn.lin1`` -> ``intermediate.dense``), so options that
    name BERT linears (DSnoT's ``skip``) mean the same on every family. A declared layout with
    other than six linears maps each linear to its own block-relative path."""
    out = {}
    for block in encoder_blocks(model):
        subs = [n[len(block.name) + 1 :] for n in block.linears]
        roles = BERT_BLOCK_LINEARS if len(subs) == len(BERT_BLOCK_LINEARS) else subs
        out.update(zip(block.linears, roles, strict=True))
    return out


def _base_model(model: nn.Module) -> tuple[str, nn.Module]:
    """Return (prefix, encoder model) for a task model or a bare encoder."""
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and hasattr(model, prefix):
        return f"{prefix}.", getattr(model, prefix)
    if hasattr(model, "encoder") or hasattr(model, "transformer"):
        return "", model
    raise TypeError(f"{type(model).__name__} has no BERT-style encoder")
