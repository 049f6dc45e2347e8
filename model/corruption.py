"""Edit corruption (Seed Diffusion style): random insert / delete / substitute.

Applied to the noisy stream in the `edit` stage so the model learns to revise
wrong tokens, not only fill masks: what a quick-fix needs. Edits stay inside
their block so every noisy position keeps its clean target (an insertion pushes
the block's last token out, a deletion pulls a random token in at the end); the
loss then covers every position, unmasked ones included.
"""

from __future__ import annotations

import numpy as np


def corrupt_edits(
    tokens: np.ndarray,       # int64 [batch, L], the clean stream
    valid: np.ndarray,        # bool  [batch, L], real tokens (not padding)
    block_size: int,
    max_rate: float,          # each row draws its edit rate from U(0, max_rate)
    first_plain_id: int,      # random tokens come from [first_plain_id, vocab): no special tokens
    vocab_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A corrupted copy of `tokens`; padding and block boundaries are untouched."""
    out = tokens.copy()
    batch, length = tokens.shape
    for row in range(batch):
        rate = rng.uniform(0, max_rate)
        for pos in np.flatnonzero(valid[row] & (rng.random(length) < rate)):
            block_end = min((pos // block_size + 1) * block_size, length)
            while block_end > pos + 1 and not valid[row, block_end - 1]:
                block_end -= 1  # keep padding where it is
            op = rng.integers(3)
            noise = rng.integers(first_plain_id, vocab_size)
            if op == 0:  # substitute
                out[row, pos] = noise
            elif op == 1:  # insert before pos, dropping the block's last token
                out[row, pos + 1:block_end] = out[row, pos:block_end - 1].copy()
                out[row, pos] = noise
            else:  # delete pos, pulling noise in at the block's end
                out[row, pos:block_end - 1] = out[row, pos + 1:block_end].copy()
                out[row, block_end - 1] = noise
    return out
