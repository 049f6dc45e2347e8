"""`seed-lsp complete`: location parsing, position checks, file reading and the mode choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.jobs import choose_mode
from seed_lsp.complete import UsageError, parse_location, read_document, split_at

TEXT = "import os\n\ndef f(x):\n    return x  # 😀 é\n"


def test_parse_location_allows_colons_in_the_path():
    assert parse_location("a/b.py:3:5") == (Path("a/b.py"), 3, 5)
    assert parse_location("C:/x/b.py:1:1") == (Path("C:/x/b.py"), 1, 1)


@pytest.mark.parametrize("bad", ["b.py", "b.py:3", ":1:1", "b.py:x:1", "b.py:0:1", "b.py:1:0", "b.py:-1:2"])
def test_parse_location_rejects_malformed_input(bad):
    with pytest.raises(UsageError):
        parse_location(bad)


def test_split_at_counts_characters_not_bytes():
    prefix, suffix = split_at(TEXT, 4, 19)  # after the emoji and the space
    assert prefix.endswith("# 😀 ") and suffix == "é\n"
    assert prefix + suffix == TEXT


def test_split_at_line_ends_and_file_end():
    assert split_at(TEXT, 3, 10) == ("import os\n\ndef f(x):", "\n    return x  # 😀 é\n")
    assert split_at(TEXT, 5, 1) == (TEXT, "")


@pytest.mark.parametrize("line,col,message", [
    (9, 1, "line 9 is past the end"),
    (1, 11, "column 11 is past the end of the line"),
])
def test_split_at_past_the_end_is_a_clear_error(line, col, message):
    with pytest.raises(UsageError, match=message):
        split_at(TEXT, line, col)


def test_split_at_crlf_line_end_is_not_a_column():
    text = "a = 1\r\nb = 2\r\n"
    assert split_at(text, 1, 6) == ("a = 1", "\r\nb = 2\r\n")
    with pytest.raises(UsageError):
        split_at(text, 1, 7)


def test_read_document_replaces_bad_bytes_with_a_warning(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_bytes(b"x = '\xff'\n")
    assert read_document(path) == "x = '\ufffd'\n"
    assert "not valid UTF-8" in capsys.readouterr().err
    with pytest.raises(UsageError, match="no such file"):
        read_document(tmp_path / "missing.py")


@pytest.mark.parametrize("prefix,suffix,mode", [
    ("def f(x):", "\n", "block"),
    ("def f(x):\n    ", "\n", "block"),
    ("def f(x):\n", "", "block"),
    ("    x = compute(", ")\n", "line"),
    ("    x = 1\n    ", "\n", "line"),
    ("if a:\n    pass\n", "", "line"),
])
def test_choose_mode(prefix, suffix, mode):
    assert choose_mode(prefix, suffix) == mode
