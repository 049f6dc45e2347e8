"""Python syntax errors as editor problems: a pure function, no pygls.

The document is only parsed to an AST (`compile(..., PyCF_ONLY_AST)`), never
compiled to bytecode or run: workspace code is untrusted. Python reports the
first error only. Positions are 0-based (line, character) with characters
counted in code points; the server converts them to the client's units.

Lines are split at "\\r\\n", "\\r" and "\\n", as both Python and LSP do (not at
the other breaks `str.splitlines` knows, such as form feed or U+2028).
"""

from __future__ import annotations

import ast
import contextlib
import gc
import re
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional

SOURCE = "seed-lsp"  # the diagnostics' source, as the editor shows it

LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Python 3.11 reports these tokenizer errors with the column in UTF-8 bytes, not
# characters (found by comparing offsets with and without non-ASCII text before
# the error); every other error has character columns.
_BYTE_COLUMN_ERRORS = ("leading zeros in decimal integer literals",)


@dataclass(frozen=True)
class Problem:
    """A range of the document and what is wrong there."""

    start: tuple[int, int]  # (line, character), 0-based, characters in code points
    end: tuple[int, int]
    message: str


def parse_python(text: str) -> ast.Module:
    """The AST of text; raises what compile raises (SyntaxError, ValueError, ...).

    Warnings (e.g. SyntaxWarning for an invalid escape) are silenced: they would
    be printed to the server's stderr on every keystroke.
    """
    # catch_warnings swaps the process-wide filters and is not thread-safe; a race
    # can at worst leave warnings ignored, which is harmless in the server.
    with warnings.catch_warnings(), _without_cyclic_gc():
        warnings.simplefilter("ignore")
        return compile(text, "<document>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while an AST is built.

    The millions of node objects of a large file trigger collection after
    collection, each scanning all of them: a 5 MB file parses in about a third
    of the time without (an AST has no reference cycles to collect). Only a
    collector that was running is restarted, so overlapping calls from several
    threads leave it as they found it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def python_syntax_errors(text: str) -> list[Problem]:
    """The first syntax error of text as a Problem, or [] when it parses. Never raises."""
    try:
        parse_python(text)
    except SyntaxError as error:  # IndentationError and TabError too
        return [syntax_error_problem(text, error)]
    except UnicodeEncodeError as error:  # a lone surrogate: the text has no UTF-8 form
        char = text[error.start]
        message = f"invalid character U+{ord(char):04X}: a lone surrogate cannot be saved as UTF-8"
        return [_one_character_at(text, error.start, message)]
    except ValueError as error:  # NUL bytes (Python before 3.12)
        return [_nul_problem(text, str(error))]
    except (MemoryError, RecursionError):
        # The parser's stack overflowed (deep nesting): Python cannot compile the file either.
        return [Problem((0, 0), (0, len(_lines(text)[0])), "too deeply nested for Python's parser")]
    return []


def syntax_error_problem(text: str, error: SyntaxError) -> Problem:
    """Map a SyntaxError's 1-based line/offset (and end) to a range inside text."""
    if error.lineno is None:  # Python 3.11 says nothing about where a NUL byte is
        return _nul_problem(text, error.msg)
    lines = _lines(text)
    row = _clamp(error.lineno - 1, 0, len(lines) - 1)
    line = lines[row]
    if error.lineno > len(lines):  # past the last line: the end of the text
        start_col = len(line)
    else:
        start_col = _column(error, line, error.offset)
    if start_col is None:  # offsets we cannot place: the whole line
        return Problem((row, _indentation(line)), (row, len(line)), error.msg)
    end_row, end_col = row, start_col
    if error.end_lineno is not None and error.end_offset is not None and error.end_offset > 0:
        candidate_row = _clamp(error.end_lineno - 1, 0, len(lines) - 1)
        candidate_col = _column(error, lines[candidate_row], error.end_offset)
        if candidate_col is not None and (candidate_row, candidate_col) > (row, start_col):
            end_row, end_col = candidate_row, candidate_col
    if (end_row, end_col) == (row, start_col):
        start_col, end_col = _one_character(line, start_col)
    return Problem((row, start_col), (end_row, end_col), error.msg)


def _column(error: SyntaxError, line: str, offset: Optional[int]) -> Optional[int]:
    """Character column in line of a 1-based offset of error, clamped; None if unplaceable."""
    if offset is None or offset < 1:
        return 0
    if error.msg.startswith(_BYTE_COLUMN_ERRORS):
        return len(line.encode("utf-8")[: offset - 1].decode("utf-8", "ignore"))
    reported = (error.text or "").split("\n", 1)[0].rstrip("\r")
    if not reported or line.startswith(reported):
        return min(offset - 1, len(line))
    # Python 3.11 reports an error inside an f-string expression against the text
    # "(expression)", not the line, and in bytes: find the expression in the line.
    expression = reported[1:].rstrip(")") if reported.startswith("(") else ""
    at = line.find(expression) if expression else -1
    if at < 0:
        return None
    inside = len(reported.encode("utf-8")[: offset - 1].decode("utf-8", "ignore")) - 1  # less the "("
    return _clamp(at + inside, 0, len(line))


def _one_character(line: str, col: int) -> tuple[int, int]:
    """An empty range widened to the character at col, or the line's last one at its end."""
    if col < len(line):
        return col, col + 1
    if line:
        return len(line) - 1, len(line)
    return col, col  # an empty line has no character to show


def _nul_problem(text: str, message: str) -> Problem:
    at = text.find("\0")
    return _one_character_at(text, max(at, 0), message)


def _one_character_at(text: str, offset: int, message: str) -> Problem:
    row, col = position_of(text, offset)
    line = _lines(text)[row]
    start_col, end_col = _one_character(line, col)
    return Problem((row, start_col), (row, end_col), message)


def position_of(text: str, offset: int) -> tuple[int, int]:
    """(line, character) of a character offset into text."""
    offset = _clamp(offset, 0, len(text))
    row, line_start = 0, 0
    for match in LINE_BREAK.finditer(text, 0, offset):
        row, line_start = row + 1, match.end()
    return row, offset - line_start


def offset_of(text: str, position: tuple[int, int]) -> int:
    """Character offset into text of a (line, character) position, clamped to the text."""
    row, col = position
    line_start = 0
    for number, match in enumerate(LINE_BREAK.finditer(text)):
        if number == row:
            return line_start + _clamp(col, 0, match.start() - line_start)
        line_start = match.end()
    return line_start + _clamp(col, 0, len(text) - line_start)


def _lines(text: str) -> list[str]:
    return LINE_BREAK.split(text)


def _indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" \t\f"))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
