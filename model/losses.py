"""Training losses.

- Diffusion: cross-entropy of the clean token at noisy positions, weighted 1/t
  (the masked-diffusion ELBO), averaged over real tokens. t is the block's
  effective mask rate: the drawn rate, or the realised share when the
  at-least-one-mask clip masked more than the draw asked for (so a tiny t
  cannot blow one token's weight up to 1/t).
- Next token: cross-entropy of token i+1 at clean position i, within a sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def effective_rates(masked: torch.Tensor, rates: torch.Tensor, valid: torch.Tensor, block_size: int) -> torch.Tensor:
    """Per position: max(drawn block rate, masked share of the block's valid tokens)."""
    b, length = masked.shape
    m = masked.view(b, -1, block_size).float().sum(-1, keepdim=True)
    v = valid.view(b, -1, block_size).float().sum(-1, keepdim=True).clamp(min=1)
    share = (m / v).expand(-1, -1, block_size).reshape(b, length)
    return torch.maximum(rates, share)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE of each row of gathered logits [n, vocab] (any float dtype) against targets [n], in fp32."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def diffusion_loss(ce: torch.Tensor, weights: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Sum of weighted per-token CE at the noisy positions with a loss, divided by the real tokens in the batch."""
    return (ce * weights).sum() / max(n_tokens, 1)


def next_token_loss(ce: torch.Tensor) -> torch.Tensor:
    """Mean of the per-token next-token CE."""
    return ce.mean()


def next_token_targets(input_ids: torch.Tensor, sample_ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose next token is in the same sample, and those next tokens."""
    has_next = torch.zeros_like(valid)
    has_next[:, :-1] = valid[:, :-1] & valid[:, 1:] & (sample_ids[:, :-1] == sample_ids[:, 1:])
    targets = torch.zeros_like(input_ids)
    targets[:, :-1] = input_ids[:, 1:]
    return has_next, targets
