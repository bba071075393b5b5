"""Where the prunable weights of each model family live.

METHODS.md: in every encoder layer the attention query, key, value, attention output dense,
intermediate dense and output dense linears are prunable; embeddings and the classifier never
are. ``scope`` picks a subset and is recorded with every result.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

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


@dataclass(frozen=True)
class BlockInfo:
    """One encoder block: its qualified module name and its prunable linears in order."""

    name: str
    module: nn.Module
    linears: dict[str, nn.Linear]  # qualified module name -> linear, in BERT_BLOCK_LINEARS order


def encoder_blocks(model: nn.Module) -> list[BlockInfo]:
    """Return the encoder blocks of a BERT-family classifier with their prunable linears."""
    base_prefix, base = _base_model(model)
    layers = base.encoder.layer
    blocks = []
    for i, block in enumerate(layers):
        name = f"{base_prefix}encoder.layer.{i}"
        linears = {f"{name}.{sub}": block.get_submodule(sub) for sub in BERT_BLOCK_LINEARS}
        blocks.append(BlockInfo(name=name, module=block, linears=linears))
    return blocks


def prunable_linears(model: nn.Module, scope: str = "encoder_linear") -> dict[str, nn.Linear]:
    """Qualified module name -> ``nn.Linear`` for every prunable linear layer in ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    out: dict[str, nn.Linear] = {}
    for block in encoder_blocks(model):
        out.update(block.linears)
    if scope == "encoder_linear+pooler":
        prefix, base = _base_model(model)
        if getattr(base, "pooler", None) is not None:
            out[f"{prefix}pooler.dense"] = base.pooler.dense
    return out


def _base_model(model: nn.Module) -> tuple[str, nn.Module]:
    """Return (prefix, encoder model) for a task model or a bare encoder."""
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and hasattr(model, prefix):
        return f"{prefix}.", getattr(model, prefix)
    if hasattr(model, "encoder"):
        return "", model
    raise TypeError(f"{type(model).__name__} has no BERT-style encoder")
