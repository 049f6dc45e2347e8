"""Attention masks for training (boolean, True = query may attend to key).

Packed rows hold several samples; `sample_ids` [batch, L] says which sample a
position belongs to (padding has its own id) and tokens never see another sample.

The one-pass block diffusion mask (BD3-LM) covers the input noisy ++ clean, both
streams at the same positions:
- a noisy token sees the noisy tokens of its own block (bidirectional) and the
  clean tokens of earlier blocks only: never later clean tokens, never other blocks' noise;
- a clean token sees earlier clean tokens (causal) and never a noisy one.
So the clean stream's keys/values are exactly what a KV cache holds at inference.
"""

from __future__ import annotations

import torch


def same_sample(sample_ids: torch.Tensor) -> torch.Tensor:
    """[batch, L, L]: both positions belong to the same packed sample."""
    return sample_ids[:, :, None] == sample_ids[:, None, :]


def causal_mask(sample_ids: torch.Tensor) -> torch.Tensor:
    """[batch, 1, L, L] causal attention within each sample (the AR stage)."""
    length = sample_ids.shape[1]
    idx = torch.arange(length, device=sample_ids.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    return (causal & same_sample(sample_ids))[:, None]


def one_pass_mask(sample_ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """[batch, 1, 2L, 2L] mask for the input noisy ++ clean (see module docstring)."""
    length = sample_ids.shape[1]
    idx = torch.arange(length, device=sample_ids.device)
    block = idx // block_size
    same = same_sample(sample_ids)
    noisy_to_noisy = (block[:, None] == block[None, :]) & same
    noisy_to_clean = (block[None, :] < block[:, None]) & same
    clean_to_noisy = torch.zeros_like(same)
    clean_to_clean = (idx[:, None] >= idx[None, :]) & same
    top = torch.cat([noisy_to_noisy, noisy_to_clean], dim=2)
    bottom = torch.cat([clean_to_noisy, clean_to_clean], dim=2)
    return torch.cat([top, bottom], dim=1)[:, None]
