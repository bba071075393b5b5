"""Encoder families other than BERT: DistilBERT, RoBERTa and DeBERTa-v2/v3 layouts, a layout
declared in config (``model.layout``), and the pruners running on each tiny random model.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from benchmark.errors import UserError
from benchmark.jobs.registry import CONF_DIR, build
from benchmark.models.loading import ModelSpec, attach_layout, build_tiny, load_model
from benchmark.models.structure import (
    BERT_BLOCK_LINEARS,
    encoder_blocks,
    prunable_linears,
)
from benchmark.pruners.base import PruneData, apply_masks, measure_sparsity, prunable_params

KINDS = ("distilbert", "roberta", "deberta")
SPARSITY = 0.5

# Per family: the base-model attribute, the blocks' path and the six linears in module order.
EXPECTED = {
    "distilbert": ("distilbert", "transformer.layer",
                   ("attention.q_lin", "attention.k_lin", "attention.v_lin",
                    "attention.out_lin", "ffn.lin1", "ffn.lin2")),
    "roberta": ("roberta", "encoder.layer", BERT_BLOCK_LINEARS),
    "deberta": ("deberta", "encoder.layer",
                ("attention.self.query_proj", "attention.self.key_proj",
                 "attention.self.value_proj", "attention.output.dense", "intermediate.dense",
                 "output.dense")),
}  # fmt: skip

POST_TRAINING = ("magnitude", "magnitude_global", "wanda", "sparsegpt", "akr", "akr_official",
                 "ria", "owl_wanda", "dsnot")  # fmt: skip


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def _tiny(kind, tmp_path, seed=0):
    return build_tiny(kind, 2, tmp_path / f"tiny_{kind}", seed=seed)


def _data(kind, tok, examples, tmp_path):
    return PruneData(
        tokenizer=tok, train=examples["train"], max_length=32, seed=0,
        pretrained=lambda: build_tiny(kind, 2, tmp_path / "pre")[0], cache_dir=tmp_path / "m",
    )  # fmt: skip


def _overrides(name: str, **extra) -> dict:
    cfg = OmegaConf.load(CONF_DIR / "pruner" / f"{name}.yaml")
    out = {"nsamples": 16} if "nsamples" in cfg else {}
    budget = CONF_DIR / "pruner_budget" / f"{name}_reduced.yaml"
    if budget.is_file():
        reduced = OmegaConf.to_container(OmegaConf.load(budget))
        out.update(reduced.get("pruner", reduced))
    out.update(extra)
    return out


def _check_contract(name, pruner, model, masks, before, training):
    scope = getattr(pruner, "scope", "encoder_linear")
    params = prunable_params(model, scope)
    assert set(masks) == set(params), name
    assert all(masks[k].shape == params[k].shape and masks[k].dtype == torch.bool for k in masks)
    apply_masks(model, masks, permanent=True)
    tol = max(0.02, 2 / min(p.shape[1] for p in params.values()))
    assert abs(measure_sparsity(model, scope) - SPARSITY) <= tol, name
    if not training:  # post-training: nothing outside the prunable linears moves
        layers = {k.rsplit(".", 1)[0] for k in params}
        for key, value in model.state_dict().items():
            if key.rsplit(".", 1)[0] not in layers:
                assert torch.equal(value, before[key]), f"{name} changed {key}"


# --- structure --------------------------------------------------------------------------------


def test_each_family_has_six_linears_per_block_in_module_order(kind, tmp_path):
    model, _ = _tiny(kind, tmp_path)
    prefix, layers, subs = EXPECTED[kind]
    blocks = encoder_blocks(model)
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        assert block.name == f"{prefix}.{layers}.{i}"
        assert block.module is model.get_submodule(block.name)
        assert list(block.linears) == [f"{block.name}.{s}" for s in subs]
        assert all(isinstance(lin, torch.nn.Linear) for lin in block.linears.values())
    linears = prunable_linears(model)
    assert list(linears) == [n for b in blocks for n in b.linears]
    # Module order is the order the modules run in a forward pass.
    seen = []
    hooks = [lin.register_forward_hook(lambda m, i, o, n=n: seen.append(n))
             for n, lin in linears.items()]  # fmt: skip
    _, tok = _tiny(kind, tmp_path)
    with torch.no_grad():
        model.eval()(**tok(["the movie was good"], return_tensors="pt"))
    for h in hooks:
        h.remove()
    first_calls = list(dict.fromkeys(seen))  # DeBERTa calls key/query again on positions
    assert first_calls == list(linears)


def test_bert_names_unchanged(tiny_model):
    model, _ = tiny_model
    names = list(prunable_linears(model, "encoder_linear+pooler"))
    assert names[0] == "bert.encoder.layer.0.attention.self.query"
    assert names[5] == "bert.encoder.layer.0.output.dense"
    assert names[-1] == "bert.pooler.dense"
    assert len(names) == 13


def test_pooler_scope_adds_the_pooler_where_there_is_one(kind, tmp_path):
    model, _ = _tiny(kind, tmp_path)
    plain = prunable_linears(model)
    pooled = prunable_linears(model, "encoder_linear+pooler")
    extra = [n for n in pooled if n not in plain]
    # DistilBERT has no pooler; a RoBERTa classifier has none either (its head's dense is part
    # of the classifier); DeBERTa's ContextPooler sits on the task model.
    assert extra == {"distilbert": [], "roberta": [], "deberta": ["pooler.dense"]}[kind]


def test_distilbert_and_deberta_tokenizers_give_no_token_types(kind, tmp_path):
    model, tok = _tiny(kind, tmp_path)
    enc = tok(["the movie was good", "bad"], padding=True, return_tensors="pt")
    assert ("token_type_ids" in enc) == (kind == "roberta")
    with torch.no_grad():
        assert model(**enc).logits.shape == (2, 2)
    # RoBERTa: positions start after the padding index, so the longest input still fits.
    long = tok([" ".join(["good"] * 300)], truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        model(**long)


def test_tiny_models_are_deterministic(kind, tmp_path):
    a, _ = build_tiny(kind, 2, tmp_path / "a", seed=3)
    b, _ = build_tiny(kind, 2, tmp_path / "b", seed=3)
    c, _ = build_tiny(kind, 2, tmp_path / "c", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_sources_load_through_the_spec(kind, tmp_path):
    from benchmark.models.loading import load_classifier

    model, _ = load_model(ModelSpec(name="t", pretrained=f"tiny:{kind}"), 3, tmp_path / "v")
    assert model.config.num_labels == 3
    assert encoder_blocks(model)[0].name.startswith(EXPECTED[kind][0])
    # The Hub-style entry point builds them too (dense.py passes non-"tiny" sources there).
    other, _ = load_classifier(f"tiny:{kind}", 2)
    assert type(other) is type(model)
    with pytest.raises(UserError, match=r"model\.pretrained"):
        load_model(ModelSpec(name="t", pretrained="tiny:gpt2"), 2, tmp_path / "w")


def test_unknown_model_type_without_layout_names_model_layout(tmp_path):
    model, _ = _tiny("roberta", tmp_path)
    model.config.model_type = "my-encoder"
    with pytest.raises(UserError, match=r"model\.layout") as err:
        prunable_linears(model)
    assert "my-encoder" in str(err.value)
    with pytest.raises(UserError, match=r"model\.layout"):
        encoder_blocks(model)


def test_declared_layout_is_used(tiny_model, tmp_path):
    model, _ = tiny_model
    reference = prunable_linears(model, "encoder_linear+pooler")
    model.config.model_type = "my-encoder"
    spec = ModelSpec(
        name="mine",
        pretrained="tiny",
        layout={
            "layers": "encoder.layer",
            "linears": list(BERT_BLOCK_LINEARS),
            "pooler": "pooler.dense",
        },
    )
    attach_layout(model, spec.layout)
    declared = prunable_linears(model, "encoder_linear+pooler")
    assert list(declared) == list(reference)
    assert all(declared[n] is reference[n] for n in reference)
    # A declared layout may take a subset (here: attention only, no pooler).
    attach_layout(
        model,
        OmegaConf.create(
            {"layers": "encoder.layer", "linears": ["attention.self.query", "attention.self.value"]}
        ),
    )
    names = list(prunable_linears(model, "encoder_linear+pooler"))
    assert names == [f"bert.encoder.layer.{i}.attention.self.{s}" for i in (0, 1)
                     for s in ("query", "value")]  # fmt: skip
    # The layout survives the dense cache (save_pretrained / from_pretrained).
    from transformers import AutoConfig

    model.save_pretrained(tmp_path / "saved")
    assert AutoConfig.from_pretrained(tmp_path / "saved").prune_layout["linears"] == [
        "attention.self.query", "attention.self.value"]  # fmt: skip


def test_declared_layout_runs_a_calibration_pruner(tiny_model, tiny_examples, tmp_path):
    model, tok = tiny_model
    model.config.model_type = "my-encoder"
    attach_layout(model, {"layers": "encoder.layer", "linears": list(BERT_BLOCK_LINEARS)})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = build("pruner", "wanda", nsamples=16)
    masks = pruner.prune(model, _data("bert", tok, tiny_examples, tmp_path), SPARSITY)
    _check_contract("wanda", pruner, model, masks, before, training=False)


@pytest.mark.parametrize("layout, match", [
    ({"layers": "encoder.layer"}, "linears"),
    ({"layers": "encoder.layer", "linears": "attention.self.query"}, "linears"),
    ({"layers": "encoder.blocks", "linears": ["attention.self.query"]}, "layers"),
    ({"layers": "encoder.layer", "linears": ["attention.self.quer"]}, "linears"),
    ({"layers": "encoder.layer", "linears": ["attention.self"]}, "not nn.Linear"),
    ({"layers": "encoder.layer", "linears": ["output.dense"], "extra": 1}, "unknown keys"),
])  # fmt: skip
def test_bad_declared_layout_is_one_clear_error(tiny_model, layout, match):
    model, _ = tiny_model
    with pytest.raises(UserError, match=match):
        attach_layout(model, layout)
        prunable_linears(model)


def test_model_layout_is_a_valid_config_key():
    from benchmark.jobs.validate import check_group

    base = {"name": "m", "pretrained": "tiny", "finetuned": None, "revision": None}
    check_group("model", "m", {**base, "layout": {"layers": "encoder.layer", "linears": ["x"]}})
    check_group("model", "m", {**base, "layout": None})
    with pytest.raises(UserError, match=r"model\.layout"):
        check_group("model", "m", {**base, "layout": "encoder.layer"})


def test_hub_configs_compose():
    for name, hub in [("distilbert_base_uncased", "distilbert-base-uncased"),
                      ("roberta_base", "roberta-base"),
                      ("deberta_v3_base", "microsoft/deberta-v3-base"),
                      ("tiny_distilbert", "tiny:distilbert"), ("tiny_roberta", "tiny:roberta"),
                      ("tiny_deberta", "tiny:deberta")]:  # fmt: skip
        cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
        spec = ModelSpec(**cfg)
        assert spec.name == name and spec.pretrained == hub and spec.layout is None


# --- pruners on each family -------------------------------------------------------------------


@pytest.mark.parametrize("name", POST_TRAINING)
def test_post_training_pruners_on_each_family(name, kind, tmp_path, tiny_examples):
    model, tok = _tiny(kind, tmp_path)
    pruner = build("pruner", name, **_overrides(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = copy.deepcopy(model).eval()
    masks = pruner.prune(model, _data(kind, tok, tiny_examples, tmp_path), SPARSITY)
    _check_contract(name, pruner, model, masks, before, training=False)
    # Pruned, not broken: the model still runs and its logits moved.
    enc = tok(["the movie was good", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out, ref = model.eval()(**enc).logits, dense(**enc).logits
    assert torch.isfinite(out).all() and not torch.equal(out, ref)


def test_imp_on_each_family(kind, tmp_path, tiny_examples):
    model, tok = _tiny(kind, tmp_path)
    pruner = build("pruner", "imp", **_overrides("imp", max_steps=2, max_train_examples=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = pruner.prune(model, _data(kind, tok, tiny_examples, tmp_path), SPARSITY)
    _check_contract("imp", pruner, model, masks, before, training=True)
    if kind == "deberta":  # scope encoder_linear+pooler: DeBERTa's pooler dense is masked too
        assert "pooler.dense.weight" in masks


def test_canonical_names_map_each_family_to_the_bert_roles(kind, tmp_path):
    from benchmark.models.structure import canonical_names

    model, _ = _tiny(kind, tmp_path)
    names = canonical_names(model)
    assert list(names) == list(prunable_linears(model))
    assert list(names.values()) == list(BERT_BLOCK_LINEARS) * 2


def test_dense_stage_builds_tiny_families_unchanged(kind, tmp_path):
    """``load_pretrained`` (dense.py) sends ``tiny:<kind>`` to ``load_classifier``, which builds it."""
    from benchmark.data.loading import DatasetSpec
    from benchmark.training.dense import load_pretrained

    spec = ModelSpec(name=f"tiny_{kind}", pretrained=f"tiny:{kind}")
    dataset = DatasetSpec(**OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset/tiny.yaml")))
    model, tok = load_pretrained(spec, dataset, tmp_path)
    assert "token_type_ids" not in tok.model_input_names or kind == "roberta"
    ref, _ = build_tiny(kind, dataset.num_labels, tmp_path / "ref")
    assert type(model) is type(ref)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
