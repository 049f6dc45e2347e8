"""Mask schedule of the block diffusion objective.

Each block of every sequence draws its own mask rate t ~ U(t_min, 1). Draws are
antithetic (stratified: one uniform offset shared by all blocks of the batch,
spread evenly) so the loss has less variance, and every block masks at least one
token so no block is wasted.
"""

from __future__ import annotations

import torch


def block_mask_rates(n_blocks: int, t_min: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified mask rates for `n_blocks` blocks, in random order, in [t_min, 1]."""
    u = torch.rand((), generator=generator)
    strata = (u + torch.arange(n_blocks) / n_blocks) % 1.0
    strata = strata[torch.randperm(n_blocks, generator=generator)]
    return t_min + (1 - t_min) * strata


def sample_block_masks(
    batch: int, length: int, block_size: int, valid: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions to mask, [batch, length] bool, and each position's block rate t.

    `valid` marks real tokens (not padding); padding is never masked. A block with
    no masked valid token gets one valid token masked.
    """
    if length % block_size:
        raise ValueError(f"sequence length {length} is not a multiple of block size {block_size}")
    n_blocks = batch * (length // block_size)
    t = block_mask_rates(n_blocks, generator=generator).view(batch, -1, 1)  # [batch, blocks, 1]
    noise = torch.rand(batch, length // block_size, block_size, generator=generator)
    v = valid.view(batch, -1, block_size)
    masked = (noise < t) & v
    # Clip: a block with valid tokens but nothing masked masks its lowest-noise valid token.
    empty = ~masked.any(-1, keepdim=True) & v.any(-1, keepdim=True)
    lowest = torch.where(v, noise, torch.full_like(noise, 2.0)).argmin(-1, keepdim=True)
    force = torch.zeros_like(masked).scatter_(-1, lowest, True) & empty
    masked = masked | force
    rates = t.expand(-1, -1, block_size)
    return masked.reshape(batch, length), rates.reshape(batch, length)
