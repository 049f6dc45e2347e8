"""Protocol fuzzing: a real server process over stdio, driven with anything a client could send.

- A hypothesis state machine opens, changes (incremental and full, valid and
  invalid ranges), completes, asks for code actions, resolves, cancels and
  closes documents whose text holds NUL bytes, lone surrogates, surrogate pairs,
  CRLF / CR line ends and form feeds, at positions anywhere (negative, past the
  end, inside surrogate pairs). After every step: every request was answered
  (a result, or a JSON-RPC error of the expected kind, never an internal error),
  the server is alive, and each document's documentHash equals the client's
  copy (tests/doc_model.py, written independently of lsp_server/documents.py).
- A 5 MB line: changes and requests at its end, inside it, past it.
- Malformed JSON-RPC as raw bytes: bad headers, truncated bodies, invalid JSON,
  non-objects, unknown methods, bad params, a request before initialize.
  Errors per the JSON-RPC / LSP specs, and the server keeps serving.

One server per test function (a tiny random model: what it writes does not
matter here); hypothesis runs derandomized with a bounded number of examples.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule,
                                 run_state_machine_as_test)

from tests.doc_model import Invalid, RefDoc, sha256
from tests.raw_lsp import INTERNAL_ERROR, INVALID_PARAMS, REQUEST_CANCELLED, RawServer, frame
from tests.tiny_bundle import tiny_bundle

OPTIONS = {"threads": 1, "maxTokensLine": 6, "maxTokensBlock": 8, "debounceMs": 20, "requestTimeoutMs": 20_000}
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, NOT_INITIALIZED = -32700, -32600, -32601, -32002

PIECES = ["a", "b", "x", "_", "1", " ", "    ", "\t", "\n", "\r", "\r\n", "\x00", "\x0c", "\u2028", "é", "ñ", "€",
          "😀", "𝔘", "\ud83d", "\ude00", "\ud800", "\udfff", "\ufeff", "(", ")", ":", '"', "#", "def f(x):\n",
          "    return x\n", "pass", "...", "import os\r\n"]
texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)

uri_counter = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    srv = RawServer(log)
    srv.initialize({"bundle": str(tiny_bundle()), **OPTIONS})
    assert srv.wait_ready()["state"] == "ready"
    yield srv
    assert srv.alive(), srv.log_text()[-2000:]
    assert srv.close() == 0
    assert not srv.orphans, f"the server answered something nobody sent: {srv.orphans[:3]}"
    assert "Traceback" not in srv.log_text(), srv.log_text()[-3000:]


def check_answer(response: dict, *, expect_error: bool, method: str) -> None:
    """A result, or an error of the kind the request deserves; never an internal error."""
    if "error" in response:
        code = response["error"]["code"]
        assert code != INTERNAL_ERROR, f"{method}: internal error {response['error']}"
        assert code in (INVALID_PARAMS, REQUEST_CANCELLED), f"{method}: unexpected error {response['error']}"
        if code == INVALID_PARAMS:
            assert expect_error, f"{method}: valid request refused: {response['error']}"
    else:
        assert "result" in response
        assert not expect_error, f"{method}: invalid request answered with a result: {response}"


class ProtocolMachine(RuleBasedStateMachine):
    """Random LSP traffic against one long-running server; the client's copies are RefDocs."""

    srv: RawServer = None  # set by the test

    def __init__(self):
        super().__init__()
        self.docs: dict[str, RefDoc] = {}
        self.example = next(uri_counter)
        self.actions: list[dict] = []

    uris = Bundle("uris")

    @initialize(target=uris, text=texts)
    def first_document(self, text):
        return self.open("a.py", text, "python")

    # --- strategies that depend on the state ------------------------------------------------

    def draw_uri(self, data, *, allow_unknown: bool = True) -> str:
        """An open document mostly; now and then one that is not open."""
        known = sorted(self.docs)
        unknown = f"file:///fuzz/{self.example}/unknown.py"
        if not known or (allow_unknown and data.draw(st.integers(0, 9), label="unknown?") == 0):
            return unknown
        return data.draw(st.sampled_from(known), label="uri")

    def draw_position(self, data, doc: RefDoc | None) -> tuple[int, int]:
        """Inside the document mostly; else anywhere: negative, past the end, huge."""
        lines = len(doc.starts()) if doc else 1
        wild = data.draw(st.integers(0, 7), label="wild?") == 0
        line = data.draw(st.integers(-2, lines + 1) if wild else st.integers(0, lines - 1), label="line")
        width = doc.line_units(line) if doc and 0 <= line < lines else 4
        character = data.draw(st.one_of(st.integers(-2, width + 4), st.just(2**31 - 1)) if wild
                              else st.integers(0, width), label="character")
        return line, character

    @staticmethod
    def pos(line: int, character: int) -> dict:
        return {"line": line, "character": character}

    # --- rules -----------------------------------------------------------------------------------

    @rule(target=uris, name=st.sampled_from(["a.py", "b.py", "c.txt"]), text=texts,
          language=st.sampled_from(["python", "python", "plaintext"]))
    def open(self, name, text, language):
        uri = f"file:///fuzz/{self.example}/{name}"
        self.srv.open(uri, text, 1, language)
        self.docs[uri] = RefDoc(text, 1, language)
        return uri

    @rule(data=st.data())
    def change(self, data):
        uri = self.draw_uri(data)
        doc = self.docs.get(uri)
        changes = []
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            text = data.draw(texts, label="text")
            if data.draw(st.integers(0, 5), label="kind") == 0:
                changes.append({"text": text})
                continue
            start, end = self.draw_position(data, doc), self.draw_position(data, doc)
            if data.draw(st.booleans(), label="ordered"):
                start, end = sorted((start, end))
            changes.append({"range": {"start": self.pos(*start), "end": self.pos(*end)}, "text": text})
        version = (doc.version + 1) if doc else 1
        self.srv.change(uri, version, changes)
        if doc is not None:
            after = doc.changed(changes)
            if after is not None:  # else the server must keep the old text (all or nothing)
                doc.text, doc.version = after, version

    def position_request(self, method: str, data, extra: dict | None = None) -> None:
        uri = self.draw_uri(data)
        doc = self.docs.get(uri)
        line, character = self.draw_position(data, doc)
        params = {"textDocument": {"uri": uri}, "position": self.pos(line, character), **(extra or {})}
        try:
            expected = doc.position(doc.offset(line, character)) if doc else None
        except Invalid:
            expected = None
        response = self.srv.request(method, params)
        check_answer(response, expect_error=self.refused(doc, (line, character), valid=expected is not None),
                     method=method)
        result = response.get("result")
        if result and expected is not None:
            for item in result.get("items", []):
                edit_range = item.get("range") or item["textEdit"]["range"]
                assert (edit_range["start"]["line"], edit_range["start"]["character"]) == expected
                assert edit_range["start"] == edit_range["end"]

    @staticmethod
    def refused(doc: RefDoc | None, *positions, valid: bool) -> bool:
        """Whether the server must answer InvalidParams: a negative number never validates, an
        unknown document is an error, and a bad position only where the language is served
        (elsewhere the handler returns null before looking at it)."""
        if any(v < 0 for p in positions for v in p) or doc is None:
            return True
        return doc.language == "python" and not valid

    @rule(data=st.data())
    def inline(self, data):
        self.position_request("textDocument/inlineCompletion", data, {"context": {"triggerKind": 1}})

    @rule(data=st.data())
    def completion(self, data):
        self.position_request("textDocument/completion", data)

    @rule(data=st.data())
    def code_action(self, data):
        uri = self.draw_uri(data)
        doc = self.docs.get(uri)
        start, end = self.draw_position(data, doc), self.draw_position(data, doc)
        diag_start, diag_end = self.draw_position(data, doc), self.draw_position(data, doc)
        diagnostics = [{"range": {"start": self.pos(*diag_start), "end": self.pos(*diag_end)},
                        "message": data.draw(texts, label="message") or "problem", "source": "fuzz"}]
        only = data.draw(st.sampled_from([None, ["quickfix"], ["refactor"], ["source"]]), label="only")
        context = {"diagnostics": diagnostics, **({"only": only} if only else {})}
        params = {"textDocument": {"uri": uri}, "range": {"start": self.pos(*start), "end": self.pos(*end)},
                  "context": context}
        try:
            valid = doc is not None and (doc.offset(*start), doc.offset(*end)) is not None
        except Invalid:
            valid = False
        response = self.srv.request("textDocument/codeAction", params)
        check_answer(response, expect_error=self.refused(doc, start, end, diag_start, diag_end, valid=valid),
                     method="codeAction")
        self.actions.extend(response.get("result") or [])

    @rule(data=st.data())
    def resolve(self, data):
        garbage = st.one_of(st.none(), st.integers(), st.text(max_size=5),
                            st.fixed_dictionaries({"uri": st.sampled_from(sorted(self.docs) or ["x"]),
                                                   "version": st.one_of(st.none(), st.integers(-1, 9)),
                                                   "action": st.sampled_from(["fix", "block", "fill", "nope"]),
                                                   "start": st.integers(-5, 50), "end": st.integers(-5, 50)}))
        if self.actions and data.draw(st.booleans(), label="real action"):
            action = data.draw(st.sampled_from(self.actions), label="action")
            expect_error = False
        else:
            action = {"title": "fuzz", "data": data.draw(garbage, label="data")}
            expect_error = None  # garbage may or may not be well-formed
        response = self.srv.request("codeAction/resolve", action, timeout=120)
        if expect_error is None:
            assert response.get("error", {}).get("code") in (None, INVALID_PARAMS), response
        else:
            check_answer(response, expect_error=False, method="codeAction/resolve")

    @rule(data=st.data(), delay=st.sampled_from([0.0, 0.0, 0.005, 0.02]))
    def cancel(self, data, delay):
        uri = self.draw_uri(data, allow_unknown=False)
        line, character = self.draw_position(data, self.docs.get(uri))
        msg_id, future = self.srv.request_async("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": self.pos(line, character), "context": {"triggerKind": 2}})
        time.sleep(delay)
        self.srv.cancel(msg_id)
        response = future.result(60)
        assert response.get("error", {}).get("code") in (None, INVALID_PARAMS, REQUEST_CANCELLED), response

    @rule(uri=consumes(uris))
    def close(self, uri):
        self.srv.close_document(uri)
        self.docs.pop(uri, None)

    @rule(method=st.sampled_from(["textDocument/hover", "seedLsp/nothing", "$/unknownRequest"]))
    def unknown_method(self, method):
        response = self.srv.request(method, {"textDocument": {"uri": "file:///x.py"}})
        assert response["error"]["code"] == METHOD_NOT_FOUND, response

    @invariant()
    def copies_agree(self):
        assert self.srv.alive(), self.srv.log_text()[-2000:]
        for uri, doc in self.docs.items():
            assert self.srv.document_hash(uri) == doc.sha256(), f"{uri}: server copy differs from {doc.text!r}"

    def teardown(self):
        for uri in self.docs:
            self.srv.close_document(uri)


def test_random_protocol_traffic(server):
    ProtocolMachine.srv = server
    started = time.monotonic()
    # No shrinking by default: on a failure it can take many minutes against a live server (the
    # unshrunk steps are printed); SEED_LSP_FUZZ_SHRINK=1 turns it on for debugging.
    phases = list(Phase) if os.environ.get("SEED_LSP_FUZZ_SHRINK") == "1" else [Phase.explicit, Phase.generate]
    run_state_machine_as_test(ProtocolMachine, settings=settings(
        max_examples=50, stateful_step_count=40, deadline=None, derandomize=True, database=None,
        phases=phases, suppress_health_check=list(HealthCheck)))
    assert server.alive()
    status = server.result("workspace/executeCommand", {"command": "seedLsp.status"})
    assert status["state"] == "ready"
    assert time.monotonic() - started < 120


def test_a_5mb_line(server):
    """Changes and requests on a document with one 5 MB line (surrogate pairs and NUL bytes in it)."""
    uri = "file:///fuzz/huge.py"
    line = ("x = 1 # 😀\x00é " * 400_000)[:5_000_000]
    doc = RefDoc("import os\n" + line + "\r\ntail()\n")
    server.open(uri, doc.text)
    units = doc.line_units(1)
    edits = [((1, units), (1, units), "  # end"),  # at the end of the huge line
             ((1, units // 2 + 1), (1, units // 2 + 3), "Z😀"),  # in the middle (may split a pair: rounds down)
             ((1, units + 50), (2, 2), "")]  # from past the line's end into the next line
    for version, (start, end, text) in enumerate(edits, 2):
        change = {"range": {"start": {"line": start[0], "character": start[1]},
                            "end": {"line": end[0], "character": end[1]}}, "text": text}
        server.change(uri, version, [change])
        doc.text = doc.changed([change])
        assert server.document_hash(uri) == doc.sha256()
    started = time.monotonic()
    for line_no, character in ((1, doc.line_units(1)), (1, 1000), (1, doc.line_units(1) + 99), (1, 8)):
        response = server.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line_no, "character": character},
            "context": {"triggerKind": 1}}, timeout=120)
        check_answer(response, expect_error=False, method="inline on a 5 MB line")
    assert time.monotonic() - started < 60
    server.close_document(uri)
    assert server.document_hash(uri) is None


# --- malformed JSON-RPC over raw bytes ------------------------------------------------------------


def raw(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def wait_orphans(srv: RawServer, count: int, timeout: float = 20.0) -> list[dict]:
    srv.wait_for(lambda: len(srv.orphans) >= count, timeout, f"{count} error responses with id null")
    return srv.orphans[:count]


def test_malformed_json_rpc_gets_spec_errors_and_the_server_keeps_serving(tmp_path):
    with RawServer(tmp_path / "server.log") as srv:
        # Before initialize: a request gets ServerNotInitialized, a notification is dropped.
        early = srv.request("textDocument/inlineCompletion", srv.inline_params("file:///a.py", 0, 0))
        assert early["error"]["code"] == NOT_INITIALIZED
        srv.open("file:///early.py", "dropped")
        assert srv.request("workspace/executeCommand", {"command": "seedLsp.status"})["error"]["code"] == NOT_INITIALIZED
        srv.initialize({"bundle": str(tiny_bundle()), **OPTIONS})
        srv.wait_ready()
        assert srv.document_hash("file:///early.py") is None, "a notification before initialize was applied"

        cases = [
            (raw(b'{"a": tru'), PARSE_ERROR),  # invalid JSON
            (raw(b"\xff\xfe\x00{"), PARSE_ERROR),  # not UTF-8
            (raw(b"[1]"), INVALID_REQUEST),  # a batch (LSP has none)
            (raw(b"42"), INVALID_REQUEST),  # not an object
            (raw(b'{"jsonrpc": "1.0", "id": null, "method": "x"}'), INVALID_REQUEST),
            (raw(b'{"jsonrpc": "2.0", "id": [1], "method": "x"}'), INVALID_REQUEST),  # an id of the wrong type
            (b"Content-Type: text/plain\r\n\r\n{}", PARSE_ERROR),  # no Content-Length
            (b"Content-Length: many\r\n\r\n", PARSE_ERROR),  # not a number
            (b"this is not a header\r\n\r\n", PARSE_ERROR),  # junk
        ]
        for data, code in cases:
            before = len(srv.orphans)
            srv.write(data)
            reply = wait_orphans(srv, before + 1)[before]
            assert reply["id"] is None and reply["error"]["code"] == code, (data, reply)
            assert srv.result("workspace/executeCommand", {"command": "seedLsp.status"})["state"] == "ready"

        # Requests with an id get their error with that id.
        for message, code in [
            ({"jsonrpc": "2.0", "id": 7, "method": "no/suchMethod"}, METHOD_NOT_FOUND),
            ({"jsonrpc": "2.0", "id": 8, "method": "textDocument/inlineCompletion", "params": {"x": 1}},
             INVALID_PARAMS),
            ({"jsonrpc": "2.0", "id": 9, "method": "textDocument/completion", "params": "text"}, INVALID_PARAMS),
            ({"jsonrpc": "2.0", "id": 10, "method": 5}, INVALID_REQUEST),
            ({"jsonrpc": "2.0", "id": "s", "method": "initialize", "params": {"capabilities": 3}}, INVALID_PARAMS),
            ({"jsonrpc": "2.0", "id": 11, "method": "textDocument/inlineCompletion",
              "params": srv.inline_params("file:///a.py", -1, 0)}, INVALID_PARAMS),
        ]:
            reply = srv.expect(message["id"])
            srv.send(message)
            assert reply.result(20)["error"]["code"] == code, (message, reply.result())

        # A body shorter than its Content-Length swallows the next message: split there and serve it.
        answer = srv.expect(99)
        srv.write(b'Content-Length: 80\r\n\r\n{"jsonrpc": "2.0", "method": "initialized"' + frame(
            {"jsonrpc": "2.0", "id": 99, "method": "workspace/executeCommand",
             "params": {"command": "seedLsp.documentHash", "arguments": ["file:///none.py"]}}))
        assert answer.result(20) == {"jsonrpc": "2.0", "id": 99, "result": None}
        # A body longer than its Content-Length: the rest is junk up to the next message.
        srv.write(b'Content-Length: 5\r\n\r\n{"jsonrpc": "2.0"}')
        # Bad notifications are dropped without an answer (there is no id to answer).
        srv.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": 3}})
        srv.send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": "file:///n.py", "version": 1},
            "contentChanges": [{"range": {"start": {"line": -1, "character": 0},
                                          "end": {"line": 0, "character": 0}}, "text": "x"}]}})
        srv.send({"jsonrpc": "2.0", "method": "seedLsp/unknownNotification"})
        srv.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 12345}})
        srv.open("file:///after.py", "x = 1\n")
        assert srv.document_hash("file:///after.py") == sha256("x = 1\n")
        assert srv.result("workspace/executeCommand", {"command": "seedLsp.status"})["state"] == "ready"
        assert srv.alive()
        # After shutdown: requests get InvalidRequest; exit ends the process cleanly.
        assert srv.request("shutdown")["result"] is None
        assert srv.request("textDocument/completion", srv.inline_params("file:///after.py", 0, 0))["error"]["code"] \
            == INVALID_REQUEST
        srv.notify("exit")
        assert srv.proc.wait(10) == 0
        log = srv.log_text()
        assert "Traceback" not in log, log[-3000:]
        assert "x = 1" not in log
