"""Cancellation storm: 1,000 inline requests while a user types, each one cancelling the previous.

The user types 1,000 characters at 20 characters/s and pauses for a second
after each line; time is compressed (COMPRESSION x) so the test takes seconds,
but the order of events is an editor's: for every keystroke a didChange, a
$/cancelRequest for the previous inline request if it is still open, then a new
inline request at the cursor. Mid-line keystrokes come faster than the model
answers (those requests are cancelled); the pauses let some complete.

Checked: every request is answered (a result, or RequestCancelled), the server
lives, the last request gets a completion for the final document, and no
answer is stale. Staleness is checked exactly: the model is a tiny fp32 bundle
(deterministic, exact between the server's cached prefills and a cold prefill
here), so each non-empty answer must be either the completion this test
computes in-process for that request's document version, or, when the user
typed into a completion shown earlier, the rest of that earlier answer (the
server's typed-ahead cache).
"""

from __future__ import annotations

import time

from lsp_server.config import Settings, merge_settings
from lsp_server.inline import complete
from lsp_server.service import apply_budget
from tests.doc_model import RefDoc
from tests.raw_lsp import INTERNAL_ERROR, REQUEST_CANCELLED, RawServer
from tests.tiny_bundle import tiny_fp32_bundle

KEYSTROKES = 1000
CHARS_PER_SECOND = 20
LINE_PAUSE_S = 1.0  # the user looks at the line just typed
COMPRESSION = 10  # replayed 10x faster: one keystroke every 5 ms, 100 ms pauses
# Plain diffusion decoding: at the final cursor the random model's autoregressive text (what the
# default verify decoder writes) is whitespace the filters drop, and the last answer must show text.
OPTIONS = {"threads": 1, "maxTokensLine": 8, "maxTokensBlock": 8, "requestTimeoutMs": 600_000, "debounceMs": 200,
           "verify": False}
URI = "file:///storm/typing.py"
BEFORE = "import os\n\n\ndef report(items, width):\n    total = 0\n    "
AFTER = "\n    return total\n\n\nprint(report([1, 2], 3))\n"
# What the user types: Python-ish lines, long enough for 1,000 keystrokes.
TYPED = ("for item in items:\n        total += len(str(item)) * width\n    "
         "if total > width:\n        print(os.sep, total)\n    ") * 12


def reference(engine, settings: Settings, prefix: str, suffix: str) -> list[str]:
    candidates, _ = complete(engine, URI, prefix, suffix, settings)
    return [c.text for c in candidates]


def test_cancellation_storm(tmp_path):
    from engine.engine import Engine

    typed = TYPED[:KEYSTROKES]
    assert len(typed) == KEYSTROKES
    bundle = tiny_fp32_bundle()
    settings, errors = merge_settings(Settings(), {"bundle": str(bundle), **OPTIONS})
    assert not errors
    engine = Engine.from_bundle(bundle, device="cpu", threads=1)
    apply_budget(engine, settings)

    doc = RefDoc(BEFORE + AFTER)
    cursor = len(BEFORE)
    states = []  # (prefix, suffix, cursor position) for each request
    futures = []
    with RawServer(tmp_path / "server.log") as srv:
        srv.initialize({**OPTIONS, "bundle": str(bundle)})
        assert srv.wait_ready()["state"] == "ready"
        srv.open(URI, doc.text)
        interval = 1 / CHARS_PER_SECOND / COMPRESSION
        started = time.monotonic()
        for k, char in enumerate(typed):
            at = time.monotonic()
            line, character = doc.position(cursor)
            change = {"range": {"start": {"line": line, "character": character},
                                "end": {"line": line, "character": character}}, "text": char}
            if futures and not futures[-1][1].done():
                srv.cancel(futures[-1][0])  # the editor drops the request typing made obsolete
            srv.change(URI, k + 2, [change])
            doc.text = doc.changed([change])
            cursor += 1
            position = doc.position(cursor)
            states.append((doc.text[:cursor], doc.text[cursor:], position))
            futures.append(srv.request_async("textDocument/inlineCompletion", {
                "textDocument": {"uri": URI}, "position": {"line": position[0], "character": position[1]},
                "context": {"triggerKind": 2}}))
            pause = interval + (LINE_PAUSE_S / COMPRESSION if char == "\n" else 0.0)
            time.sleep(max(0.0, pause - (time.monotonic() - at)))
        typing_s = time.monotonic() - started
        answers = [future.result(120) for _, future in futures]
        assert srv.alive()
        assert srv.document_hash(URI) == doc.sha256()
        log = srv.log_text()

    # Every request answered: a result or the cancellation error.
    cancelled = [a for a in answers if "error" in a]
    for answer in cancelled:
        assert answer["error"]["code"] == REQUEST_CANCELLED, answer
        assert answer["error"]["code"] != INTERNAL_ERROR
    shown = {}  # request index -> texts it was answered with (non-empty answers only)
    for k, answer in enumerate(answers):
        if "result" in answer and answer["result"] and answer["result"]["items"]:
            items = answer["result"]["items"]
            for item in items:
                assert (item["range"]["start"]["line"], item["range"]["start"]["character"]) == states[k][2]
            shown[k] = [item["insertText"] for item in items]
    last = len(answers) - 1
    assert last in shown, f"the last request got no completion: {answers[-1]}"

    # None stale: each answer is the model's completion for its own document version...
    stale = []
    for k, texts in shown.items():
        prefix, suffix, _ = states[k]
        if texts == reference(engine, settings, prefix, suffix):
            continue
        # ...or the rest of an earlier answer the user typed into (same suffix, prefix extended).
        if any(states[j][1] == suffix and prefix.startswith(states[j][0]) and 0 < len(prefix) - len(states[j][0]) <= 64
               and texts == [t[len(prefix) - len(states[j][0]):] for t in shown[j]
                             if t.startswith(prefix[len(states[j][0]):]) and len(t) > len(prefix) - len(states[j][0])]
               for j in shown if j < k):
            continue
        stale.append((k, texts))
    assert not stale, f"{len(stale)} stale answers, first: {stale[0]}"
    assert "Traceback" not in log, log[-3000:]
    print(f"storm: {KEYSTROKES} requests typed in {typing_s:.1f} s, {len(cancelled)} cancelled, "
          f"{len(shown)} with completions")
