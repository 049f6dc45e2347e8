"""The language server end to end over stdio: a real server process and a pygls client.

Uses a tiny random model exported to a bundle (the protocol does not depend on
what the model writes); tests/test_lsp_memorized.py checks real completions.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from lsprotocol import types

from export.bundle_writer import write_bundle
from model.checkpoint import save_checkpoint
from model.network import DiffusionLM, ModelConfig
from tests.lsp_client import SeedClient

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "model" / "tokenizer.json"
URI = "file:///work/demo.py"
TEXT = "import os\n\n\ndef area(width, height):\n    return width * height\n\n\nprint(area(2, 3))\n"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lsp")
    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(vocab_size=12_288, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96))
    save_checkpoint(root / "ckpt", model, TOKENIZER, {"tokens_total": 1, "stage": "diffusion", "step": 1,
                                                      "trained_context": 512})
    write_bundle(root / "ckpt", root / "bundle", ["fp32", "int8"], verify_jobs=0, log=lambda _: None,
                 keep_fp32=False)
    return root / "bundle"


def run(scenario, bundle: Path, tmp_path: Path, options: dict | None = None, **init):
    """Start a server, initialize it with the bundle, run scenario(client), always shut down."""

    async def main():
        client = SeedClient()
        await client.start_server(tmp_path / "server.log")
        try:
            await client.initialize_server({"bundle": str(bundle), "threads": 1, "maxTokensLine": 8,
                                            "maxTokensBlock": 16, **(options or {})}, **init)
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(asyncio.wait_for(main(), 180))


def test_capabilities_and_ready_status(bundle, tmp_path):
    async def scenario(client):
        status = await client.wait_ready()
        return status, client.server_capabilities

    status, caps = run(scenario, bundle, tmp_path)
    assert status["state"] == "ready" and status["variant"] == "int8"
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.code_action_provider.resolve_provider is True
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == types.PositionEncodingKind.Utf16


def test_inline_completion_range_is_the_cursor_in_utf16(bundle, tmp_path):
    text = 'x = "😀\t"; y = len(x)\n'

    async def scenario(client):
        await client.wait_ready()
        client.open(URI, text)
        return await client.inline(URI, 0, 9)  # after the closing quote: 😀 counts 2 UTF-16 units

    result = run(scenario, bundle, tmp_path)
    for item in result.items:
        assert item.range.start == item.range.end == types.Position(line=0, character=9)
        assert "\n" not in item.insert_text


def test_utf8_encoding_is_negotiated(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        caps = client.server_capabilities
        client.open(URI, 'x = "é"; y = 1\n')
        return caps, await client.inline(URI, 0, 9)  # é is 2 UTF-8 bytes

    caps, result = run(scenario, bundle, tmp_path, encodings=[types.PositionEncodingKind.Utf8])
    assert caps.position_encoding == types.PositionEncodingKind.Utf8
    for item in result.items:
        assert item.range.start == types.Position(line=0, character=9)


def test_incremental_changes_keep_the_servers_copy_equal(bundle, tmp_path):
    import hashlib

    async def scenario(client):
        await client.wait_ready()
        client.open(URI, "a😀b\r\nsecond\x0cline\nthird")
        client.change(URI, 2, [types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=1), end=types.Position(line=0, character=3)),
            text="XY")])
        client.change(URI, 3, [types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=6), end=types.Position(line=2, character=0)),
            text="")])
        client.change(URI, 4, [types.TextDocumentContentChangeWholeDocument(text="whole\n")])
        first = await client.document_hash(URI)
        client.change(URI, 5, [types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=0), end=types.Position(line=1, character=0)),
            text="more")])
        return first, await client.document_hash(URI)

    first, second = run(scenario, bundle, tmp_path)
    assert first == hashlib.sha256(b"whole\n").hexdigest()
    assert second == hashlib.sha256(b"whole\nmore").hexdigest()


def test_form_feed_is_not_a_line_break(bundle, tmp_path):
    import hashlib

    async def scenario(client):
        await client.wait_ready()
        client.open(URI, "a\x0cb\nc")
        client.change(URI, 2, [types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=0), end=types.Position(line=1, character=1)),
            text="Z")])
        return await client.document_hash(URI)

    assert run(scenario, bundle, tmp_path) == hashlib.sha256("a\x0cb\nZ".encode()).hexdigest()


def test_bad_positions_and_unknown_documents_give_errors_and_the_server_lives(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        client.open(URI, TEXT)
        errors = []
        for uri, line, character in ((URI, 999, 0), ("file:///nope.py", 0, 0)):
            try:
                await client.inline(uri, line, character)
                errors.append(None)
            except Exception as exc:
                errors.append(str(exc))
        past_line_end = await client.inline(URI, 0, 500)  # clamps to the line's end (LSP spec)
        return errors, past_line_end, await client.command("seedLsp.status")

    errors, past_line_end, status = run(scenario, bundle, tmp_path)
    assert "past the end" in errors[0] and "unknown document" in errors[1]
    for item in past_line_end.items:
        assert item.range.start == types.Position(line=0, character=len("import os"))
    assert status["state"] == "ready"


def test_invalid_configuration_is_reported_and_the_old_value_kept(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"seedLsp": {"tau": 7, "blockSize": 4}}))
        await asyncio.sleep(0.3)
        return client.messages, await client.command("seedLsp.status")

    messages, status = run(scenario, bundle, tmp_path)
    assert any("tau must be between" in m.message for m in messages)
    assert status["state"] == "ready"


def test_toggle_disables_completions(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        client.open(URI, TEXT)
        toggled = await client.command("seedLsp.toggle")
        disabled = await client.inline(URI, 4, 11)
        again = await client.command("seedLsp.toggle")
        return toggled, disabled, again

    toggled, disabled, again = run(scenario, bundle, tmp_path)
    assert toggled["enabled"] is False and toggled["state"] == "disabled"
    assert disabled is None or not disabled.items
    assert again["enabled"] is True


def test_broken_bundle_is_reported_once_and_the_server_answers(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{")

    async def scenario(client):
        status = await client.wait_ready()
        client.open(URI, TEXT)
        return status, await client.inline(URI, 4, 11), client.messages

    status, result, messages = run(scenario, broken, tmp_path)
    assert status["state"] == "error" and "bundle.json" in status["error"]
    assert not result.items
    assert sum("model not loaded" in m.message for m in messages) == 1


def test_syntax_errors_are_published(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        client.open(URI, "def f(x)\n    return x\n")
        for _ in range(100):
            if URI in client.diagnostics:
                break
            await asyncio.sleep(0.05)
        return client.diagnostics.get(URI)

    diagnostics = run(scenario, bundle, tmp_path, {"debounceMs": 10})
    assert diagnostics and diagnostics[0].range.start.line == 0 and diagnostics[0].source == "seed-lsp"


def test_code_actions_are_listed_at_once_and_resolve(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        client.open(URI, "def f(x):\n    ...\n")
        here = types.Range(start=types.Position(line=1, character=4), end=types.Position(line=1, character=4))
        diagnostic = types.Diagnostic(range=here, message="something is wrong", source="other")
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), range=here,
            context=types.CodeActionContext(diagnostics=[diagnostic])))
        resolved = await client.code_action_resolve_async(actions[0])
        return actions, resolved

    actions, resolved = run(scenario, bundle, tmp_path)
    titles = [a.title for a in actions]
    assert titles[0].startswith("Fix with model") and actions[0].kind == types.CodeActionKind.QuickFix
    assert any("Complete block" in t for t in titles) and any("Fill in body" in t for t in titles)
    assert all(a.edit is None for a in actions), "edits are computed in resolve"
    assert resolved.title == actions[0].title  # a random model rarely verifies: edit may be None


def test_cancelled_request_gets_the_cancel_error_and_the_server_keeps_serving(bundle, tmp_path):
    async def scenario(client):
        await client.wait_ready()
        client.open(URI, TEXT)
        request = asyncio.ensure_future(client.inline(URI, 4, 11))
        await asyncio.sleep(0.01)
        request.cancel()  # the pygls client sends $/cancelRequest
        try:
            await request
        except asyncio.CancelledError:
            pass
        return await client.inline(URI, 4, 11), await client.command("seedLsp.status")

    after, status = run(scenario, bundle, tmp_path, {"maxTokensLine": 32})
    assert after is not None and status["state"] == "ready"
