"""Tests of lsp_server.diagnostics: Python syntax errors mapped to exact, in-bounds ranges.

Real broken snippets with the range expected on Python 3.11+ (code point
columns, 0-based), then a hypothesis fuzz: any text, NUL bytes, lone surrogates,
CRLF and very long lines included, gives in-bounds problems and never raises.
"""

from __future__ import annotations

import gc
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.diagnostics import (SOURCE, Problem, offset_of, position_of, python_syntax_errors,
                                    syntax_error_problem)

LINES = re.compile(r"\r\n|\r|\n")


def only_problem(text: str) -> Problem:
    problems = python_syntax_errors(text)
    assert len(problems) == 1, problems
    return problems[0]


def assert_inside(text: str, problem: Problem) -> None:
    lines = LINES.split(text)
    for line, character in (problem.start, problem.end):
        assert 0 <= line < len(lines)
        assert 0 <= character <= len(lines[line])
    assert problem.start <= problem.end
    assert problem.message
    problem.message.encode("utf-8")  # goes out as JSON: no lone surrogates


def test_source_name():
    assert SOURCE == "seed-lsp"


def test_valid_code_and_empty_file_have_no_problems():
    assert python_syntax_errors("") == []
    assert python_syntax_errors("\n\n") == []
    assert python_syntax_errors("def f(x):\n    return x + 1\n") == []
    assert python_syntax_errors("x = 'é😀'\r\ny = 2\r\n") == []


@pytest.mark.parametrize("text, start, end, message", [
    # The colon is missing at the end of the line: the last character is marked.
    ("def f()\n    pass\n", (0, 6), (0, 7), "expected ':'"),
    ("x = [1, 2\ny = 3\n", (0, 4), (0, 5), "'[' was never closed"),
    ("def f():\nreturn 1\n", (1, 0), (1, 6), "expected an indented block after function definition on line 1"),
    ("x = 1\n    y = 2\n", (1, 3), (1, 4), "unexpected indent"),
    ("if x:\n        a\n    b\n", (2, 4), (2, 5), "unindent does not match any outer indentation level"),
    ("if x:\n        a\n\tb\n", (2, 0), (2, 1), "inconsistent use of tabs and spaces in indentation"),
    ("x = (1 +\n", (0, 4), (0, 5), "'(' was never closed"),
    ("def f():", (0, 7), (0, 8), "expected an indented block after function definition on line 1"),
    ("x = 1 $ 2", (0, 6), (0, 7), "invalid syntax"),
    ("f(x for x in y, 1)\n", (0, 2), (0, 14), "Generator expression must be parenthesized"),
    ("x = 1\r\ndef f()\r\n  pass\r\n", (1, 6), (1, 7), "expected ':'"),
    ("x = 1\rdef f()\r  pass\r", (1, 6), (1, 7), "expected ':'"),
])
def test_syntax_errors_have_exact_ranges(text, start, end, message):
    problem = only_problem(text)
    assert (problem.start, problem.end, problem.message) == (start, end, message)


@pytest.mark.parametrize("text, start, end", [
    # Code points before the error count one each (é is 2 bytes, 😀 4 bytes and 2 UTF-16 units).
    ("x = 'éé' + )\n", (0, 11), (0, 12)),
    ("s = '😀😀' + (1,\n", (0, 11), (0, 12)),
    ("é = 1 1\n", (0, 6), (0, 7)),
    ("# éééé\nx = 'é' 1\n", (1, 8), (1, 9)),
    ("x = 'éé' + 'abc\n", (0, 11), (0, 12)),
    ("x = 'éé' + €\n", (0, 11), (0, 12)),
    # Python 3.11 gives this tokenizer error's column in bytes: it must still land on the 0.
    ("x = 'ÉÉ' + 0777\n", (0, 11), (0, 12)),
    # Python 3.11 reports f-string errors against "(expression)", in bytes.
    ("y = f'{é é}' + 1\n", (0, 7), (0, 10)),
    ("y = f'{a}' f'{b c}'\n", (0, 14), (0, 17)),
])
def test_non_ascii_before_the_error_counts_code_points(text, start, end):
    problem = only_problem(text)
    assert (problem.start, problem.end) == (start, end)


def test_nul_byte_is_marked_where_it_is():
    problem = only_problem("x = 1\r\ny = 2\0\n")
    assert (problem.start, problem.end) == ((1, 5), (1, 6))
    assert "null" in problem.message


def test_lone_surrogate_is_marked_where_it_is():
    problem = only_problem("x = 1\ny = '\ud800'\n")
    assert (problem.start, problem.end) == ((1, 5), (1, 6))
    assert "U+D800" in problem.message


def test_error_on_the_last_line_without_newline():
    assert only_problem("x = 1\ny = (").start == (1, 4)
    problem = only_problem("x = 1\ny = 2 +")
    assert (problem.start, problem.end) == ((1, 6), (1, 7))
    assert_inside("x = 1\ny = 2 +", problem)


def test_unterminated_triple_quoted_string_marks_its_start():
    problem = only_problem('x = 1\ny = """abc\n\nz\n')
    assert (problem.start, problem.end) == ((1, 4), (1, 5))


def test_too_deep_nesting_is_a_problem_not_a_crash():
    problem = only_problem("-" * 100_000 + "1")
    assert problem.start == (0, 0)


def test_error_reported_past_the_end_is_clamped():
    error = SyntaxError("boom", ("<document>", 9, 40, "", 12, 50))
    problem = syntax_error_problem("ab\ncd", error)
    assert (problem.start, problem.end) == ((1, 1), (1, 2))
    assert syntax_error_problem("", error).start == (0, 0)


def test_unplaceable_columns_mark_the_whole_line():
    error = SyntaxError("f-string: invalid syntax", ("<document>", 1, 2, "(zzz)\n", 1, 4))
    problem = syntax_error_problem("  y = f'{a b}'\n", error)
    assert (problem.start, problem.end) == ((0, 2), (0, 14))


def test_parsing_never_runs_the_code(tmp_path):
    marker = tmp_path / "ran"
    text = f"open({str(marker)!r}, 'w').close()\nx = (\n"
    assert python_syntax_errors(text)
    assert python_syntax_errors(text.replace("x = (\n", "")) == []
    assert not marker.exists()


def test_warnings_are_not_errors_and_not_printed(capsys):
    assert python_syntax_errors("x = '\\d'\ny = 1if 2 else 3\n") == []
    assert capsys.readouterr().err == ""


def test_positions_and_offsets_round_trip():
    text = "ab\r\ncd\re\n\nfg"
    for offset in range(len(text) + 1):
        if text[offset - 1 : offset + 1] == "\r\n":
            continue  # between "\r" and "\n" is not a position of its own
        assert offset_of(text, position_of(text, offset)) == offset
    assert offset_of(text, (99, 5)) == len(text)
    assert offset_of(text, (0, 99)) == 2


def test_parsing_leaves_the_garbage_collector_as_it_was():
    assert gc.isenabled()
    python_syntax_errors("x = [1, 2, 3]\n")
    python_syntax_errors("x = (\n")
    assert gc.isenabled()
    gc.disable()
    try:
        python_syntax_errors("x = [1, 2, 3]\n")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_long_lines_are_fast():
    text = "x = 'é" + "a" * 1_000_000 + "' 1\n"
    started = time.perf_counter()
    problem = only_problem(text)
    assert time.perf_counter() - started < 2.0
    assert problem.start == (0, 1_000_008)


PIECES = ["def ", "class ", "f(", "(", ")", "[", "]", "{", "}", ":", ",", "=", "+", "\n", "\r\n", "\r", "    ",
          "\t", "'", '"', '"""', "f'{", "#", "\\", "x", "1", "0777", " ", "é", "😀", "\0", "\ud800", "\ufeff",
          "\x0c", "\u2028", "pass", "return", "if ", "else", "lambda", "a" * 300]
texts = st.one_of(
    st.text(st.characters(exclude_categories=())),
    st.lists(st.sampled_from(PIECES) | st.text(st.characters(exclude_categories=()), max_size=3),
             max_size=40).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_fuzz_never_raises_and_ranges_are_inside(text):
    for problem in python_syntax_errors(text):
        assert_inside(text, problem)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join), st.integers(0, 10_000))
def test_fuzz_long_lines_never_raise(text, width):
    text = text.replace("a" * 300, "a" * width)
    for problem in python_syntax_errors(text):
        assert_inside(text, problem)
