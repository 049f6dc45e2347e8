"""Fill-in-the-middle transform in the suffix-prefix-middle (SPM) layout.

    <bos><fim_suffix> suffix <fim_prefix> prefix <fim_middle> middle <eos>

Typing at the cursor only extends the prefix, which sits after the suffix, so a
cached context stays valid while the user types. Split points are characters,
not tokens, so the model sees the same token boundaries it meets in an editor
(a cursor inside a word, after a space, ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from engine.tokenizer import spm_layout


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens (engine.contract order)."""

    pad: int = 0
    mask: int = 1
    bos: int = 2
    eos: int = 3
    fim_prefix: int = 4
    fim_suffix: int = 5
    fim_middle: int = 6


def spm_context(prefix_ids: list[int], suffix_ids: list[int], ids: SpecialIds = SpecialIds()) -> list[int]:
    """The tokens a model sees before it writes the middle (what the engine prefills)."""
    return spm_layout(prefix_ids, suffix_ids, ids.bos, ids.fim_prefix, ids.fim_suffix, ids.fim_middle)


def spm_sample(prefix_ids: list[int], middle_ids: list[int], suffix_ids: list[int], ids: SpecialIds = SpecialIds()) -> list[int]:
    """A full training example: context, the middle, and eos where the middle ends."""
    return [*spm_context(prefix_ids, suffix_ids, ids), *middle_ids, ids.eos]


def random_split(text: str, rng: random.Random, line_aligned_rate: float = 0.5) -> tuple[str, str, str]:
    """Cut `text` into (prefix, middle, suffix) at character positions.

    Half of the cuts are uniform; the other half start at a random character and
    end after 1..k whole lines, the shape of an editor's line and block completions.
    """
    n = len(text)
    if rng.random() < line_aligned_rate and n:
        start = rng.randrange(n)
        end = start
        for _ in range(min(1 + int(rng.expovariate(0.5)), 16)):
            nl = text.find("\n", end)
            end = n if nl < 0 else nl + 1
            if end == n:
                break
        return text[:start], text[start:end], text[end:]
    a, b = sorted((rng.randint(0, n), rng.randint(0, n)))
    return text[:a], text[a:b], text[b:]


def fim_example(text: str, encode: Callable[[str], list[int]], rng: random.Random, ids: SpecialIds = SpecialIds()) -> list[int]:
    """Token ids of one FIM training example built from `text`."""
    prefix, middle, suffix = random_split(text, rng)
    return spm_sample(encode(prefix), encode(middle), encode(suffix), ids)
