"""The server with a model that knows the files: exact completions, ranges, block stops,
quick fixes that restore the original, stale results dropped, cancellation.

The model is the session's `memorized` fixture (tests/memorized.py). Cases are
chosen where the engine itself completes exactly, so these tests check the
server's path (positions, filters, caches, actions), not the model's quality.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types

from engine.decode import DecodeConfig
from engine.engine import Engine, Job
from tests.lsp_client import SeedClient

NAME = "engine/prefix_cache.py"
URI = "file:///memo/prefix_cache.py"
LINE = DecodeConfig(block_size=8, tau=0.9, max_tokens=32, mode="line")


def lsp_position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    start = text.rfind("\n", 0, offset) + 1
    return types.Position(line=line, character=len(text[start:offset].encode("utf-16-le")) // 2)


@pytest.fixture(scope="module")
def engine(memorized) -> Engine:
    return Engine.from_bundle(memorized.bundle, device="cpu", threads=1)


@pytest.fixture(scope="module")
def exact_cases(memorized, engine) -> list[tuple[str, str, str]]:
    """Line cases (cursor on an empty new line's indentation or mid-line) the engine completes exactly."""
    cases = []
    for prefix, suffix, want in memorized.line_cases(NAME, at_boundary=True):
        got = engine.complete(Job(prefix, suffix, LINE))[0].completions[0].text
        if got == want and want.strip():
            cases.append((prefix, suffix, want))
        if len(cases) == 4:
            break
    assert len(cases) >= 2, "the memorized model completes too few lines exactly"
    return cases


def run(scenario, bundle: Path, tmp_path: Path, options: dict | None = None, env: dict | None = None):
    async def main():
        client = SeedClient()
        await client.start_server(tmp_path / "server.log", env=env)
        try:
            # No deadline that a loaded machine could hit: these tests check what is shown, not when.
            await client.initialize_server({"bundle": str(bundle), "threads": 1, "mode": "line",
                                            "maxTokensLine": 32, "requestTimeoutMs": 120_000, **(options or {})})
            status = await client.wait_ready()
            assert status["state"] == "ready", status
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(asyncio.wait_for(main(), 240))


def test_inline_completion_is_the_memorized_line(memorized, exact_cases, tmp_path):
    async def scenario(client):
        results = []
        for i, (prefix, suffix, want) in enumerate(exact_cases):
            text = prefix + "\n" + suffix
            uri = f"{URI}.{i}"
            client.open(uri, text)
            at = lsp_position(text, len(prefix))
            results.append((await client.inline(uri, at.line, at.character), at, want))
        return results

    for result, at, want in run(scenario, memorized.bundle, tmp_path):
        assert result.items, f"no completion where the engine writes {want!r}"
        assert result.items[0].insert_text == want
        assert result.items[0].range == types.Range(start=at, end=at)


def test_ranges_count_utf16_with_an_emoji_and_a_tab_before_the_cursor(memorized, exact_cases, tmp_path):
    prefix, suffix, want = exact_cases[0]
    head, _, last = prefix.rpartition("\n")
    # The cursor line gets a string with an emoji and a tab ahead of the code.
    prefix = f'{head}\n{last}"😀\t" and ' if head else f'"😀\t" and {last}'
    text = prefix + "\n" + suffix

    async def scenario(client):
        client.open(URI, text)
        at = lsp_position(text, len(prefix))
        return await client.inline(URI, at.line, at.character), at

    result, at = run(scenario, memorized.bundle, tmp_path, {"minConfidence": 0.0})
    assert at.character == len(prefix.rpartition("\n")[2]) + 1, "the emoji is two UTF-16 units"
    assert result.items, "the model writes something here"
    for item in result.items:
        assert item.range == types.Range(start=at, end=at)


def test_typing_the_shown_completion_is_served_from_the_cache(memorized, exact_cases, tmp_path):
    prefix, suffix, want = exact_cases[0]
    text = prefix + "\n" + suffix

    async def scenario(client):
        client.open(URI, text)
        at = lsp_position(text, len(prefix))
        first = await client.inline(URI, at.line, at.character)
        typed = want[:2]
        client.change(URI, 2, [types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=typed)])
        after = types.Position(line=at.line, character=at.character + len(typed))
        second = await client.inline(URI, after.line, after.character)
        return first, second, await client.command("seedLsp.status")

    first, second, status = run(scenario, memorized.bundle, tmp_path)
    assert first.items[0].insert_text == want
    assert second.items[0].insert_text == want[2:]
    assert status["cacheHitRate"] > 0


def test_block_mode_stops_at_the_dedent(memorized, engine, tmp_path):
    text = memorized.files[NAME]
    cases = memorized.block_cases(NAME)
    assert cases

    async def scenario(client):
        out = []
        for i, (prefix, suffix, body) in enumerate(cases[:3]):
            uri = f"{URI}.block{i}"
            document = prefix + "\n" + suffix
            client.open(uri, document)
            at = lsp_position(document, len(prefix))
            out.append((await client.inline(uri, at.line, at.character), prefix))
        return out

    results = run(scenario, memorized.bundle, tmp_path, {"mode": "block", "maxTokensBlock": 96})
    for result, prefix in results:
        floor = len(prefix) - len(prefix.rstrip(" ")) if prefix.endswith(" ") else 0
        for item in result.items:
            for line in item.insert_text.split("\n")[1:]:
                assert not line.strip() or len(line) - len(line.lstrip()) >= floor, item.insert_text
    assert any(result.items for result, _ in results)


def test_quick_fix_restores_an_injected_syntax_error(memorized, tmp_path):
    original = memorized.files[NAME]
    lines = original.split("\n")
    target = next(i for i, line in enumerate(lines) if line.strip().startswith("def ") and line.endswith(":"))
    broken_lines = list(lines)
    broken_lines[target] = lines[target][:-1]  # drop the colon
    broken = "\n".join(broken_lines)

    async def scenario(client):
        client.open(URI, broken)
        for _ in range(200):
            if client.diagnostics.get(URI):
                break
            await asyncio.sleep(0.05)
        diagnostic = client.diagnostics[URI][0]
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), range=diagnostic.range,
            context=types.CodeActionContext(diagnostics=[diagnostic],
                                            only=[types.CodeActionKind.QuickFix])))
        resolved = await client.code_action_resolve_async(actions[0])
        return diagnostic, actions, resolved

    diagnostic, actions, resolved = run(scenario, memorized.bundle, tmp_path, {"debounceMs": 10})
    assert diagnostic.range.start.line in (target, target + 1)
    assert [a.kind for a in actions] == [types.CodeActionKind.QuickFix]
    assert resolved.edit is not None, "the model proposes no verified fix"
    fixed = apply_text_edits(broken, resolved.edit.changes[URI])
    assert fixed == original


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)

    def offset(p: types.Position) -> int:
        line_start = starts[p.line]
        units, column = 0, 0
        line = text[line_start:].split("\n", 1)[0]
        for ch in line:
            if units >= p.character:
                break
            units += 2 if ord(ch) > 0xFFFF else 1
            column += 1
        return line_start + column

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


def test_a_result_for_an_outdated_version_is_dropped(memorized, exact_cases, tmp_path):
    prefix, suffix, want = exact_cases[0]
    text = prefix + "\n" + suffix

    async def scenario(client):
        client.open(URI, text)
        at = lsp_position(text, len(prefix))
        # Deterministic, however loaded the machine: the job pauses inside the engine until
        # the document changes (test hook), so the change always lands while it runs.
        assert await client.command("seedLsp.test.injectFault", "pause", 1) == {"pauses": 1}
        request = asyncio.ensure_future(client.inline(URI, at.line, at.character))
        await client.wait_log("a model job is paused")  # version 1 is being completed
        end = lsp_position(text, len(text))
        client.change(URI, 2, [types.TextDocumentContentChangePartial(
            range=types.Range(start=end, end=end), text="# edited\n")])
        stale = await request
        fresh = await client.inline(URI, at.line, at.character)
        return stale, fresh

    stale, fresh = run(scenario, memorized.bundle, tmp_path, env={"SEED_LSP_TEST_HOOKS": "1"})
    assert not stale.items, "a completion computed for version 1 must not be shown at version 2"
    assert fresh.items, "the current version gets its completion"


def test_cancelling_mid_denoise_keeps_the_server_serving(memorized, exact_cases, tmp_path):
    prefix, suffix, want = exact_cases[0]
    text = prefix + "\n" + suffix

    async def scenario(client):
        client.open(URI, text)
        at = lsp_position(text, len(prefix))
        for delay in (0.0, 0.01, 0.05):
            request = asyncio.ensure_future(client.inline(URI, at.line, at.character))
            await asyncio.sleep(delay)
            request.cancel()
            try:
                await request
            except asyncio.CancelledError:
                pass
        await client.command("seedLsp.clearCache")
        return await client.inline(URI, at.line, at.character)

    after = run(scenario, memorized.bundle, tmp_path)
    assert after.items and after.items[0].insert_text == want
