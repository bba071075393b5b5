"""Run the official AKR solver functions on small synthetic layers and save inputs/outputs.

Data only: the official obc_solver_func.py (mexiQQ/Knowledge-retention-pruning @ 769696d) is
imported unchanged from this scratch directory. The glue repeats run_layerwise.py:258-274
(xtx, xty normalised by n; reconstruct_best_weight_xty; prune_unstructured on w_star.T with
the same, in-place modified, xtx).
"""

import sys

import obc_solver_func as off
import torch

torch.cuda.synchronize = lambda *a, **k: None  # CPU machine: their loop calls it


def layers():
    out = {}
    g = torch.Generator().manual_seed(0)
    # 1. correlated inputs, one dead input (always zero), weights near the LS solution
    n, d_in, d_out = 256, 16, 8
    z = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    x = (
        z
        @ (
            torch.eye(d_in, dtype=torch.float64)
            + 0.4 * torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
        )
        + 0.3
    )
    x[:, 5] = 0.0
    wt = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) * 0.5
    bt = torch.randn(d_out, generator=g, dtype=torch.float64) * 0.5
    y = x @ wt.T + bt + 0.05 * torch.randn(n, d_out, generator=g, dtype=torch.float64)
    w = wt + 0.05 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    out["correlated_dead"] = dict(x=x, y=y, w=w, b=bt.clone(), sparsity=0.5)
    # 2. LayerNorm-fed layer: X with the ones column is exactly singular (ill-conditioned H)
    n, d_in, d_out = 300, 24, 12
    z = torch.randn(n, d_in, generator=g, dtype=torch.float64) @ torch.randn(
        d_in, d_in, generator=g, dtype=torch.float64
    )
    z = torch.nn.functional.layer_norm(z, (d_in,))
    gamma = 1 + 0.3 * torch.randn(d_in, generator=g, dtype=torch.float64)
    beta = 0.2 * torch.randn(d_in, generator=g, dtype=torch.float64)
    x = z * gamma + beta
    wt = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) * 0.3
    bt = torch.randn(d_out, generator=g, dtype=torch.float64) * 0.3
    y = torch.tanh(x @ wt.T + bt)  # not exactly linear in x
    out["layernorm_singular"] = dict(x=x, y=y, w=wt, b=bt, sparsity=0.5)
    # 3. weights far from the refit: the ridge schedule goes past r = 1e-4
    n, d_in, d_out = 400, 20, 10
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    wt = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) * 1.1
    bt = torch.zeros(d_out, dtype=torch.float64)
    y = x @ wt.T
    w = torch.zeros(d_out, d_in, dtype=torch.float64)
    out["ridge_schedule"] = dict(x=x, y=y, w=w, b=bt, sparsity=0.7)
    return out


def run_official(x, y, w, b, sparsity, dtype):
    x, y, w, b = (t.to(dtype) for t in (x, y, w, b))
    n = x.shape[0]
    xa = torch.cat([x, torch.ones(n, 1, dtype=dtype)], 1)
    xtx = xa.T @ xa / n
    xty = xa.T @ y / n
    lin = torch.nn.Linear(w.shape[1], w.shape[0]).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    w_star = off.reconstruct_best_weight_xty(xtx, xty, w=off.bias_and_weights(lin))
    xtx_after = xtx.clone()
    w_star_saved = w_star.clone()  # prune_unstructured modifies its W (a view of w_star) in place
    w_sparse = off.prune_unstructured(W=w_star.T, H=xtx, sparsity=sparsity).T
    return w_star_saved, xtx_after, w_sparse.clone()


def main(path):
    result = {
        "meta": {
            "repo": "mexiQQ/Knowledge-retention-pruning",
            "commit": "769696d8f7b05048c6e44476bb93f55b05973e25",
            "torch": str(torch.__version__),
        }
    }
    orig_float = torch.Tensor.float
    for name, lay in layers().items():
        rec = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in lay.items()}
        # float32: the official functions exactly as written
        ws, xa, wsp = run_official(**lay, dtype=torch.float32)
        rec.update(w_star_f32=ws, xtx_after_ridge_f32=xa, w_sparse_f32=wsp)
        # float64: the same functions with Tensor.float() (obc_solver_func.py:91) an identity
        torch.Tensor.float = lambda self, *a, **k: self
        try:
            ws, xa, wsp = run_official(**lay, dtype=torch.float64)
        finally:
            torch.Tensor.float = orig_float
        assert wsp.dtype == torch.float64
        rec.update(w_star_f64=ws, xtx_after_ridge_f64=xa, w_sparse_f64=wsp)
        result[name] = rec
        zeros = (wsp == 0).sum(0)
        print(
            name,
            "zeros per output (bias incl.):",
            zeros.tolist(),
            "bias zeroed:",
            int((wsp[-1] == 0).sum()),
        )
    torch.save(result, path)


if __name__ == "__main__":
    main(sys.argv[1])
