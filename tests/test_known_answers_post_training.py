"""Known answers for the post-training pruners' defining steps that a broken implementation could
still pass (issue 27, "Tests that notice a broken step"):

- ``magnitude_global``: ONE threshold over all prunable weights, not one per matrix;
- per-row counts ``int(d_in * s)`` at sparsities other than 50% (Wanda, AKR, RIA per row,
  DSnoT), where floor, round and ceil differ;
- the strength of AKR's ridge, ``lam = r * mean(diag(X^T X))`` and the adaptive schedule, from
  a NumPy solve (not from the function under test);
- OWL's outlier pass on the dense model WITH propagation (block l sees block l-1's output);
- structured pruning (Kwon et al.): the Fisher importance (sum over mini-batches of squared
  mask gradients, the gradients taken through Hugging Face's own ``head_mask``), the teacher at
  the milder constraint ``sqrt(c)``, layer 0's heads not tuned, and the last FFN tuned on
  [CLS] only (least squares solved by SciPy's LSMR as the official code does).

Every test was checked by breaking its step on purpose and seeing it fail.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import lsmr

from benchmark.data.tiny import tiny_splits
from benchmark.jobs.registry import build
from benchmark.models.loading import build_tiny_bert
from benchmark.pruners import structured
from benchmark.pruners.akr import (
    RIDGE_RATIO_PAPER,
    RIDGE_RATIOS_CODE,
    AKRPruner,
    RidgeCollector,
    ridge_refit,
)
from benchmark.pruners.base import PruneData, calibration_batches, prunable_params
from benchmark.pruners.dsnot import DSnoTPruner
from benchmark.pruners.owl import block_outlier_ratios
from benchmark.pruners.ria import RIAPruner
from benchmark.pruners.wanda import WandaPruner

NSAMPLES, BATCH, MAX_LEN = 24, 8, 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The random tiny BERT (2 layers, hidden 32, 2 heads, FFN 64) in eval mode, and its data."""
    model, tok = build_tiny_bert(num_labels=2, workdir=tmp_path_factory.mktemp("tiny"))
    model.eval()
    train = [(t, int(y)) for t, y in tiny_splits()["train"]]
    return model, PruneData(tokenizer=tok, train=train, max_length=MAX_LEN, seed=0)


# ---------------------------------------------------------------- magnitude_global


def test_magnitude_global_is_one_threshold_over_all_layers(tiny) -> None:
    model = copy.deepcopy(tiny[0])
    with torch.no_grad():  # layers on different scales: a global threshold prunes them unevenly
        for i, p in enumerate(prunable_params(model).values()):
            p.mul_(1.0 + 0.5 * (i % 4))
    weights = {n: p.detach().abs().numpy().astype(np.float64)
               for n, p in prunable_params(model).items()}  # fmt: skip
    flat = np.concatenate([w.ravel() for w in weights.values()])
    keep = flat.size - round(flat.size * 0.6)
    threshold = np.sort(flat)[::-1][keep - 1]  # the keep-th largest |w| (no ties: random floats)
    masks = build("pruner", "magnitude_global").prune(model, tiny[1], 0.6)
    per_layer = []
    for n, w in weights.items():
        assert masks[n].numpy().tolist() == (w >= threshold).tolist(), n
        per_layer.append(float((w < threshold).mean()))
    assert sum(int(m.sum()) for m in masks.values()) == keep
    assert max(per_layer) - min(per_layer) > 0.3  # really not 60% in every matrix


# ---------------------------------------------------------------- per-row counts


# int(d_in * s) zeros per output row (the official ``int(W.shape[1] * sparsity_ratio)``), worked
# out by hand: d_in 32 (q, k, v, attention output, intermediate) and 64 (FFN output).
ZEROS_PER_ROW = {0.3: {32: 9, 64: 19}, 0.7: {32: 22, 64: 44}}  # round: 10, 19, 22, 45


@pytest.mark.parametrize("sparsity", sorted(ZEROS_PER_ROW))
@pytest.mark.parametrize(
    "make",
    [
        lambda: WandaPruner(nsamples=NSAMPLES, batch_size=BATCH),
        lambda: AKRPruner(nsamples=NSAMPLES, batch_size=BATCH),
        lambda: RIAPruner(nsamples=NSAMPLES, batch_size=BATCH, granularity="row"),
        lambda: DSnoTPruner(nsamples=NSAMPLES, batch_size=BATCH),
    ],
    ids=["wanda", "akr", "ria_row", "dsnot"],
)
def test_zeros_per_row_are_floor_of_d_in_times_s(tiny, make, sparsity: float) -> None:
    masks = make().prune(copy.deepcopy(tiny[0]), tiny[1], sparsity)
    for n, mask in masks.items():
        zeros = (~mask).sum(1)
        assert zeros.tolist() == [ZEROS_PER_ROW[sparsity][mask.shape[1]]] * mask.shape[0], n


# ---------------------------------------------------------------- AKR's ridge


def _ridge_problem():
    """A layer whose inputs 0 and 1 are nearly collinear, so the ridge's strength shows."""
    rng = np.random.default_rng(4)
    n, d_in, d_out = 300, 6, 4
    x = 3.0 * rng.standard_normal((n, d_in))
    x[:, 1] = x[:, 0] + 1e-3 * rng.standard_normal(n)
    w_dense = rng.standard_normal((d_out, d_in))
    y = x @ w_dense.T + 0.5 * rng.standard_normal((n, d_out))  # the dense output, noisy
    w = w_dense + 0.5 * rng.standard_normal((d_out, d_in))  # the layer's current weights
    return x, y, w


def _numpy_ridge(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """``(X^T X + r * mean(diag(X^T X)) I)^-1 X^T Y``, transposed to (d_out, d_in)."""
    xtx = x.T @ x
    lam = r * np.trace(xtx) / xtx.shape[0]
    return np.linalg.solve(xtx + lam * np.eye(xtx.shape[0]), x.T @ y).T


def test_akr_ridge_strength_and_schedule_known_answer() -> None:
    assert RIDGE_RATIOS_CODE == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # obc_solver_func.py:38-40
    assert RIDGE_RATIO_PAPER == 1e-4 and AKRPruner(ridge="paper").ridge_ratios == (1e-4,)
    x, y, w = _ridge_problem()
    xtx, xty = torch.from_numpy(x.T @ x), torch.from_numpy(x.T @ y)
    refs = {r: _numpy_ridge(x, y, r) for r in RIDGE_RATIOS_CODE}
    msd = {r: float(((refs[r] - w) ** 2).mean()) for r in RIDGE_RATIOS_CODE}
    # the strength matters here: the ratios give visibly different solutions
    assert float(np.abs(refs[1e-4] - refs[1e-2]).max()) > 1e-2
    for r in (1e-4, 1e-2):  # one ratio given: that ridge, whatever the difference
        w_bar, ratio, diff = ridge_refit(xtx, xty, torch.from_numpy(w), (r,), tol=0.0)
        np.testing.assert_allclose(w_bar.numpy(), refs[r], rtol=1e-9, atol=1e-10)
        assert ratio == r and diff == pytest.approx(msd[r], rel=1e-9)
    # the schedule: the first ratio whose mean squared difference is below tol
    tol = math.sqrt(msd[1e-3] * msd[1e-2]) if msd[1e-3] > msd[1e-2] else msd[1e-2] * 1.01
    expected = next(r for r in RIDGE_RATIOS_CODE if msd[r] < tol)
    w_bar, ratio, _ = ridge_refit(xtx, xty, torch.from_numpy(w), RIDGE_RATIOS_CODE, tol=tol)
    assert ratio == expected
    np.testing.assert_allclose(w_bar.numpy(), refs[expected], rtol=1e-9, atol=1e-10)


def test_akr_solve_at_sparsity_zero_is_the_ridge_refit_with_bias() -> None:
    """Through the layer solver: the ones column (bias) joins X, and the ridge of the default
    schedule (tol 1) is what AKR writes when nothing is pruned."""
    x, y, w = _ridge_problem()
    b = np.linspace(-1.0, 1.0, y.shape[1])
    coll = RidgeCollector(x.shape[1], y.shape[1], torch.device("cpu"), bias=True)
    coll.add_batch(torch.from_numpy(x[:150]), torch.from_numpy(y[:150]))
    coll.add_batch(torch.from_numpy(x[150:]), torch.from_numpy(y[150:]))
    x1 = np.concatenate([x, np.ones((x.shape[0], 1))], 1)
    w1 = np.concatenate([w, b[:, None]], 1)
    expected = next(r for r in RIDGE_RATIOS_CODE
                    if ((_numpy_ridge(x1, y, r) - w1) ** 2).mean() < 1.0)  # fmt: skip
    ref = _numpy_ridge(x1, y, expected)
    new_w, new_b, keep, info = coll.solve(torch.from_numpy(w), torch.from_numpy(b), 0.0,
                                          obs_dtype=torch.float64)  # fmt: skip
    assert bool(keep.all()) and info["ridge_ratio"] == expected
    np.testing.assert_allclose(new_w.numpy(), ref[:, :-1], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(new_b.numpy(), ref[:, -1], rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------- OWL


def _dense_outlier_ratios(model, batches, m: float) -> list[float]:
    """OWL's D per block from one ordinary forward pass of the dense model: the inputs of each
    linear as the full model computes them (block 1 sees block 0's output)."""
    layers = {n.removesuffix(".weight"): p for n, p in prunable_params(model).items()}
    sq = {n: torch.zeros(p.shape[1], dtype=torch.float64) for n, p in layers.items()}
    handles = []
    state = {}
    for name in layers:

        def hook(_mod, inputs, name=name):
            x = inputs[0][state["mask"]].to(torch.float64)
            sq[name] += (x * x).sum(0)

        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for batch in batches:
                state["mask"] = batch["attention_mask"].bool()
                model(**batch)
    finally:
        for h in handles:
            h.remove()
    out = []
    for block in (0, 1):
        scores = torch.cat([
            (p.detach().abs().to(torch.float64) * sq[n].sqrt()[None, :]).flatten()
            for n, p in layers.items() if f"layer.{block}." in n
        ])  # fmt: skip
        out.append(100.0 * float((scores > m * scores.mean()).sum()) / scores.numel())
    return out


def test_owl_outlier_pass_is_on_the_dense_model_with_propagation(tiny) -> None:
    model, data = tiny
    batches = calibration_batches(data, NSAMPLES, MAX_LEN, BATCH)
    one_entry = 100.0 / (4 * 32 * 32 + 2 * 32 * 64)  # a block's share of one score
    for m in (2.0, 3.0, 5.0):
        ref = _dense_outlier_ratios(model, batches, m)
        got = block_outlier_ratios(copy.deepcopy(model), batches, m)
        assert got == pytest.approx(ref, abs=1.5 * one_entry), m
    # through the pruner (its own calibration sample): the ratios are the dense model's
    overrides = {"nsamples": NSAMPLES, "batch_size": BATCH}
    pruner = build("pruner", "owl_wanda", base_overrides=overrides, hyper_m=2.0)
    pruner.prune(copy.deepcopy(model), data, 0.5)
    ref = _dense_outlier_ratios(model, batches, 2.0)
    assert list(pruner.info["outlier_ratio"].values()) == pytest.approx(ref, abs=1.5 * one_entry)


# ---------------------------------------------------------------- structured (Kwon et al.)


@pytest.fixture
def spied(monkeypatch):
    """Records every ``search_mac`` call (importances, constraint, result) and the masks
    ``tune_masks`` receives, while running both unchanged."""
    calls: dict[str, list] = {"search": [], "tune": []}
    orig_search, orig_tune = structured.search_mac, structured.tune_masks

    def search(head_imp, neuron_imp, seq_len, hidden, head_dim, constraint, *a, **k):
        out = orig_search(head_imp, neuron_imp, seq_len, hidden, head_dim, constraint, *a, **k)
        calls["search"].append({"head_imp": head_imp.clone(), "neuron_imp": neuron_imp.clone(),
                                "constraint": constraint, "out": out})  # fmt: skip
        return out

    def tune(model, batches, t_head, t_neuron, s_head, s_neuron, classification):
        calls["tune"].append({"t_head": t_head.clone(), "t_neuron": t_neuron.clone()})
        return orig_tune(model, batches, t_head, t_neuron, s_head, s_neuron, classification)

    monkeypatch.setattr(structured, "search_mac", search)
    monkeypatch.setattr(structured, "tune_masks", tune)
    return calls


def _fisher_reference(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over mini-batches of squared mask gradients, taken through Hugging Face's own
    ``head_mask`` argument (it multiplies a head's attention probabilities, hence its context)
    and a hook scaling the FFN activations (the intermediate module's output)."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = model.bert.encoder.layer
    head = torch.ones(len(layers), layers[0].attention.self.num_attention_heads,
                      requires_grad=True)  # fmt: skip
    neuron = torch.ones(len(layers), layers[0].intermediate.dense.out_features,
                        requires_grad=True)  # fmt: skip
    handles = [
        layer.intermediate.register_forward_hook(lambda _m, _i, out, i=i: out * neuron[i])
        for i, layer in enumerate(layers)
    ]
    head_imp = torch.zeros(head.shape, dtype=torch.float64)
    neuron_imp = torch.zeros(neuron.shape, dtype=torch.float64)
    try:
        for batch in batches:
            loss = model(**batch, head_mask=head).loss
            gh, gn = torch.autograd.grad(loss, [head, neuron])
            head_imp += gh.to(torch.float64) ** 2
            neuron_imp += gn.to(torch.float64) ** 2
    finally:
        for h in handles:
            h.remove()
    return head_imp, neuron_imp


def test_structured_fisher_importance_and_teacher_constraint(tiny, spied) -> None:
    model, data = tiny
    pruner = structured.StructuredPruner(nsamples=NSAMPLES, batch_size=BATCH)
    pruner.prune(copy.deepcopy(model), data, 0.36)  # c = 0.64: the teacher's is sqrt = 0.8
    assert [c["constraint"] for c in spied["search"]] == pytest.approx([0.8, 0.64])
    batches = structured.labelled_batches(data, NSAMPLES, None, BATCH)
    assert len(batches) > 1  # several mini-batches: sum of squares != square of the sum
    head_imp, neuron_imp = _fisher_reference(model, batches)
    for call in spied["search"]:
        torch.testing.assert_close(call["head_imp"], head_imp, rtol=1e-4, atol=1e-16)
        torch.testing.assert_close(call["neuron_imp"], neuron_imp, rtol=1e-4, atol=1e-16)
    # the teacher masks tune_masks gets are the search at sqrt(c), not at c
    teacher, student = spied["search"][0]["out"], spied["search"][1]["out"]
    assert not (torch.equal(teacher[0], student[0]) and torch.equal(teacher[1], student[1]))
    (tune,) = spied["tune"]
    assert torch.equal(tune["t_head"].bool(), teacher[0])
    assert torch.equal(tune["t_neuron"].bool(), teacher[1])


def _ffn_inputs(model, batches, layer: int, head, neuron, rows: str):
    """(activations, residual) entering ``layer``'s FFN output module under the given scales,
    before its own neuron scale: every real token, or the [CLS] token only."""
    grabbed = []
    module = model.bert.encoder.layer[layer].output
    handle = module.register_forward_pre_hook(
        lambda _m, inputs: grabbed.append((inputs[0].detach(), inputs[1].detach())),
        prepend=True,
    )  # fmt: skip
    try:
        with torch.no_grad(), structured.scaled_structures(model, head, neuron):
            for batch in batches:
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        handle.remove()
    acts, res = [], []
    for (h, r), batch in zip(grabbed, batches, strict=True):
        sel = batch["attention_mask"].bool() if rows == "tokens" else None
        acts.append((h[sel] if sel is not None else h[:, 0]).to(torch.float64))
        res.append((r[sel] if sel is not None else r[:, 0]).to(torch.float64))
    return torch.cat(acts), torch.cat(res)


def _ffn_scales_reference(model, batches, layer, t_scales, s_scales, kept, rows):
    """The official least squares of one FFN's kept neuron scales, built from plain forward
    hooks and solved by SciPy's LSMR with damp=1 on the offset from 1 (rescale.py, linalg.py)."""
    th, tr = _ffn_inputs(model, batches, layer, *t_scales, rows)
    sh, sr = _ffn_inputs(model, batches, layer, *s_scales, rows)
    dense = model.bert.encoder.layer[layer].output.dense
    w2, b2 = dense.weight.detach().to(torch.float64), dense.bias.detach().to(torch.float64)
    target = th @ w2.T + b2 + tr  # (n, d): the teacher's sublayer output before LayerNorm
    # design: column k of token n is sh[n, k] * w2[:, k]; unknowns: the kept neurons' scales
    a = torch.einsum("nk,dk->knd", sh[:, kept], w2[:, kept]).reshape(len(kept), -1)
    rhs = (target - b2 - sr).flatten()
    ata, atb = (a @ a.T).numpy(), (a @ rhs).numpy()
    sol = lsmr(ata, atb - ata.sum(1), damp=1, atol=1e-14, btol=1e-14, maxiter=10_000)[0]
    return torch.from_numpy(sol + 1)


def test_structured_tuning_skips_layer0_heads_and_tunes_the_last_ffn_on_cls(tiny) -> None:
    model, data = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():  # the random init's FFN output is so small that the damping (1) would
        for layer in model.bert.encoder.layer:  # hold every scale at 1: make it count
            layer.intermediate.dense.weight.mul_(5.0)
            layer.output.dense.weight.mul_(5.0)
    batches = structured.labelled_batches(data, NSAMPLES, None, BATCH)
    t_head, t_neuron = torch.ones(2, 2), torch.ones(2, 64)  # a dense teacher
    s_head = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s_neuron = torch.ones(2, 64)
    s_neuron[:, 1::2] = 0.0  # half of every FFN
    with structured.eval_mode(model):
        head, neuron, stopped = structured.tune_masks(model, batches, t_head, t_neuron, s_head,
                                                      s_neuron, classification=True)  # fmt: skip
    assert stopped is None
    # layer 0's heads are never tuned (rescale.py:179); layer 1's kept head is
    assert head[0].tolist() == [1.0, 0.0]
    assert head[1, 1] == 0.0 and abs(float(head[1, 0]) - 1.0) > 1e-3
    kept = torch.nonzero(s_neuron[0]).flatten()
    assert torch.equal(neuron[:, 1::2], torch.zeros(2, 32))  # pruned neurons stay pruned
    # layer 0's FFN: every real token; the student's heads as they were (not tuned)
    ref0 = _ffn_scales_reference(model, batches, 0, (t_head, t_neuron), (s_head, s_neuron),
                                 kept, "tokens")  # fmt: skip
    torch.testing.assert_close(neuron[0, kept].to(torch.float64), ref0, rtol=1e-4, atol=1e-5)
    # the last FFN: the [CLS] token only; the student with its tuned layer 0 and layer-1 heads
    student = (head, torch.stack([neuron[0], s_neuron[1]]))
    ref1 = _ffn_scales_reference(model, batches, 1, (t_head, t_neuron), student, kept, "cls")
    torch.testing.assert_close(neuron[1, kept].to(torch.float64), ref1, rtol=1e-4, atol=1e-5)
    every = _ffn_scales_reference(model, batches, 1, (t_head, t_neuron), student, kept, "tokens")
    assert float((every - ref1).abs().max()) > 0.1  # the two row sets give different scales
    assert float((neuron[0, kept] - 1).abs().max()) > 0.1  # and the tuning is not a no-op
