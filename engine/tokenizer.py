"""Tokenizer wrapper shared by the engine and the trainer (torch-free).

Loads a byte-level BPE tokenizer.json, checks the special tokens sit at the ids
of engine.contract, and encodes document text with special-token text treated
as plain text (a source file may well contain "<|eos|>").
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer

from engine.contract import BOS, EOS, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, MASK, PAD, SPECIAL_TOKENS


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json whose special tokens are the project's, in order; clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"{path}: not a valid tokenizer.json ({exc})") from None
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise ValueError(f"{path}: special token {token} should have id {expected_id}, has {tok.token_to_id(token)}")
    tok.encode_special_tokens = True
    return tok


def spm_layout(prefix_ids: list[int], suffix_ids: list[int], bos: int, fim_prefix: int, fim_suffix: int, fim_middle: int) -> list[int]:
    """<bos><fim_suffix> suffix <fim_prefix> prefix <fim_middle>: the one definition of the SPM context.

    The trainer (model/fim.py) and the runtime both build contexts through this.
    """
    return [bos, fim_suffix, *suffix_ids, fim_prefix, *prefix_ids, fim_middle]


class TextCodec:
    """Encode/decode plain text and build suffix-prefix-middle contexts."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pad, self.mask, self.bos, self.eos = (tokenizer.token_to_id(t) for t in (PAD, MASK, BOS, EOS))
        self.fim_prefix, self.fim_suffix, self.fim_middle = (tokenizer.token_to_id(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))

    @classmethod
    def from_file(cls, path: str | Path) -> "TextCodec":
        return cls(load_tokenizer(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def spm_context(self, prefix: str, suffix: str) -> list[int]:
        """<bos><fim_suffix> suffix <fim_prefix> prefix <fim_middle>: what the model reads before the middle."""
        return spm_layout(self.encode(prefix), self.encode(suffix), self.bos, self.fim_prefix, self.fim_suffix, self.fim_middle)

    @property
    def banned_ids(self) -> list[int]:
        """Special tokens a completion may never contain (eos ends it instead)."""
        return [i for i in range(len(SPECIAL_TOKENS)) if i != self.eos]

    @cached_property
    def newline_tokens(self) -> np.ndarray:
        """bool [vocab]: tokens whose text contains a newline (the line-mode stop rule)."""
        out = np.zeros(self.vocab_size, dtype=bool)
        for i in range(len(SPECIAL_TOKENS), self.vocab_size):
            out[i] = "\n" in self.tokenizer.decode([i])
        return out
