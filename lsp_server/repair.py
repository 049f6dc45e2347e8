"""Model edits behind code actions: "Fix with model", "Complete block here", "Fill in body", "Rewrite selection".

Pure logic around an engine (anything with `Engine.complete`'s signature): pick a
span of the document, let the model re-write it as an infill between the text
before and after it, and keep a candidate only when it verifiably helps. Python
is checked by parsing to an AST only; workspace code is never run. Spans are
character (code point) offsets into the document text; the server converts LSP
positions. `DecodeCancelled` from the engine (or from should_cancel between
candidates) propagates to the caller.
"""

from __future__ import annotations

import ast
import functools
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence

from engine.decode import DecodeCancelled, DecodeConfig
from engine.engine import Completion, Job, JobResult
from lsp_server.diagnostics import LINE_BREAK, Problem, offset_of, parse_python, python_syntax_errors

FIX_TITLE = "Fix with model"
BLOCK_TITLE = "Complete block here"
FILL_TITLE = "Fill in body"
REWRITE_TITLE = "Rewrite selection"

# Characters that make up an operator token (`+=`, `->`, `**`, `!=`).
_OPERATOR_CHARS = frozenset("+-*/%&|^~<>=!@")
# A fix changes at most this many characters, or this share of the re-written text (is_small_repair).
_REPAIR_MIN_CHARS = 3
_REPAIR_SHARE = 0.25
# A placeholder comment a "Fill in body" may replace.
_TODO_COMMENT = re.compile(r"#\s*(TODO|FIXME)\b", re.IGNORECASE)
# Anything a placeholder body is made of; see _may_have_stub.
_STUB_MARK = re.compile(r"\.\.\.|\bpass\b|#\s*(?:TODO|FIXME)\b", re.IGNORECASE)
# How far after the cursor a placeholder may lie (past a long signature and docstring).
_STUB_WINDOW = 4000
# Python's message when a def/class has no body (e.g. only comments): names the header line.
_NO_BODY = re.compile(r"expected an indented block after (?:function|class) definition on line (\d+)")
# Infill token caps grow with the span re-written: about 2 characters per token, bounded.
_MAX_INFILL_TOKENS = 512
# Where an infill runs on into the text after its span (see cut_at_suffix), it must write the
# suffix's first line of code, and the next one too while these lines hold fewer than
# _SUFFIX_ANCHOR_CHARS non-blank characters (at most _SUFFIX_ANCHOR_LINES lines).
_SUFFIX_ANCHOR_LINES = 2
_SUFFIX_ANCHOR_CHARS = 8


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the document text."""

    start: int
    end: int


@dataclass(frozen=True)
class Edit:
    """Replace span (in the text the edit was computed for) with new_text."""

    span: Span
    new_text: str
    title: str
    candidates_tried: int  # distinct candidates checked, the chosen one included


class Engine(Protocol):
    """What the edits need of engine.Engine (tests pass a scripted fake)."""

    def complete(self, jobs: Sequence[Job], *, should_cancel: Optional[Callable[[], bool]] = None,
                 deadline: Optional[float] = None) -> list[JobResult]: ...


Cancel = Optional[Callable[[], bool]]
# A fix whose document still fails within this many lines after the new text is refused.
NEARBY_LINES = 2


def apply_edit(text: str, edit: Edit) -> str:
    return text[: edit.span.start] + edit.new_text + text[edit.span.end :]


def _minimal_edit(text: str, span: Span, new: str, title: str, tried: int) -> Edit:
    """The replacement of span by new, less the characters both share at their ends.

    Same result once applied, but the editor keeps the cursor and marks outside
    what really changed.
    """
    old = text[span.start : span.end]
    head = _common_prefix_length(old, new)
    limit = min(len(old), len(new)) - head
    tail = _common_prefix_length(old[::-1][:limit], new[::-1][:limit])
    return Edit(Span(span.start + head, span.end - tail), new[head : len(new) - tail], title, tried)


# --- spans ----------------------------------------------------------------------------------


def widen(text: str, span: Span) -> list[Span]:
    """Spans to re-mask for a problem at span, smallest first, deduplicated, never empty.

    The span grown to whole tokens (identifier, number or operator runs at its
    edges), then the whole line(s) it touches (without the line break), then that
    with one more line before and after.
    """
    span = _clamped(text, span)
    token = _token_span(text, span)
    lines = _lines_span(text, span)
    around = _lines_around(text, lines)
    out: list[Span] = []
    for candidate in (token, lines, around):
        if candidate.end > candidate.start and candidate not in out:
            out.append(candidate)
    return out


def _clamped(text: str, span: Span) -> Span:
    start = max(0, min(span.start, len(text)))
    return Span(start, max(start, min(span.end, len(text))))


def _char_kind(char: str) -> Optional[str]:
    if char.isalnum() or char == "_":
        return "word"
    if char in _OPERATOR_CHARS:
        return "operator"
    return None  # brackets, quotes, spaces, separators: tokens of their own


def _token_span(text: str, span: Span) -> Span:
    """span grown over the runs of word or operator characters at its edges."""
    start, end = span.start, span.end
    if start == end:  # a position: the runs on either side of it
        left_kind = _char_kind(text[start - 1]) if start > 0 else None
        right_kind = _char_kind(text[end]) if end < len(text) else None
    else:  # a range: the runs its first and last characters belong to
        left_kind, right_kind = _char_kind(text[start]), _char_kind(text[end - 1])
    while left_kind and start > 0 and _char_kind(text[start - 1]) == left_kind:
        start -= 1
    while right_kind and end < len(text) and _char_kind(text[end]) == right_kind:
        end += 1
    return Span(start, end)


def _line_start(text: str, offset: int) -> int:
    return max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1


def _line_end(text: str, offset: int) -> int:
    """Offset of the line break ending the line at offset (or the end of the text)."""
    ends = [at for at in (text.find("\n", offset), text.find("\r", offset)) if at >= 0]
    return min(ends) if ends else len(text)


def _lines_span(text: str, span: Span) -> Span:
    """The whole lines span touches, without the final line break."""
    start = _line_start(text, span.start)
    last = span.end
    if span.end > span.start:  # a span ending with a line break ends on the line of that break
        last -= 2 if text.startswith("\r\n", span.end - 2) else 1
    return Span(start, _line_end(text, max(last, span.start)))


def _lines_around(text: str, lines: Span) -> Span:
    """lines plus the line before and the line after, when there are such lines."""
    start, end = lines.start, lines.end
    if start > 0:
        before = start - 2 if text.startswith("\r\n", start - 2) else start - 1  # on the previous line's break
        start = _line_start(text, before)
    after = end + 2 if text.startswith("\r\n", end) else end + 1  # the next line's start
    if after < len(text):  # (the empty "line" after a final newline adds nothing worth re-writing)
        end = _line_end(text, after)
    return Span(start, end)


# --- verification ---------------------------------------------------------------------------


def parses(text: str) -> bool:
    """True when text is valid Python (AST only, nothing is run)."""
    return not python_syntax_errors(text)


def is_improvement(original: str, fixed: str, language: str) -> bool:
    """Would replacing original by fixed be a fix?

    fixed must differ. For Python: fixed parses and original does not, or original
    parsed too (the problem came from another checker) and fixed still parses. One
    relaxation, since Python only reports the first error: when the document has a
    further error, a fix is also accepted if the first error now lies after the
    changed text and later than before, and the document cut before that error's
    line has no error up to the end of the changed text (Python got past the fix).
    """
    return _improves(original, _first_error(original, language), fixed, language, strict=True)


def _first_error(text: str, language: str) -> Optional[Problem]:
    if language != "python":
        return None
    problems = python_syntax_errors(text)
    return problems[0] if problems else None


def _improves(original: str, original_error: Optional[Problem], fixed: str, language: str, *,
              strict: bool) -> bool:
    """The verification rule of every edit, with the original's first error computed once.

    strict (fixes): a document that did not parse must get past its error. Not
    strict (completions, rewrites): it must not get worse, so an unrelated error
    before the edited text may stay where it was.
    """
    if fixed == original:
        return False
    if language != "python":
        return True  # nothing to check it with: a change is all we can ask
    fixed_problems = python_syntax_errors(fixed)
    if not fixed_problems:
        return True
    if original_error is None:
        return False  # it parsed, now it does not
    changed_start, changed_end = _changed_region(original, fixed)
    error_at = offset_of(fixed, fixed_problems[0].start)
    was_at = offset_of(original, original_error.start)
    if error_at >= changed_end:  # after the edit: compare in the original's offsets
        if strict and fixed.count("\n", changed_end, error_at) <= NEARBY_LINES:
            # An error right after the new text is most likely caused by it (replacing a
            # `def` header by junk leaves "unexpected indent" on the next line).
            return False
        moved_to = error_at - (len(fixed) - len(original))
        progressed = moved_to > was_at or (not strict and moved_to == was_at)
        return progressed and _sound_before(fixed, error_at, changed_end)
    if error_at < changed_start:  # before the edit: the same error, untouched
        return not strict and error_at == was_at and fixed_problems[0].message == original_error.message
    return False  # the error is inside the new text


def _sound_before(fixed: str, error_at: int, changed_end: int) -> bool:
    """Is the document sound up to the line of its first error, the new text included?

    A reported position alone can mislead: for an unclosed bracket Python names the
    last one opened, so a bracket the new text leaves open hides behind a later one.
    Cut the document before the error's line and parse again: no error may remain
    inside or before the new text (an error at the cut itself, such as a header
    left without its body, is fine).
    """
    cut_at = _line_start(fixed, error_at)
    if cut_at < changed_end:
        return False  # the error shares the new text's last line: no way to tell them apart
    head = fixed[:cut_at]
    problems = python_syntax_errors(head)
    return not problems or offset_of(head, problems[0].start) >= changed_end


def _changed_region(original: str, fixed: str) -> tuple[int, int]:
    """[start, end) in fixed of the text that differs from original."""
    head = _common_prefix_length(original, fixed)
    limit = min(len(original), len(fixed)) - head
    tail = _common_prefix_length(original[::-1][:limit], fixed[::-1][:limit])
    return head, len(fixed) - tail


def _common_prefix_length(a: str, b: str) -> int:
    """Binary search on slice equality: runs at C speed on megabyte documents."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _deletes_code(old: str, new: str) -> bool:
    """A blank replacement of code with names or numbers in it deletes code rather than fixing it.

    Deleting stray punctuation (a doubled `)`, a `,`) stays allowed.
    """
    return not new.strip() and any(_char_kind(char) == "word" for char in old)


# --- running the model ----------------------------------------------------------------------


def _infill_config(old: str, max_tokens: int, block_size: int, tau: float) -> DecodeConfig:
    """An infill of max_tokens, raised when the re-masked text needs more to be written again."""
    needed = min(_MAX_INFILL_TOKENS, len(old) // 2 + 16)
    return DecodeConfig(mode="infill", block_size=block_size, tau=tau, max_tokens=max(max_tokens, needed))


def _candidates(engine: Engine, text: str, span: Span, config: DecodeConfig, n: int,
                should_cancel: Cancel, deadline: Optional[float], *, to_suffix: bool = False) -> list[Completion]:
    """n candidates for span. to_suffix: a candidate stops once it writes the suffix's head
    (cut_at_suffix reads it up to there), instead of running on to the token cap."""
    suffix = text[span.end :]
    stop_at = _suffix_anchor(suffix) if to_suffix else ""
    job = Job(prefix=text[: span.start], suffix=suffix, config=config, n=n, stop_at=stop_at)
    [result] = engine.complete([job], should_cancel=should_cancel, deadline=deadline)
    return list(result.completions)


def _past(deadline: Optional[float]) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _check_cancel(should_cancel: Cancel) -> None:
    # Verifying a candidate parses the whole document: stop between candidates too.
    if should_cancel is not None and should_cancel():
        raise DecodeCancelled()


def is_small_repair(old: str, new: str) -> bool:
    """Is new a repair of old (a few characters changed), not different code that happens to parse?

    The changed part (after the common head and tail) may be at most
    max(_REPAIR_MIN_CHARS, _REPAIR_SHARE x the length of old) characters, counting
    the longer of what is removed and what is inserted. A missing colon or a typo
    in a name passes; a line replaced by an unrelated statement does not (the
    benchmark saw `return b` "fixed" to `return self.__class__(self.args)`).
    """
    start, end = _changed_region(old, new)
    inserted = end - start
    removed = inserted + len(old) - len(new)
    return max(inserted, removed) <= max(_REPAIR_MIN_CHARS, _REPAIR_SHARE * len(old.strip()))


def _suffix_anchor(suffix: str) -> str:
    """The head of suffix an infill writes when it runs on past its span, or "" (a blank suffix).

    Through the end of the suffix's first line with code (the rest of the span's
    line when that has code), and of the next such line while they hold fewer than
    _SUFFIX_ANCHOR_CHARS non-blank characters, with the last line's break: a whole
    line, so that a candidate which writes that line differently (adds the `)` it
    lacks) does not match. It starts with whatever the suffix starts with (a line
    break, indentation), so it marks the span's end exactly.
    """
    at, end, lines, chars = 0, 0, 0, 0
    while at < len(suffix) and lines < _SUFFIX_ANCHOR_LINES and chars < _SUFFIX_ANCHOR_CHARS:
        line_end = _line_end(suffix, at)
        code = "".join(suffix[at:line_end].split())
        at = min(len(suffix), line_end + (2 if suffix.startswith("\r\n", line_end) else 1))
        if code:
            lines, chars, end = lines + 1, chars + len(code), at
    return suffix[:end]


def cut_at_suffix(new: str, suffix: str) -> Optional[str]:
    """new up to where it starts writing the suffix, or None where it never does.

    An infill ought to end (eos) where its span ends, but a model that knows the
    code often writes on: the span's text, then the suffix it was shown, until the
    token cap (the memorized test model, asked to re-write `...: int)` of a def line
    whose colon is missing, writes `):\\n        if max_bytes < 0:\\n ...` for 64
    tokens). Where new holds the suffix's head (_suffix_anchor), what comes before
    it is the model's text for the span: it reached the span's end.
    """
    anchor = _suffix_anchor(suffix)
    at = new.find(anchor) if anchor else -1
    return None if at < 0 else new[:at]


def _readings(completion: Completion, suffix: Optional[str], finished_only: bool) -> list[str]:
    """The texts a candidate may stand for: cut where it runs into the suffix (suffix given), then whole.

    finished_only: whole only if it ended by itself (eos); a cut reading is finished by
    construction (the model wrote past the span's end).
    """
    readings = []
    if suffix is not None:
        cut = cut_at_suffix(completion.text, suffix)
        if cut is not None:
            readings.append(cut)
    if not finished_only or completion.stop_reason == "eos":
        readings.append(completion.text)
    return readings


def _first_verified(text: str, span: Span, completions: Iterable[Completion], accept: Callable[[str], bool],
                    should_cancel: Cancel, *, finished_only: bool, small: bool = False,
                    to_suffix: bool = False) -> tuple[Optional[str], int]:
    """(the first candidate text accepted, or None; how many distinct candidates were checked).

    finished_only: an infill must have reached its end (eos); one cut by the token
    cap or the deadline is a fragment, however well it parses. small: only a small
    repair of the old text counts (is_small_repair), as a fix should be. to_suffix
    (infills): a candidate that runs on into the suffix is read as the text before
    it (cut_at_suffix), tried before the whole text.
    """
    old = text[span.start : span.end]
    suffix = text[span.end :] if to_suffix else None
    seen: set[str] = set()
    tried = 0
    for completion in completions:
        _check_cancel(should_cancel)
        for new in _readings(completion, suffix, finished_only):
            if new == old or new in seen:
                continue
            seen.add(new)
            tried += 1
            if _deletes_code(old, new) or (small and not is_small_repair(old, new)):
                continue
            if accept(text[: span.start] + new + text[span.end :]):
                return new, tried
    return None, tried


def _preview(new_text: str, old_text: str) -> str:
    """A short description of the change for the action's title."""
    line = next((line.strip() for line in LINE_BREAK.split(new_text) if line.strip()), "")
    if not line:
        return f"delete {old_text.strip()[:40]!r}"
    return line if len(line) <= 48 else line[:47] + "…"


# --- the actions ----------------------------------------------------------------------------


def propose_fix(engine: Engine, text: str, span: Span, language: str, *, n: int = 3, max_tokens: int = 64,
                block_size: int = 8, tau: float = 0.9, should_cancel: Cancel = None,
                deadline: Optional[float] = None) -> Optional[Edit]:
    """"Fix with model" for a problem at span: the first verified infill, narrowest span first.

    Each widening (see `widen`) is one engine call with n candidates; candidates
    are checked in the engine's order. No further call starts after the deadline.
    """
    original_error = _first_error(text, language)
    accept = lambda fixed: _improves(text, original_error, fixed, language, strict=True)
    tried = 0
    for candidate_span in widen(text, span):
        if _past(deadline):
            break
        old = text[candidate_span.start : candidate_span.end]
        completions = _candidates(engine, text, candidate_span, _infill_config(old, max_tokens, block_size, tau),
                                  n, should_cancel, deadline, to_suffix=True)
        new, count = _first_verified(text, candidate_span, completions, accept, should_cancel, finished_only=True,
                                     small=True, to_suffix=True)
        tried += count
        if new is not None:
            return _minimal_edit(text, candidate_span, new, f"{FIX_TITLE}: {_preview(new, old)}", tried)
    return None


def complete_block_edit(engine: Engine, text: str, offset: int, language: Optional[str] = None, *, n: int = 1,
                        max_tokens: int = 128, block_size: int = 8, tau: float = 0.9, should_cancel: Cancel = None,
                        deadline: Optional[float] = None) -> Optional[Edit]:
    """"Complete block here": a block completion inserted at offset, if it makes nothing worse.

    language None (or not "python") checks only that something non-blank is inserted.
    """
    offset = max(0, min(offset, len(text)))
    span = Span(offset, offset)
    config = DecodeConfig(mode="block", block_size=block_size, tau=tau, max_tokens=max_tokens)
    completions = _candidates(engine, text, span, config, n, should_cancel, deadline)
    language = language or ""
    original_error = _first_error(text, language)
    accept = lambda completed: _improves(text, original_error, completed, language, strict=False)
    non_blank = [c for c in completions if c.text.strip()]
    new, tried = _first_verified(text, span, non_blank, accept, should_cancel, finished_only=False)
    return None if new is None else Edit(span, new, BLOCK_TITLE, tried)


def rewrite_selection_edit(engine: Engine, text: str, span: Span, language: str, *, n: int = 3,
                           max_tokens: int = 64, block_size: int = 8, tau: float = 0.9,
                           should_cancel: Cancel = None, deadline: Optional[float] = None) -> Optional[Edit]:
    """"Rewrite selection": re-mask the selection and infill it; it must differ and break nothing.

    For Python: the result parses if the document did (else its first error is not
    made worse).
    """
    span = _clamped(text, span)
    if span.start == span.end:
        return None
    old = text[span.start : span.end]
    config = _infill_config(old, max_tokens, block_size, tau)
    completions = _candidates(engine, text, span, config, n, should_cancel, deadline, to_suffix=True)
    original_error = _first_error(text, language)
    accept = lambda rewritten: _improves(text, original_error, rewritten, language, strict=False)
    new, tried = _first_verified(text, span, completions, accept, should_cancel, finished_only=True,
                                 to_suffix=True)
    return None if new is None else _minimal_edit(text, span, new, REWRITE_TITLE, tried)


def fill_body_edit(engine: Engine, text: str, offset: int, language: str, *, n: int = 3, max_tokens: int = 256,
                   block_size: int = 8, tau: float = 0.9, should_cancel: Cancel = None,
                   deadline: Optional[float] = None) -> Optional[Edit]:
    """"Fill in body": infill the stub body of the def/class at offset (Python only).

    The result must parse (or get past the document's first error, when the stub
    was a comment-only body) and must not be a stub again.
    """
    if language != "python":
        return None
    stub = find_stub_body(text, offset)
    if stub is None:
        return None
    config = DecodeConfig(mode="infill", block_size=block_size, tau=tau, max_tokens=max_tokens)
    completions = _candidates(engine, text, stub, config, n, should_cancel, deadline, to_suffix=True)
    original_error = _first_error(text, language)

    def accept(filled: str) -> bool:
        return (_improves(text, original_error, filled, language, strict=True)
                and find_stub_body(filled, stub.start) is None)

    new, tried = _first_verified(text, stub, completions, accept, should_cancel, finished_only=True,
                                 to_suffix=True)
    return None if new is None else _minimal_edit(text, stub, new, FILL_TITLE, tried)


# --- stub bodies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Definition:
    start: int  # the def/class keyword's line start
    end: int  # end of its last line
    stub: Optional[Span]  # its placeholder body, None if it has real code


def find_stub_body(text: str, offset: int) -> Optional[Span]:
    """The placeholder body of the innermost def/class around offset, or None.

    A placeholder body: after an optional docstring, only `...` and `pass`
    statements, with the `# TODO` / `# FIXME` comment lines right above them (the
    span runs from the first of those to the end of the last statement's line).
    A def whose body is only comments does not parse; when that is the document's
    first error, the TODO comment lines of that body are the placeholder.
    """
    if not _may_have_stub(text, offset):
        return None
    around = [d for d in _definitions(text) if d.start <= offset <= d.end]
    if not around:
        return None
    return max(around, key=lambda d: d.start).stub


def _may_have_stub(text: str, offset: int) -> bool:
    """A cheap look before parsing the document: is there a placeholder near offset at all?

    The server asks on every code action request, and most places have none. A def
    around offset whose body is a placeholder ends with it, so the placeholder lies
    after offset's line start, behind at most the signature and docstring.
    """
    start = _line_start(text, max(0, min(offset, len(text))))
    return _STUB_MARK.search(text, start, offset + _STUB_WINDOW) is not None


@functools.lru_cache(maxsize=4)
def _definitions(text: str) -> tuple[_Definition, ...]:
    # Cached: the server asks for every code action list, and a parse of a large
    # document takes a while; the result is small (one entry per def).
    try:
        tree = parse_python(text)
    except SyntaxError as error:
        return _comment_only_definition(text, error)
    except (ValueError, MemoryError, RecursionError):
        return ()
    lines = _LineIndex(text)
    return tuple(_definition(node, lines) for node in _statements(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """Every statement of the tree; expressions are not entered (no def can be inside one)."""
    containers = (ast.stmt, ast.excepthandler, ast.match_case)
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, containers))


class _LineIndex:
    """Converts ast positions (1-based lines, UTF-8 byte columns) to character offsets."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [match.end() for match in LINE_BREAK.finditer(text)]
        self.ends = [match.start() for match in LINE_BREAK.finditer(text)] + [len(text)]

    def line(self, lineno: int) -> str:
        return self.text[self.starts[lineno - 1] : self.ends[lineno - 1]]

    def offset(self, lineno: int, byte_column: int) -> int:
        line = self.line(lineno)
        column = byte_column if line.isascii() else len(line.encode("utf-8")[:byte_column].decode("utf-8", "ignore"))
        return self.starts[lineno - 1] + column

    def line_start(self, lineno: int) -> int:
        return self.starts[lineno - 1]

    def line_end(self, lineno: int) -> int:
        return self.ends[lineno - 1]


def _definition(node: ast.AST, lines: _LineIndex) -> _Definition:
    return _Definition(lines.line_start(node.lineno), lines.line_end(node.end_lineno), _stub_span(node, lines))


def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def _is_placeholder(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
        and statement.value.value is Ellipsis)


def _stub_span(node, lines: _LineIndex) -> Optional[Span]:
    body = node.body
    skip = 1 if body and _is_docstring(body[0]) else 0
    rest = body[skip:]
    if not rest or not all(_is_placeholder(statement) for statement in rest):
        return None
    first, last = rest[0], rest[-1]
    start = lines.offset(first.lineno, first.col_offset)
    if not lines.line(first.lineno)[: start - lines.line_start(first.lineno)].strip():
        # The placeholder starts its line: take the TODO lines right above it too,
        # but never the header's or the docstring's lines.
        floor = body[skip - 1].end_lineno if skip else node.lineno
        lineno = first.lineno - 1
        while lineno > floor and _TODO_COMMENT.match(lines.line(lineno).strip()):
            start = lines.line_start(lineno) + _indentation(lines.line(lineno))
            lineno -= 1
    return Span(start, lines.line_end(last.end_lineno))


def _comment_only_definition(text: str, error: SyntaxError) -> tuple[_Definition, ...]:
    """The def/class whose body is only comments, from Python's "expected an indented block" error."""
    match = _NO_BODY.match(error.msg or "")
    if not isinstance(error, IndentationError) or match is None or error.lineno is None:
        return ()
    lines = _LineIndex(text)
    header = int(match.group(1))
    if not 1 <= header < error.lineno <= len(lines.starts):
        return ()
    header_indent = _indentation(lines.line(header))
    comments = []  # line numbers of the body's comment lines, bottom up
    lineno = error.lineno
    if not _is_body_comment(lines.line(lineno), header_indent):
        lineno -= 1  # the error is at the next statement, after the body
    while lineno > header:
        line = lines.line(lineno)
        if _is_body_comment(line, header_indent):
            comments.append(lineno)
        elif line.strip():
            break
        lineno -= 1
    todo = [number for number in comments if _TODO_COMMENT.match(lines.line(number).strip())]
    if not todo:
        return ()
    first, last = min(todo), max(comments)
    stub = Span(lines.line_start(first) + _indentation(lines.line(first)), lines.line_end(last))
    return (_Definition(lines.line_start(header), stub.end, stub),)


def _is_body_comment(line: str, header_indent: int) -> bool:
    return line.strip().startswith("#") and _indentation(line) > header_indent


def _indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" \t\f"))
