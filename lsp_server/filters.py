"""Post-processing of model completions before the editor shows them as ghost text.

A chain of small named filters, in the manner of tabby-agent's post-processing:
each filter takes one candidate and the text around the cursor and returns the
candidate (changed or not), or None to drop it. `apply_filters` runs every
candidate of one request through the chain and then removes duplicates, which
the filters themselves can create (two candidates that differed only in
trailing spaces are the same suggestion once trimmed).

Guarantees the tests hold the chain to:
- a filter only ever shortens a completion: its output is a prefix of its input,
  except `trim_trailing_whitespace`, which may also delete whitespace;
- the cutting filters never leave the brackets worse balanced than they found
  them (a cut that would is not made);
- in line mode no completion that comes out contains a newline.

Brackets are found with a deliberately simple per-line lexer (quotes ' and ",
backslash escapes, # comments, all forgotten at each line end), good enough for
Python and harmless elsewhere: a full tokenizer is not worth its cost here.

Pure functions: no I/O, no engine import.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

__all__ = [
    "Candidate",
    "FILTERS",
    "Filter",
    "FilterContext",
    "apply_filters",
    "balance_brackets",
    "cut_repeated_suffix",
    "drop_duplicate_lines",
    "drop_empty",
    "drop_low_confidence",
    "trim_trailing_whitespace",
]

MODES = ("line", "block")

# Only the end of the prefix and the start of the suffix matter; bounding them keeps
# every filter cheap on a long document.
PREFIX_LOOKBACK_CHARS = 8000
SUFFIX_LOOKAHEAD_CHARS = 8000
MAX_FOLLOWING_LINES = 64

_CLOSER_OF = {"(": ")", "[": "]", "{": "}"}
_OPENER_OF = {closer: opener for opener, closer in _CLOSER_OF.items()}
_QUOTES = ("'", '"')


@dataclass(frozen=True)
class FilterContext:
    """The text around the cursor and the request's settings, shared by all candidates."""

    prefix: str  # document text before the cursor (may be long; only its end matters)
    suffix: str  # document text after the cursor
    mode: str  # "line" (complete the rest of the current line) or "block" (several lines)
    min_confidence: float = 0.0  # drop candidates whose weakest token is below this

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")


@dataclass(frozen=True)
class Candidate:
    """One completion to insert at the cursor, with the model's per-token confidences.

    Filters that shorten the text keep the confidences as they are: they describe
    what the model produced, and are only read (by `drop_low_confidence`) first.
    """

    text: str
    confidences: tuple[float, ...] = ()

    @property
    def min_confidence(self) -> float:
        """The weakest token's confidence; 1.0 when the model reported none."""
        return min(self.confidences, default=1.0)


Filter = Callable[[Candidate, FilterContext], Optional[Candidate]]  # None = drop the candidate


# ---------------------------------------------------------------------------
# Text around the cursor


def _rest_of_line(suffix: str) -> str:
    """The suffix up to the end of the cursor's line (no line break)."""
    return suffix.split("\n", 1)[0].removesuffix("\r")


def _cursor_starts_a_line(prefix: str) -> bool:
    """True when only indentation precedes the cursor on its line, so a completion's first line is a whole line."""
    return prefix.rsplit("\n", 1)[-1].strip() == ""


def _first_line(text: str) -> str:
    """Text up to its first line break (\\n or a lone \\r)."""
    for index, char in enumerate(text):
        if char in "\r\n":
            return text[:index]
    return text


def _shown_part(text: str, mode: str) -> str:
    """What the editor will show: only the first line in line mode (trimming cuts the rest)."""
    return _first_line(text) if mode == "line" else text


def _following_lines(suffix: str, include_rest_of_line: bool) -> list[tuple[str, int]]:
    """The non-blank lines after the cursor, stripped, each with the suffix offset where it ends.

    With include_rest_of_line, the rest of the cursor's line counts as the first one
    (when it is not blank).
    """
    window = suffix[:SUFFIX_LOOKAHEAD_CHARS]
    found: list[tuple[str, int]] = []
    first_break = window.find("\n")
    if include_rest_of_line:
        rest_end = len(window) if first_break < 0 else first_break
        if window[:rest_end].strip():
            found.append((window[:rest_end].strip(), rest_end))
    if first_break < 0:
        return found
    start = first_break + 1
    while start <= len(window) and len(found) < MAX_FOLLOWING_LINES:
        end = window.find("\n", start)
        end = len(window) if end < 0 else end
        if window[start:end].strip():
            found.append((window[start:end].strip(), end))
        start = end + 1
    return found


def _cut_before_content_of_line(lines: list[str], index: int) -> str:
    """The text before line `index`'s first non-blank character.

    The line break and indentation stay: when the cursor's line continues after the
    cursor, that rest must still start on a line of its own; when it does not,
    `trim_trailing_whitespace` removes them.
    """
    line = lines[index]
    indentation = line[: len(line) - len(line.lstrip())]
    return "\n".join(lines[:index] + [indentation])


def _is_whole_line(index: int, line_count: int, ctx: FilterContext) -> bool:
    """Whether completion line `index` becomes a line of its own in the document.

    The first line continues the prefix's line unless the cursor starts it; the last
    one is followed by the rest of the cursor's line unless that is blank.
    """
    if index == 0 and not _cursor_starts_a_line(ctx.prefix):
        return False
    if index == line_count - 1 and _rest_of_line(ctx.suffix).strip():
        return False
    return True


# ---------------------------------------------------------------------------
# Brackets


@dataclass(frozen=True)
class _LexState:
    """Where the per-line lexer stands: inside a string (its quote), after a backslash, in a comment."""

    quote: str = ""
    escaped: bool = False
    comment: bool = False


def _code_brackets(text: str, state: _LexState) -> tuple[list[tuple[int, str]], _LexState]:
    """The brackets of `text` outside strings and comments, with their indices, and the state at its end."""
    quote, escaped, comment = state.quote, state.escaped, state.comment
    found: list[tuple[int, str]] = []
    for index, char in enumerate(text):
        if char == "\n":
            # Per-line lexing: an unterminated quote (a triple-quoted docstring, an
            # apostrophe in prose) must not swallow the rest of the file.
            quote, escaped, comment = "", False, False
        elif comment:
            continue
        elif quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char == "#":
            comment = True
        elif char in _QUOTES:
            quote = char
        elif char in _CLOSER_OF or char in _OPENER_OF:
            found.append((index, char))
    return found, _LexState(quote, escaped, comment)


def _prefix_tail(prefix: str) -> str:
    """The end of the prefix that bracket counting looks at, starting at a line start when cut."""
    if len(prefix) <= PREFIX_LOOKBACK_CHARS:
        return prefix
    tail = prefix[-PREFIX_LOOKBACK_CHARS:]
    first_break = tail.find("\n")
    return tail[first_break + 1 :] if first_break >= 0 else tail


@functools.lru_cache(maxsize=16)
def _open_brackets_at(prefix_tail: str) -> tuple[tuple[str, ...], _LexState]:
    """The brackets still open at the cursor (innermost last) and the lexer state there.

    Cached: every candidate of a request, and several filters, ask about the same prefix.
    """
    brackets, state = _code_brackets(prefix_tail, _LexState())
    stack: list[str] = []
    for _, char in brackets:
        if char in _CLOSER_OF:
            stack.append(char)
        elif _OPENER_OF[char] in stack:
            # Recover from a mismatch in the user's code by closing through to the
            # matching opener; a closer whose opener lies before the window is ignored.
            while stack.pop() != _OPENER_OF[char]:
                pass
    return tuple(stack), state


def _brackets_at_cursor(ctx: FilterContext) -> tuple[tuple[str, ...], _LexState]:
    return _open_brackets_at(_prefix_tail(ctx.prefix))


def _imbalance(text: str, ctx: FilterContext, suffix_part: str) -> int:
    """Unmatched closers plus brackets left open, over the prefix's open brackets, `text` and `suffix_part`.

    Only differences matter (the prefix is the same for every variant of a
    completion): a cut is allowed when it does not raise this number.
    """
    open_brackets, state = _brackets_at_cursor(ctx)
    stack = list(open_brackets)
    unmatched = 0
    brackets, _ = _code_brackets(text + suffix_part, state)
    for _, char in brackets:
        if char in _CLOSER_OF:
            stack.append(char)
        elif stack and stack[-1] == _OPENER_OF[char]:
            stack.pop()
        else:
            unmatched += 1
    return unmatched + len(stack)


def _not_worse_balanced(shorter: str, longer: str, ctx: FilterContext, suffix_part: str) -> bool:
    return _imbalance(shorter, ctx, suffix_part) <= _imbalance(longer, ctx, suffix_part)


def _first_unmatched_closer(text: str, ctx: FilterContext) -> Optional[int]:
    """Index of the first closer in `text` with no opener (in the prefix or the text) to close, if any."""
    open_brackets, state = _brackets_at_cursor(ctx)
    stack = list(open_brackets)
    brackets, _ = _code_brackets(text, state)
    for index, char in brackets:
        if char in _CLOSER_OF:
            stack.append(char)
        elif stack and stack[-1] == _OPENER_OF[char]:
            stack.pop()
        else:
            return index
    return None


def _closers_of_prefix_brackets(text: str, ctx: FilterContext) -> set[int]:
    """Indices of the closers in `text` that close a bracket opened in the prefix (not in the text)."""
    open_brackets, state = _brackets_at_cursor(ctx)
    stack = [(char, True) for char in open_brackets]
    closing_prefix: set[int] = set()
    brackets, _ = _code_brackets(text, state)
    for index, char in brackets:
        if char in _CLOSER_OF:
            stack.append((char, False))
        elif stack and stack[-1][0] == _OPENER_OF[char]:
            _, opened_in_prefix = stack.pop()
            if opened_in_prefix:
                closing_prefix.add(index)
        else:
            break  # unmatched: nothing after it is reliable
    return closing_prefix


# ---------------------------------------------------------------------------
# The filters


def drop_low_confidence(candidate: Candidate, ctx: FilterContext) -> Optional[Candidate]:
    """Drop a candidate whose weakest token is below the request's confidence floor.

    Example: with ctx.min_confidence 0.5, confidences (0.9, 0.3, 0.8) -> dropped;
    (0.9, 0.6) -> kept. A candidate without confidences counts as fully confident.
    """
    if candidate.min_confidence < ctx.min_confidence:
        return None
    return candidate


def _cut_overlap_with_rest_of_line(text: str, ctx: FilterContext) -> str:
    """Remove the longest tail of `text` that the rest of the cursor's line already starts with.

    Overlaps of whitespace only are not meaningful, and a cut that would unbalance
    brackets is refused: in `print(` + `len(x)` + `)` the completion's `)` closes its
    own `len(`, not the one after the cursor.
    """
    rest = _rest_of_line(ctx.suffix)
    for length in range(min(len(text), len(rest)), 0, -1):
        overlap = rest[:length]
        if overlap.strip() and text.endswith(overlap):
            shorter = text[:-length]
            if _not_worse_balanced(shorter, text, ctx, rest):
                return shorter
    return text


def _cut_where_following_lines_repeat(text: str, ctx: FilterContext) -> str:
    """Cut `text` before its first whole line equal (stripped) to the first non-blank line after the cursor's line.

    That is where the model has run into the code that follows and started copying it.
    """
    following = _following_lines(ctx.suffix, include_rest_of_line=False)
    if not following:
        return text
    first_following, end_offset = following[0]
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.strip() == first_following and _is_whole_line(index, len(lines), ctx):
            shorter = _cut_before_content_of_line(lines, index)
            if _not_worse_balanced(shorter, text, ctx, ctx.suffix[:end_offset]):
                return shorter
            return text
    return text


def cut_repeated_suffix(candidate: Candidate, ctx: FilterContext) -> Optional[Candidate]:
    """Cut the part of a completion that repeats text already after the cursor.

    Rest of the line: prefix `foo(a, `, completion `b)`, suffix `)` -> `b` (the tail
    `)` equals the start of the rest of the line). Block mode also cuts where the
    completion starts copying the next lines: prefix `def area(r):\\n    `, completion
    `return 3.14 * r * r\\n\\nprint(area(2))`, suffix `\\n\\nprint(area(2))` ->
    `return 3.14 * r * r\\n\\n` (trimming removes the blank tail later).
    Completions that do not overlap the suffix are returned unchanged.
    """
    text = _shown_part(candidate.text, ctx.mode)
    shorter = text
    if ctx.mode == "block":
        shorter = _cut_where_following_lines_repeat(shorter, ctx)
    shorter = _cut_overlap_with_rest_of_line(shorter, ctx)
    if shorter == text:
        return candidate
    return replace(candidate, text=shorter)


def drop_duplicate_lines(candidate: Candidate, ctx: FilterContext) -> Optional[Candidate]:
    """Block mode: drop trailing completion lines that duplicate the lines right after the cursor.

    Example: suffix `\\n    x += 1\\n    return x`, completion `y = 2\\n    return x`
    -> `y = 2\\n    ` (accepting it no longer doubles `return x`). Lines are compared
    stripped, blank lines ignored, and only against as many lines after the cursor
    as the completion has non-blank lines: a `return x` far below is unrelated.
    A drop that would leave the brackets worse balanced is not made.
    """
    if ctx.mode != "block":
        return candidate
    text = candidate.text
    code_line_count = sum(1 for line in text.split("\n") if line.strip())
    nearby = _following_lines(ctx.suffix, include_rest_of_line=True)[:code_line_count]
    if not nearby:
        return candidate
    duplicates = {line for line, _ in nearby}
    suffix_part = ctx.suffix[: nearby[-1][1]]
    kept = text
    while True:
        lines = kept.split("\n")
        non_blank = [index for index, line in enumerate(lines) if line.strip()]
        if not non_blank:
            break
        last = non_blank[-1]
        if lines[last].strip() not in duplicates or not _is_whole_line(last, len(lines), ctx):
            break
        shorter = _cut_before_content_of_line(lines, last)
        if not _not_worse_balanced(shorter, kept, ctx, suffix_part):
            break
        kept = shorter
    if kept == text:
        return candidate
    return replace(candidate, text=kept)


def _cut_before_first_unmatched_closer(text: str, ctx: FilterContext) -> str:
    """Cut `text` before a closer that closes nothing open in the prefix or in the text itself."""
    index = _first_unmatched_closer(text, ctx)
    return text if index is None else text[:index]


def _drop_closers_the_line_already_has(text: str, ctx: FilterContext) -> str:
    """Remove closers at the end of `text` that the rest of the line, starting with a closer, makes extra.

    Only closers of brackets opened in the prefix are candidates, and as few as
    possible are removed: `foo(bar(` + `x)` + `)` is balanced and stays.
    """
    rest = _rest_of_line(ctx.suffix)
    if not rest or rest[0] not in _OPENER_OF:
        return text
    body = text.rstrip(" \t")
    closing_prefix = _closers_of_prefix_brackets(body, ctx)
    start = len(body)
    while start > 0 and (start - 1) in closing_prefix:
        start -= 1
    best, best_imbalance = text, _imbalance(text, ctx, rest)
    for cut in range(len(body) - 1, start - 1, -1):
        shorter = body[:cut]
        imbalance = _imbalance(shorter, ctx, rest)
        if imbalance < best_imbalance:
            best, best_imbalance = shorter, imbalance
    return best


def balance_brackets(candidate: Candidate, ctx: FilterContext) -> Optional[Candidate]:
    """Keep (), [] and {} balanced against the code around the cursor.

    Two cuts, brackets in strings and # comments ignored:
    - before the first closer that closes nothing: prefix `total = `, completion
      `price * qty)` -> `price * qty`;
    - closers at the end that the rest of the line already has: prefix `foo(a, `,
      completion `b)`, suffix `)` -> `b`.
    A balanced completion (`print(` + `len(x)` + `)`) is unchanged, and a result
    worse balanced than the input is never returned.
    """
    text = _shown_part(candidate.text, ctx.mode)
    shorter = _cut_before_first_unmatched_closer(text, ctx)
    shorter = _drop_closers_the_line_already_has(shorter, ctx)
    if shorter == text or not _not_worse_balanced(shorter, text, ctx, _rest_of_line(ctx.suffix)):
        return candidate
    return replace(candidate, text=shorter)


def _strip_line_end(line: str) -> str:
    """Strip trailing spaces and tabs, keeping a \\r line ending (CRLF documents stay CRLF)."""
    if line.endswith("\r"):
        return line[:-1].rstrip(" \t") + "\r"
    return line.rstrip(" \t")


def trim_trailing_whitespace(candidate: Candidate, ctx: FilterContext) -> Optional[Candidate]:
    """Strip trailing spaces/tabs from every line and trailing blank lines; one line only in line mode.

    Example: `x = 1   \\nreturn x  \\n\\n` -> `x = 1\\nreturn x`. In line mode the text
    ends at its first line break (`b)\\nprint(b)` -> `b)`). The end of the text is
    only trimmed where nothing follows it on the line: before a non-blank rest of
    line, a trailing `\\n    ` is what puts that rest on its own, indented, line.
    """
    text = _first_line(candidate.text) if ctx.mode == "line" else candidate.text
    lines = text.split("\n")
    trimmed = [_strip_line_end(line) for line in lines[:-1]]
    rest = _rest_of_line(ctx.suffix)
    last = lines[-1]
    if rest.strip() == "":
        trimmed_text = "\n".join(trimmed + [last]).rstrip(" \t\r\n")
    elif rest[0] in " \t":
        trimmed_text = "\n".join(trimmed + [last.rstrip(" \t")])
    else:
        trimmed_text = "\n".join(trimmed + [last])
    if trimmed_text == candidate.text:
        return candidate
    return replace(candidate, text=trimmed_text)


def drop_empty(candidate: Candidate, ctx: FilterContext) -> Optional[Candidate]:
    """Drop a completion that shows nothing: blank, or just the rest of the cursor's line again.

    Example: `   ` -> dropped; `)` before the suffix `)\\n` -> dropped; `total)` -> kept.
    """
    shown = candidate.text.strip()
    if not shown or shown == _rest_of_line(ctx.suffix).strip():
        return None
    return candidate


FILTERS: list[tuple[str, Filter]] = [
    ("drop_low_confidence", drop_low_confidence),
    ("cut_repeated_suffix", cut_repeated_suffix),
    ("drop_duplicate_lines", drop_duplicate_lines),
    ("balance_brackets", balance_brackets),
    ("trim_trailing_whitespace", trim_trailing_whitespace),
    ("drop_empty", drop_empty),
]


def _run_chain(
    candidate: Candidate, ctx: FilterContext, filters: Sequence[tuple[str, Filter]]
) -> Optional[Candidate]:
    """One candidate through the chain; None as soon as a filter drops it."""
    current: Optional[Candidate] = candidate
    for _, apply in filters:
        current = apply(current, ctx)
        if current is None:
            return None
    return current


def apply_filters(
    candidates: Sequence[Candidate],
    ctx: FilterContext,
    filters: Sequence[tuple[str, Filter]] = FILTERS,
) -> list[Candidate]:
    """Run every candidate through the chain, drop the dropped, remove duplicate texts (first kept).

    Deduplication comes last because the filters make duplicates: `x = 1  ` and
    `x = 1` are one suggestion once trimmed.
    """
    seen: set[str] = set()
    kept: list[Candidate] = []
    for candidate in candidates:
        result = _run_chain(candidate, ctx, filters)
        if result is None or result.text in seen:
            continue
        seen.add(result.text)
        kept.append(result)
    return kept
