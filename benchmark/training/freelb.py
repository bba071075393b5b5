"""FreeLB adversarial training in word-embedding space, as a ``step_fn`` for the shared loop.

Zhu et al., "FreeLB: Enhanced Adversarial Training for Natural Language Understanding",
ICLR 2020. One training step runs K forward/backward passes on ``embeddings + delta``; after
each pass delta ascends along its normalised gradient, and every pass's loss / K is
back-propagated into whatever requires grad (the weights for dense FreeLB, only the mask
scores for RobustT), so the parameter gradient is the average over the K perturbations.

Settings (METHODS.md "Dense starting models: FreeLB" and "RobustT"):
- delta starts uniform in [-1, 1] on the real (non-pad) tokens, scaled by
  ``init_mag / sqrt(n_tokens * hidden)`` (the FreeLB / RobustT code's "L2 magnitude"); with
  ``init_mag = 0`` it starts at zero.
- ascent: ``delta += step_size * grad / ||grad||`` with the norm taken per example (L2 over
  all tokens and dims: RobustT code) or per token (L2 over the hidden dim: AKR dense code).
- ``max_norm = 0`` means no projection (both papers); otherwise the per-example L2 norm of
  delta is clipped to ``max_norm`` as in the FreeLB code.
- Only the word embeddings are perturbed; position and token-type embeddings are added by the
  model on top of ``inputs_embeds`` as usual.
Deviation: none known for the L2 variant; the FreeLB code's L-inf variant is not implemented.
"""

from __future__ import annotations

import torch
from torch import nn

Batch = dict[str, torch.Tensor]

NORMS = ("example", "token")


def init_delta(embeds: torch.Tensor, attention_mask: torch.Tensor, init_mag: float) -> torch.Tensor:
    """The initial perturbation: uniform noise on real tokens with FreeLB's magnitude scaling."""
    if init_mag <= 0:
        return torch.zeros_like(embeds)
    mask = attention_mask.to(embeds.dtype).unsqueeze(-1)
    delta = torch.empty_like(embeds).uniform_(-1, 1) * mask
    dims = attention_mask.to(embeds.dtype).sum(1) * embeds.size(-1)
    return delta * (init_mag / torch.sqrt(dims)).view(-1, 1, 1)


def ascent_update(
    delta: torch.Tensor, grad: torch.Tensor, step_size: float, norm: str, max_norm: float = 0.0
) -> torch.Tensor:
    """One FreeLB ascent step on ``delta`` (batch, tokens, hidden); returns the new delta.

    ``norm="example"``: the update has L2 norm ``step_size`` per example.
    ``norm="token"``: every token with a non-zero gradient moves by ``step_size`` (L2).
    """
    if norm == "example":
        denom = grad.flatten(1).norm(dim=1).view(-1, 1, 1)
    elif norm == "token":
        denom = grad.norm(dim=-1, keepdim=True)
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    delta = (delta + step_size * grad / denom.clamp(min=1e-8)).detach()
    if max_norm > 0:
        dnorm = delta.flatten(1).norm(dim=1).view(-1, 1, 1)
        delta = (delta * torch.clamp(max_norm / dnorm.clamp(min=1e-12), max=1.0)).detach()
    return delta


class FreeLBStep:
    """A ``step_fn`` for :func:`benchmark.training.loop.train` doing K FreeLB ascent steps.

    Calls ``backward`` K times (loss / K each) and returns the summed detached loss. The last
    perturbation is kept in ``self.last_delta`` (for tests and diagnostics).
    """

    def __init__(
        self,
        adv_steps: int = 5,
        adv_lr: float = 0.03,
        init_mag: float = 0.05,
        norm: str = "example",
        max_norm: float = 0.0,
        extra_loss=None,
    ) -> None:
        """Args:
        adv_steps: K, the number of forward/backward passes (ascent steps) per batch.
        adv_lr: ascent step size.
        init_mag: magnitude of the initial random perturbation (0 = start at zero).
        norm: ``example`` (RobustT code) or ``token`` (AKR dense code) gradient normalisation.
        max_norm: projection radius of delta (0 = unbounded, as in both papers).
        extra_loss: optional ``callable(model) -> tensor`` added once per step and
            back-propagated separately (RobustT's L0 penalty plugs in here).
        """
        if adv_steps < 1:
            raise ValueError(f"adv_steps must be >= 1, got {adv_steps}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.adv_steps = int(adv_steps)
        self.adv_lr = float(adv_lr)
        self.init_mag = float(init_mag)
        self.norm = norm
        self.max_norm = float(max_norm)
        self.extra_loss = extra_loss
        self.last_delta: torch.Tensor | None = None

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Run the K ascent steps on ``batch``; gradients accumulate into the parameters."""
        emb_layer = model.get_input_embeddings()
        input_ids = batch["input_ids"]
        inputs = {k: v for k, v in batch.items() if k != "input_ids"}
        embeds = emb_layer(input_ids)
        delta = init_delta(embeds.detach(), batch["attention_mask"], self.init_mag)
        total = torch.zeros((), device=embeds.device)
        for k in range(self.adv_steps):
            delta.requires_grad_()
            loss = model(inputs_embeds=embeds + delta, **inputs).loss / self.adv_steps
            loss.backward()
            total += loss.detach()
            if k == self.adv_steps - 1:
                break
            delta = ascent_update(delta, delta.grad.detach(), self.adv_lr, self.norm, self.max_norm)
            embeds = emb_layer(input_ids)  # the graph was freed by backward
        self.last_delta = delta.detach()
        if self.extra_loss is not None:
            extra = self.extra_loss(model)
            extra.backward()
            total += extra.detach()
        return total
