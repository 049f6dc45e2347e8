"""Unit tests of the server's pure parts: documents and positions, settings, the completion cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server.completion_cache import CompletionCache, Shown
from lsp_server.config import Settings, merge_settings
from lsp_server.documents import Document, PositionError

UTF16 = PositionCodec(encoding=types.PositionEncodingKind.Utf16)
UTF8 = PositionCodec(encoding=types.PositionEncodingKind.Utf8)
UTF32 = PositionCodec(encoding=types.PositionEncodingKind.Utf32)


def pos(line, character):
    return types.Position(line=line, character=character)


# --- documents ------------------------------------------------------------------------------


def test_lines_break_only_at_lsp_line_ends():
    doc = Document("u", "a\r\nb\rc\nd\x0ce\u2028f")
    assert doc.line_starts == [0, 3, 5, 7]
    assert doc.line_text(3) == "d\x0ce\u2028f"


@pytest.mark.parametrize("codec,character,offset", [(UTF16, 3, 2), (UTF8, 5, 2), (UTF32, 2, 2),
                                                    (UTF16, 2, 1)])  # 2 UTF-16 units = inside the emoji
def test_offsets_count_code_units_of_the_negotiated_encoding(codec, character, offset):
    doc = Document("u", "a😀b\nx")
    assert doc.offset_at(pos(0, character), codec) == offset


def test_past_the_line_end_means_the_line_end_and_past_the_file_is_an_error():
    doc = Document("u", "ab\ncd\n")
    assert doc.offset_at(pos(0, 99), UTF16) == 2
    assert doc.offset_at(pos(2, 0), UTF16) == 6  # the empty last line
    with pytest.raises(PositionError, match="past the end"):
        doc.offset_at(pos(5, 0), UTF16)


def test_position_at_is_the_inverse_of_offset_at():
    doc = Document("u", "a😀b\r\n\tx = 'é'\n")
    for offset in range(len(doc.text) + 1):
        if doc.text[max(offset - 1, 0)] == "\r" and offset < len(doc.text) and doc.text[offset] == "\n":
            continue  # between \r and \n: not a position
        p = doc.position_at(offset, UTF16)
        assert doc.offset_at(p, UTF16) == offset


def test_reversed_range_is_an_error():
    doc = Document("u", "abc")
    with pytest.raises(PositionError):
        doc.range_offsets(types.Range(start=pos(0, 2), end=pos(0, 1)), UTF16)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab😀\r\n\t é", max_size=40), st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 60), st.text(alphabet="xy😀\n\r", max_size=5)), max_size=6))
def test_incremental_changes_equal_splicing_the_text(text, edits):
    doc = Document("u", text)
    reference = text
    for a, b, new in edits:
        a, b = sorted((min(a, len(reference)), min(b, len(reference))))
        # Ranges at character boundaries that are not between \r and \n.
        if any(0 < i < len(reference) and reference[i - 1] == "\r" and reference[i] == "\n" for i in (a, b)):
            continue
        rng = types.Range(start=doc.position_at(a, UTF16), end=doc.position_at(b, UTF16))
        doc.apply_change(types.TextDocumentContentChangePartial(range=rng, text=new), UTF16)
        reference = reference[:a] + new + reference[b:]
        assert doc.text == reference


# --- settings -------------------------------------------------------------------------------


def test_settings_accept_camel_and_snake_case_and_the_nested_form():
    merged, errors = merge_settings(Settings(), {"seedLsp": {"blockSize": 4, "max_tokens_line": 10}})
    assert (merged.block_size, merged.max_tokens_line, errors) == (4, 10, [])


@pytest.mark.parametrize("raw,message", [
    ({"draft": "ngram"}, "draft must be one of"),
    ({"draftTokens": 0}, "draft_tokens must be between"),
    ({"draftMinMatch": 4}, "draft_min_match must be between"),
    ({"verify": "yes"}, "verify must be true or false"),
    ({"tau": 7}, "tau must be between"),
    ({"device": "tpu"}, "device must be one of"),
    ({"n": "3"}, "n must be an integer"),
    ({"enabled": 1}, "enabled must be true or false"),
    ({"languages": [1]}, "languages must be a list"),
    ({"colour": "red"}, "unknown setting"),
])
def test_invalid_settings_keep_the_previous_value(raw, message):
    before = Settings(tau=0.8, device="cpu", n=2)
    merged, errors = merge_settings(before, raw)
    assert merged == before
    assert len(errors) == 1 and message in errors[0]


def test_completions_verify_by_default_and_sampling_falls_back_to_diffusion():
    from lsp_server.inline import decode_config

    default = decode_config(Settings(), "line")
    assert (default.verify, default.block_size, default.draft, default.min_match) == (True, Settings().draft_tokens,
                                                                                      "lookup", 2)
    both, _ = merge_settings(Settings(), {"draft": "both", "draftMinMatch": 1})
    assert (decode_config(both, "line").draft, decode_config(both, "line").min_match) == ("both", 1)
    merged, _ = merge_settings(Settings(), {"verify": False, "draft": "lookup", "draftTokens": 6})
    assert (decode_config(merged, "block").verify, decode_config(merged, "block").block_size) == (False, 8)
    sampled = decode_config(Settings(temperature=0.7), "line")
    assert not sampled.verify and sampled.block_size == Settings().block_size


def test_settings_must_be_an_object():
    merged, errors = merge_settings(Settings(), ["tau", 1])
    assert merged == Settings() and "must be an object" in errors[0]


def test_languages_star_serves_everything():
    assert Settings(languages=("*",)).serves("rust") and not Settings().serves("rust")


# --- completion cache -----------------------------------------------------------------------


def test_typing_into_a_shown_completion_returns_the_rest():
    cache = CompletionCache()
    cache.put("u", "x = ", "\nprint(x)", Shown(("compute(a, b)", "other"), ((0.9,), (0.8,))))
    hit = cache.lookup("u", "x = comp", "\nprint(x)")
    assert hit.texts == ("ute(a, b)",)
    assert cache.lookup("u", "x = zzz", "\nprint(x)") is None
    assert cache.lookup("u", "x = comp", "\nchanged") is None, "another suffix is another context"
    assert cache.lookup("u", "x = compute(a, b)", "\nprint(x)") is None, "nothing left to show"
    assert cache.hits == 1 and cache.misses == 3


def test_cache_is_bounded_and_forgets_documents():
    cache = CompletionCache(max_entries=2)
    for i in range(3):
        cache.put("u", f"p{i}", "", Shown(("t",), ((1.0,),)))
    assert cache.lookup("u", "p0", "") is None and cache.lookup("u", "p2", "") is not None
    cache.forget("u")
    assert cache.lookup("u", "p2", "") is None
