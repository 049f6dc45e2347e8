"""Token healing: completions for a cursor that ends inside a token.

An editor cursor rarely sits where the tokenizer would cut the text. After the
indentation of a new line the prefix ends in "\\n        " (one token), while the
training text had "\\n       " + " return"; after "x = sel" it ends in " " + "sel"
where the training text had " self". The model never saw those cuts, so it
continues them badly (measured on the memorized test model: 0 of 68 such lines
exact without healing).

Healing backs the context off to the last tokens the model can trust and makes
the completion start with the text it took away (the "tail"): the first
completion token must start with the tail (" sel" -> " self", " select"), or be
a strict prefix of it ("\\n       " of "\\n        "), in which case the engine
commits it and heals the remainder. The completion shown to the user is the
decoded text after the tail.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from engine.contract import SPECIAL_TOKENS
from engine.tokenizer import TextCodec

# At most this many trailing prefix tokens are taken back: enough for " " + "sel"
# or "(" + "'" splits; more only re-decodes text the user already has.
MAX_BACK_OFF_TOKENS = 3
# A longer tail is a long identifier or a run of spaces: healing it would force a
# long exact re-spelling for little gain.
MAX_TAIL_CHARS = 24
# Upper bound for "every string that starts with s": s + the largest code point.
_AFTER_ALL = chr(0x10FFFF)


@dataclass(frozen=True)
class HealPlan:
    """The context to prefill and the text the completion must start with."""

    context_ids: list[int]  # the context with the backed-off tokens removed
    tail: str  # their text ("" = no healing)
    backed_off: int  # how many tokens were removed


@dataclass(frozen=True)
class FirstToken:
    """What the first completion token may be, for a tail, as masks over the vocabulary."""

    covering: np.ndarray  # bool [vocab]: tokens whose text starts with the tail
    newline_after: np.ndarray  # bool [vocab]: covering tokens with a newline after the tail


class TokenHealer:
    """The vocabulary's token texts, indexed for prefix queries."""

    def __init__(self, codec: TextCodec):
        self.codec = codec
        self.vocab_size = codec.vocab_size
        first = len(SPECIAL_TOKENS)
        self.texts = [""] * first + [codec.decode([i]) for i in range(first, self.vocab_size)]
        # Tokens that are only part of a character decode to U+FFFD: they never heal.
        usable = [(t, i) for i, t in enumerate(self.texts) if i >= first and t and "\ufffd" not in t]
        usable.sort()
        self._sorted_texts = [t for t, _ in usable]
        self._sorted_ids = np.array([i for _, i in usable], dtype=np.int64)
        self._ids_by_text: dict[str, list[int]] = {}
        for t, i in usable:
            self._ids_by_text.setdefault(t, []).append(i)

    # --- planning -----------------------------------------------------------------------------

    def plan(self, context_ids: Sequence[int], prefix_tokens: int) -> HealPlan:
        """Back off the last prefix tokens (they sit just before the final <fim_middle>).

        Takes back the longest run of 1..MAX_BACK_OFF_TOKENS trailing tokens whose
        text some longer token extends: that is where the cursor may be inside a
        token. The last token alone is also taken back when it ends in whitespace
        (the byte-level tokenizer glues a space to the word after it, and the
        longest indentation token has no longer token to extend it). Nothing is
        taken back otherwise (the cut is then one the model has seen).
        """
        ids = list(context_ids)
        middle = ids[-1]
        prefix_ids = ids[-1 - prefix_tokens : -1] if prefix_tokens else []
        best = 0
        for k in range(1, min(MAX_BACK_OFF_TOKENS, len(prefix_ids)) + 1):
            tail = self._text(prefix_ids[-k:])
            if tail is None or len(tail) > MAX_TAIL_CHARS:
                break
            if not (self._extendable(tail) or (k == 1 and tail[-1].isspace())):
                break
            best = k
        if best == 0:
            return HealPlan(ids, "", 0)
        tail = self._text(prefix_ids[-best:])
        return HealPlan(ids[: -1 - best] + [middle], tail, best)

    def _text(self, ids: Sequence[int]) -> str | None:
        """The tokens' text, or None when they split a character (the tail must be exact text)."""
        text = "".join(self.texts[i] for i in ids)
        if not text or "\ufffd" in text or text != self.codec.decode(list(ids)):
            return None
        return text

    def _extendable(self, tail: str) -> bool:
        """Whether some token's text starts with the tail and is longer than it."""
        lo, hi = self._range(tail)
        return any(len(self._sorted_texts[j]) > len(tail) for j in range(lo, hi))

    def _range(self, tail: str) -> tuple[int, int]:
        """Indices into the sorted texts of every token starting with the tail."""
        return (bisect.bisect_left(self._sorted_texts, tail),
                bisect.bisect_left(self._sorted_texts, tail + _AFTER_ALL))

    # --- choosing -------------------------------------------------------------------------------

    def strict_prefixes(self, tail: str) -> list[int]:
        """Tokens whose text is a non-empty strict prefix of the tail (each heals part of it)."""
        return [i for n in range(1, len(tail)) for i in self._ids_by_text.get(tail[:n], ())]

    @lru_cache(maxsize=1024)
    def first_token(self, tail: str) -> FirstToken:
        """Masks for the token that completes the tail (cached: tails repeat while typing).

        After a tail ending in spaces or a tab, no token that adds more whitespace:
        the user's indentation stands (a weak model otherwise likes "\n        " over the
        typed "\n    ", i.e. one level too deep); "\n   " + " return" heals it.
        """
        lo, hi = self._range(tail)
        ids = self._sorted_ids[lo:hi]
        if tail[-1:] in (" ", "\t"):
            ids = np.array([i for i in ids if not self.texts[i][len(tail):][:1].isspace()], dtype=np.int64)
        covering = np.zeros(self.vocab_size, dtype=np.bool_)
        covering[ids] = True
        newline_after = np.zeros(self.vocab_size, dtype=np.bool_)
        for i in ids:
            newline_after[i] = "\n" in self.texts[i][len(tail):]
        return FirstToken(covering, newline_after)

    def _natural_split(self, tail: str, token: int) -> bool:
        """Whether the tokenizer itself puts a token boundary after this part of the tail.

        It does inside a run of whitespace before a word ("\n       " + " return":
        the run gives its last space to the word). Other parts (" " + "os", " se" +
        "lf") hardly occur in training text; a weak model may still like them, which
        would derail the completion.
        """
        rest = tail[len(self.texts[token]):]
        lo, hi = self._range(rest)
        return hi > lo and self.texts[token][-1:].isspace() and rest[0].isspace()

    def step_toward(self, tail: str, logits: np.ndarray) -> tuple[int, str] | None:
        """One healing step before decoding: (token, remaining tail) when the best candidate
        is a strict prefix of the tail, else None (the first decoded token will cover it).

        Greedy: the most likely of the covering tokens and the strict prefixes wins.
        """
        partial = [i for i in self.strict_prefixes(tail) if self._natural_split(tail, i)]
        if not partial:
            return None
        covering = self.first_token(tail).covering
        best_cover = float(np.max(np.where(covering, logits, -np.inf))) if covering.any() else -np.inf
        best_partial = max(partial, key=lambda i: logits[i])
        if logits[best_partial] <= best_cover:
            return None
        return best_partial, tail[len(self.texts[best_partial]):]
