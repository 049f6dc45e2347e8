"""Pure parts behind the reliability work: framing, JSON-RPC checks, code units, atomic changes.

Property tests (derandomized, bounded) against simple reference implementations:
the frame parser against any chunking of a stream (with junk and wrong lengths
mixed in), unit counting against pygls's per-character counters (including lone
surrogates), and a didChange that is applied all or nothing.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server.documents import Document, PositionError, canonical, column_from_units, count_units, model_text
from lsp_server.transport import (INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, Frame, FrameParser, FramingError,
                                  check_message, handle_body)

FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None)
CODECS = [PositionCodec(encoding=e) for e in (types.PositionEncodingKind.Utf16, types.PositionEncodingKind.Utf8,
                                                types.PositionEncodingKind.Utf32)]
CHARS = st.sampled_from(["a", " ", "\t", "é", "€", "😀", "𝔘", "\ud83d", "\ude00", "\ud800", "\x00", "\ufeff"])


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def parse(chunks: list[bytes]) -> list:
    parser, events = FrameParser(), []
    for chunk in chunks:
        parser.feed(chunk)
        while (event := parser.next()) is not None:
            events.append(event)
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


bodies = st.lists(st.dictionaries(st.text(max_size=4), st.integers(), max_size=3), min_size=1, max_size=5)


@FAST
@given(bodies, st.lists(st.integers(0, 400), max_size=8))
def test_frames_survive_any_chunking(messages, cuts):
    data = b"".join(frame(json.dumps(m).encode()) for m in messages)
    events = parse(split(data, cuts))
    assert [json.loads(e.body) for e in events] == messages


@FAST
@given(bodies, st.integers(0, 4), st.sampled_from([b"junk", b"\x00\xff", b"}]", b"Content-Type: x\r\n\r\n"]),
       st.lists(st.integers(0, 400), max_size=6))
def test_junk_between_messages_costs_errors_not_messages(messages, where, junk, cuts):
    frames = [frame(json.dumps(m).encode()) for m in messages]
    where = min(where, len(frames))
    data = b"".join(frames[:where]) + junk + b"".join(frames[where:])
    events = parse(split(data, cuts))
    assert [json.loads(e.body) for e in events if isinstance(e, Frame)] == messages
    if where < len(frames):  # junk at the very end may still be a header arriving: no verdict yet
        assert any(isinstance(e, FramingError) for e in events)


def test_header_names_are_case_insensitive_and_other_headers_are_allowed():
    events = parse([b"content-length: 2\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}"])
    assert events == [Frame(b"{}")]


class FakeProtocol:
    """Records what transport.handle_body sends or dispatches."""

    def __init__(self):
        self.sent, self.handled = [], []
        self.fm = type("FM", (), {"builtin_features": {"initialize": 1}, "features": {"known/method": 1}})()

    def _send_data(self, data):
        self.sent.append(data)

    def structure_message(self, data):
        if data.get("params") == "bad":
            raise ValueError("does not validate")
        return data

    def handle_message(self, message):
        self.handled.append(message)


@pytest.mark.parametrize("body,code,msg_id", [
    (b"{nope", PARSE_ERROR, None),
    (b"[]", INVALID_REQUEST, None),
    (b'"text"', INVALID_REQUEST, None),
    (b'{"jsonrpc": "2.0", "id": 3}', INVALID_REQUEST, 3),
    (b'{"jsonrpc": "2.0", "id": 3, "method": "known/method", "params": 7}', INVALID_PARAMS, 3),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "known/method", "params": "bad"}', INVALID_PARAMS, 4),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "unknown/method"}', -32601, 5),
    (b'{"id": 6, "method": "known/method"}', INVALID_REQUEST, 6),
    (b'{"jsonrpc": "2.0", "id": true, "method": "known/method"}', INVALID_REQUEST, None),
])
def test_every_malformed_request_gets_the_spec_error(body, code, msg_id):
    protocol = FakeProtocol()
    handle_body(protocol, body)
    assert protocol.handled == []
    assert [(m["id"], m["error"]["code"]) for m in protocol.sent] == [(msg_id, code)]


def test_a_malformed_notification_is_dropped_quietly_and_a_good_one_dispatched():
    protocol = FakeProtocol()
    handle_body(protocol, b'{"jsonrpc": "2.0", "method": "known/method", "params": "bad"}')
    handle_body(protocol, b'{"jsonrpc": "2.0", "method": "known/method"}')
    assert protocol.sent == [] and protocol.handled == [{"jsonrpc": "2.0", "method": "known/method", "params": None}]
    assert check_message({"jsonrpc": "2.0", "id": 1, "result": None}) is None  # a response to us


def test_a_body_that_swallowed_the_next_message_is_split_there():
    parser, protocol = FrameParser(), FakeProtocol()
    good = frame(b'{"jsonrpc": "2.0", "id": 9, "method": "known/method"}')
    parser.feed(b'Content-Length: 40\r\n\r\n{"jsonrpc": "2.0", "met' + good)
    while (event := parser.next()) is not None:
        handle_body(protocol, event.body, parser)
    assert protocol.sent[0]["error"]["code"] == PARSE_ERROR
    assert [m["id"] for m in protocol.handled] == [9]


# --- code units -----------------------------------------------------------------------------------


@FAST
@given(st.lists(CHARS, max_size=30).map("".join), st.integers(0, 130))
def test_column_from_units_equals_counting_character_by_character(line, units):
    for codec in CODECS:
        expected, used = 0, 0
        for ch in line:  # pygls's counter, one character at a time: the obvious definition
            width = codec.impl.code_units_for_char(ch)
            if used + width > units:
                break
            used, expected = used + width, expected + 1
        assert column_from_units(line, units, codec) == expected
        assert count_units(line, codec) == codec.client_num_units(line)


def test_a_5mb_line_converts_in_milliseconds():
    import time

    line = "x = 1  # 😀 é\x00 " * 350_000
    started = time.perf_counter()
    for units in (0, 3_000_000, 10**9):
        column_from_units(line, units, CODECS[0])
    assert time.perf_counter() - started < 2.0


def test_canonical_joins_surrogate_halves_and_model_text_replaces_lone_ones():
    assert canonical("a\ud83d\ude00b") == "a😀b"
    assert canonical("\ud800x\udc00") == "\ud800x\udc00"
    assert model_text("a\ud800b") == "a\ufffdb" and len(model_text("\udfff" * 3)) == 3


def test_inserting_the_second_half_of_a_pair_forms_the_character():
    codec = CODECS[0]
    doc = Document("u", "a\ud83d")
    doc.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(start=types.Position(line=0, character=2), end=types.Position(line=0, character=2)),
        text="\ude00"), codec)
    assert doc.text == "a😀"


def test_a_did_change_is_applied_all_or_nothing():
    codec = CODECS[0]
    doc = Document("u", "one\ntwo\n")
    good = types.TextDocumentContentChangePartial(
        range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=3)),
        text="ONE")
    bad = types.TextDocumentContentChangePartial(
        range=types.Range(start=types.Position(line=9, character=0), end=types.Position(line=9, character=0)),
        text="x")
    with pytest.raises(PositionError):
        doc.apply_changes([good, bad], codec)
    assert doc.text == "one\ntwo\n"
    doc.apply_changes([good, types.TextDocumentContentChangeWholeDocument(text="new")], codec)
    assert doc.text == "new"
