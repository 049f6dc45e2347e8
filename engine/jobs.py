"""From cursor text to a model job: the context window, its token budgets, and text stop rules.

The context is suffix-prefix-middle (engine.tokenizer.spm_layout). Budgets keep
it inside what the model was trained on. The window is chosen so it stays put
while the user types: the prefix is cut only at line numbers on a fixed grid, so
a keystroke at the cursor changes the end of the prefix, never its start, and the
engine's prefix cache keeps hitting; the suffix keeps its start (the cursor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from engine.tokenizer import TextCodec

# Prefix windows start at line numbers that are multiples of this: the start moves
# rarely (once per this many lines typed) instead of on every keystroke.
WINDOW_LINE_STRIDE = 8
# Pessimistic characters per token when estimating how much text can fit a budget.
MAX_CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class Budget:
    """Token budgets of a context (special tokens not counted)."""

    prefix_tokens: int = 384  # code before the cursor
    suffix_tokens: int = 128  # code after the cursor

    def __post_init__(self) -> None:
        if self.prefix_tokens < 1 or self.suffix_tokens < 0:
            raise ValueError(f"budget must have prefix_tokens >= 1 and suffix_tokens >= 0, got {self}")


@dataclass(frozen=True)
class Context:
    """The model's input for one cursor, and which text it covers."""

    ids: list[int]  # <bos><fim_suffix> suffix <fim_prefix> prefix <fim_middle>
    prefix_start: int  # character offset in the prefix text where the window starts
    suffix_end: int  # character offset in the suffix text where the window ends
    prefix_tokens: int
    suffix_tokens: int


def build_context(codec: TextCodec, prefix: str, suffix: str, budget: Budget) -> Context:
    """The SPM context for text before/after the cursor within the budget."""
    prefix_start, prefix_ids = window_prefix(codec, prefix, budget.prefix_tokens)
    suffix_end, suffix_ids = window_suffix(codec, suffix, budget.suffix_tokens)
    ids = [codec.bos, codec.fim_suffix, *suffix_ids, codec.fim_prefix, *prefix_ids, codec.fim_middle]
    return Context(ids, prefix_start, suffix_end, len(prefix_ids), len(suffix_ids))


def window_prefix(codec: TextCodec, prefix: str, budget: int) -> tuple[int, list[int]]:
    """(start offset, ids) of the longest grid-aligned tail of prefix that fits the budget.

    Grid-aligned: starts at a line whose number is a multiple of WINDOW_LINE_STRIDE
    (or the file's start). When even the last grid line does not fit (very long
    lines), the tail is cut at a token boundary instead.
    """
    if len(prefix) <= budget * MAX_CHARS_PER_TOKEN:
        ids = codec.encode(prefix)
        if len(ids) <= budget:
            return 0, ids
    # Only text this close to the cursor can possibly fit the budget.
    earliest = max(0, len(prefix) - budget * MAX_CHARS_PER_TOKEN)
    line_number = prefix.count("\n", 0, earliest)  # the line holding `earliest`
    start = prefix.rfind("\n", 0, earliest) + 1
    if start < earliest:  # that line starts too early: begin with the next one
        start, line_number = prefix.find("\n", earliest) + 1, line_number + 1
    while 0 < start < len(prefix):
        if line_number % WINDOW_LINE_STRIDE == 0:
            ids = codec.encode(prefix[start:])
            if len(ids) <= budget:
                return start, ids
        start, line_number = prefix.find("\n", start) + 1, line_number + 1
    ids = codec.encode(prefix[earliest:])[-budget:]
    return len(prefix) - len(codec.decode(ids)), ids


def window_suffix(codec: TextCodec, suffix: str, budget: int) -> tuple[int, list[int]]:
    """(end offset, ids) of the head of suffix that fits the budget, cut at a line end when possible."""
    if budget == 0 or not suffix:
        return 0, []
    head = suffix[: budget * MAX_CHARS_PER_TOKEN]
    ids = codec.encode(head)
    if len(ids) <= budget and len(head) == len(suffix):
        return len(suffix), ids
    ids = ids[:budget]
    text = codec.decode(ids)
    cut = text.rfind("\n")
    if cut > 0:  # end on a whole line: a half token at the window's edge reads as a typo
        text = text[: cut + 1]
        ids = codec.encode(text)
    return len(text), ids


# --- text stop rules ------------------------------------------------------------------------


def indentation(line: str) -> int:
    """Width of a line's leading whitespace (a tab counts as 4, as a reader would see it)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4
        else:
            break
    return width


def block_floor(prefix: str) -> int:
    """Lines of a block completion must be indented at least this much (else the block ended).

    The cursor line's indentation; after a line ending in ":" the body must go deeper.
    """
    current = prefix[prefix.rfind("\n") + 1 :]
    if current.strip():
        floor = indentation(current)
        return floor + 1 if current.rstrip().endswith(":") else floor
    # On an empty (or whitespace-only) line: the indentation typed so far, or the
    # previous non-blank line's body level.
    if current:
        return indentation(current)
    for line in reversed(prefix.splitlines()):
        if line.strip():
            return indentation(line) + (1 if line.rstrip().endswith(":") else 0)
    return 0


def cut_block(text: str, floor: int) -> tuple[str, bool]:
    """Cut a block completion before its first complete line indented less than floor.

    The first line continues the cursor's line, so it is never judged. Returns the
    text and whether it was cut. Trailing blank lines are dropped with the cut.
    """
    lines = text.split("\n")
    for i in range(1, len(lines)):
        line = lines[i]
        complete = i < len(lines) - 1
        if line.strip() and (complete or len(line) > indentation(line)) and indentation(line) < floor:
            return "\n".join(lines[:i]).rstrip(" \t\n") if i > 0 else "", True
    return text, False


def block_stop_rule(codec: TextCodec, prefix: str, skip_chars: int = 0) -> Callable[[list[int]], bool]:
    """should_stop for block mode: True once the decoded text has left the cursor's block.

    skip_chars: leading decoded characters that are not part of the completion
    (the healed tail, engine.healing).
    """
    floor = block_floor(prefix)

    def should_stop(tokens: list[int]) -> bool:
        return cut_block(codec.decode(tokens)[skip_chars:], floor)[1]

    return should_stop


def text_stop_rule(codec: TextCodec, stop_at: str, skip_chars: int = 0) -> Callable[[list[int]], bool]:
    """should_stop: True once the decoded text (after skip_chars healed characters) contains stop_at."""

    def should_stop(tokens: list[int]) -> bool:
        return stop_at in codec.decode(tokens)[skip_chars:]

    return should_stop


def either(*rules: Optional[Callable[[list[int]], bool]]) -> Optional[Callable[[list[int]], bool]]:
    """One should_stop that is True when any of the given ones is (None ones are left out)."""
    present = [rule for rule in rules if rule is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return lambda tokens: any(rule(tokens) for rule in present)


def cut_line(text: str) -> str:
    """Line mode: the text up to (not including) the first newline."""
    at = text.find("\n")
    return text if at == -1 else text[:at]


def choose_mode(prefix: str, suffix: str) -> str:
    """"block" where a block is expected, else "line" (the default of `--mode auto`).

    A block is expected on an empty line that opens a body (after a line ending in
    ":"), at the end of a line ending in ":", or in an empty body (`pass`, `...`
    and nothing else left to write on the cursor's line).
    """
    current = prefix[prefix.rfind("\n") + 1 :]
    rest_of_line = suffix.split("\n", 1)[0]
    if rest_of_line.strip():
        return "line"  # mid-line: finish this line
    if current.rstrip().endswith(":"):
        return "block"
    if not current.strip():
        previous = [line for line in prefix.splitlines()[:-1] if line.strip()] if current else \
            [line for line in prefix.splitlines() if line.strip()]
        if previous and previous[-1].rstrip().endswith(":"):
            return "block"
    return "line"
