"""Attention masks for training (boolean, True = query may attend to key).

Packed rows hold several samples; `sample_ids` [batch, L] says which sample a
position belongs to (padding has its own id) and tokens never see another sample.

The one-pass block diffusion mask (BD3-LM) covers the input noisy ++ clean, both
streams at the same positions:
- a noisy token sees the noisy tokens of its own block (bidirectional) and the
  clean tokens of earlier blocks only: never later clean tokens, never other blocks' noise;
- a clean token sees earlier clean tokens (causal) and never a noisy one.
So the clean stream's keys/values are exactly what a KV cache holds at inference.

Most of that mask is False, and the CPU's fused attention kernel does the work of
every masked pair anyway. `ChunkedMask` splits the queries into chunks, each with
only the key ranges it can attend to (the structure above says which), so the
kernel never sees the empty parts: the same result for about 40% of the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# ------------------------------------------------------------------ chunked (sparse) masks

@dataclass(frozen=True)
class QueryChunk:
    """Queries [start, end) attend only to the keys in key_ranges, under `mask` over those keys."""

    start: int
    end: int
    key_ranges: tuple[tuple[int, int], ...]
    mask: torch.Tensor  # bool [batch, 1, end - start, total length of key_ranges]


@dataclass(frozen=True)
class ChunkedMask:
    """A training mask as query chunks; every pair outside a chunk's key ranges is masked."""

    chunks: tuple[QueryChunk, ...]


def chunk_mask(mask: torch.Tensor, plan: list[tuple[int, int, tuple[tuple[int, int], ...]]]) -> ChunkedMask:
    """Cut a full [batch, 1, L, L] mask along a plan of (query start, query end, key ranges)."""
    chunks = []
    for start, end, ranges in plan:
        keys = torch.cat([torch.arange(a, b, device=mask.device) for a, b in ranges])
        chunks.append(QueryChunk(start, end, ranges, mask[:, :, start:end][..., keys].contiguous()))
    return ChunkedMask(tuple(chunks))


def one_pass_plan(length: int, block_size: int, n_chunks: int) -> list | None:
    """Query chunks of noisy ++ clean (length each): noisy chunk c sees the clean stream up to its
    end and its own noisy chunk; clean chunk c sees the clean stream up to its end. None when
    the chunks would split a diffusion block (the full mask is used then)."""
    size = length // n_chunks
    if n_chunks < 2 or length % n_chunks or size % block_size:
        return None
    noisy = [(c * size, (c + 1) * size, ((length, length + (c + 1) * size), (c * size, (c + 1) * size)))
             for c in range(n_chunks)]
    clean = [(length + c * size, length + (c + 1) * size, ((length, length + (c + 1) * size),))
             for c in range(n_chunks)]
    return noisy + clean


def causal_plan(length: int, n_chunks: int) -> list | None:
    """Query chunk c of a causal sequence sees the keys up to its end."""
    size = length // n_chunks
    if n_chunks < 2 or length % n_chunks:
        return None
    return [(c * size, (c + 1) * size, ((0, (c + 1) * size),)) for c in range(n_chunks)]


def one_pass_chunked(sample_ids: torch.Tensor, block_size: int, n_chunks: int) -> torch.Tensor | ChunkedMask:
    """one_pass_mask, chunked when the length allows (else the full mask)."""
    mask = one_pass_mask(sample_ids, block_size)
    plan = one_pass_plan(sample_ids.shape[1], block_size, n_chunks)
    return chunk_mask(mask, plan) if plan else mask


def causal_chunked(sample_ids: torch.Tensor, n_chunks: int) -> torch.Tensor | ChunkedMask:
    """causal_mask, chunked when the length allows (else the full mask)."""
    mask = causal_mask(sample_ids)
    plan = causal_plan(sample_ids.shape[1], n_chunks)
    return chunk_mask(mask, plan) if plan else mask
