"""Training batches: windows of corpus documents, FIM-transformed, packed into rows.

A sample is a window of one document (documents are drawn in proportion to
their length). With probability `fim_rate` the window's text is cut at character
positions and laid out suffix-prefix-middle; otherwise it is plain text after
<bos>. Samples are packed into fixed-length rows (static shapes, so
torch.compile compiles once); each token knows its sample, so attention never
crosses samples, and positions restart at 0 in every sample as they do in an editor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from model.fim import SpecialIds, fim_example

MIN_TAIL = 32  # a row's leftover space shorter than this is padded, not filled with a stub


@dataclass
class Batch:
    input_ids: torch.Tensor     # int64 [batch, L]
    position_ids: torch.Tensor  # int64 [batch, L], restart at 0 per sample
    sample_ids: torch.Tensor    # int64 [batch, L], -1 on padding
    valid: torch.Tensor         # bool  [batch, L], False on padding

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.position_ids, self.sample_ids, self.valid)))

    @property
    def n_tokens(self) -> int:
        return int(self.valid.sum())


class SampleSource:
    """Draws FIM / plain training samples (lists of ids) from a tokenized split."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, tokenizer, max_len: int,
                 fim_rate: float = 0.9, seed: int = 0, ids: SpecialIds = SpecialIds()):
        if len(tokens) == 0:
            raise ValueError("empty corpus split")
        self.tokens, self.offsets, self.tokenizer = tokens, offsets, tokenizer
        self.max_len, self.fim_rate, self.ids = max_len, fim_rate, ids
        self.rng = random.Random(seed)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def window(self, max_len: int | None = None) -> tuple[np.ndarray, bool]:
        """A random window of a length-weighted random document, and whether it reaches the end."""
        pos = self.rng.randrange(len(self.tokens))
        doc = int(np.searchsorted(self.offsets, pos, side="right")) - 1
        start, end = int(self.offsets[doc]), int(self.offsets[doc + 1])
        room = self._limit(max_len) - 8  # specials, and slack for re-tokenisation after the FIM cut
        if end - start > room:
            start = self.rng.randrange(start, end - room + 1)
        stop = min(end, start + room)
        return np.asarray(self.tokens[start:stop], dtype=np.int64), stop == end

    def _limit(self, max_len: int | None) -> int:
        return self.max_len if max_len is None else min(self.max_len, max_len)

    def sample(self, max_len: int | None = None) -> list[int]:
        """One sample of at most `max_len` tokens (default self.max_len), sized to fit before the FIM cut."""
        limit = self._limit(max_len)
        window, at_end = self.window(limit)
        if self.rng.random() < self.fim_rate:
            text = self.tokenizer.decode(window.tolist(), skip_special_tokens=False)
            return fim_example(text, self.encode, self.rng, self.ids)[:limit]
        tail = [self.ids.eos] if at_end else []
        return ([self.ids.bos] + window.tolist() + tail)[:limit]


def pack_row(source: SampleSource, length: int, pad_id: int) -> tuple[list[int], list[int], list[int]]:
    """One row of `length` tokens: ids, positions, sample numbers (-1 = padding)."""
    ids: list[int] = []
    positions: list[int] = []
    samples: list[int] = []
    n = 0
    while length - len(ids) >= MIN_TAIL or not ids:
        # Ask for a sample that fits the room left: cutting a FIM sample afterwards
        # would drop its middle (SPM puts the middle last).
        sample = source.sample(length - len(ids))[: length - len(ids)]
        ids += sample
        positions += range(len(sample))
        samples += [n] * len(sample)
        n += 1
    pad = length - len(ids)
    return ids + [pad_id] * pad, positions + [0] * pad, samples + [-1] * pad


def make_batch(source: SampleSource, batch_size: int, length: int, pad_id: int = 0) -> Batch:
    rows = [pack_row(source, length, pad_id) for _ in range(batch_size)]
    ids, pos, smp = (torch.tensor([r[k] for r in rows], dtype=torch.int64) for k in range(3))
    return Batch(ids, pos, smp, smp >= 0)


class BatchStream(torch.utils.data.IterableDataset):
    """Endless batches; each DataLoader worker draws with its own seed."""

    def __init__(self, tokens, offsets, tokenizer, batch_size: int, length: int, fim_rate: float, seed: int):
        super().__init__()
        self.args = (tokens, offsets, tokenizer, batch_size, length, fim_rate, seed)

    def __iter__(self):
        tokens, offsets, tokenizer, batch_size, length, fim_rate, seed = self.args
        info = torch.utils.data.get_worker_info()
        worker_seed = seed * 1_000 + (info.id if info else 0)
        source = SampleSource(tokens, offsets, tokenizer, length, fim_rate, worker_seed)
        while True:
            yield make_batch(source, batch_size, length)
