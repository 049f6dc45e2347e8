"""The whole training path learns, end to end, on the session's memorized model.

tests/conftest.py trains it once per session (tests/memorized.py: three files of
this repository, the project's trainer, diffusion stage with FIM) and exports an
fp32 + int8 bundle. Here the real engine (onnxruntime) completes lines of those
files from their real prefix and suffix, exactly, in block-diffusion (B=8) and
autoregressive (B=1) mode, and writes function bodies in block mode; the torch
checkpoint does the same through the decode loop, before any export.

Cursors sit at token boundaries (the start of an unindented line, right after
"(", "=", ","). A cursor after indentation or after a space ends the prefix
inside a token (" self" is one token), which needs token healing the engine does
not do yet: test_cursor_inside_a_token_needs_healing records that gap.

Rates are asserted, not single lines, below what was measured: the thresholds
sit under the worst of five training seeds (a seed moves the rates at least as
much as a float reduction that differs on another machine would).
"""

from __future__ import annotations

import pytest

from engine.decode import DecodeConfig
from engine.engine import Engine
from engine.jobs import build_context
from memorized import complete_all, exact_rate, torch_threads
from model import checkpoint as ckpt
from model.sample import infill

# Measured over five training seeds (0, the committed one, first; int8 within 2 lines of fp32).
# Exact lines at token boundaries, of 63: B=8 70 / 63 / 60 / 52 / 48 %, B=1 90 / 90 / 87 / 94 / 83 %.
MIN_LINE_RATE = {8: 0.4, 1: 0.7}
# Torch decode, the first file's 23 lines: B=4 16 / 19 / 17 / 14 / 15, B=1 22 / 21 / 21 / 22 / 21.
MIN_TORCH_LINE_RATE = {4: 0.45, 1: 0.75}
# Forward passes per committed token over the exact diffusion (B=4) lines: 0.61 to 0.69.
MAX_PASSES_PER_TOKEN = 0.85
BLOCK_LINES = 3  # a block completion must reproduce at least this many lines of the body
# Bodies whose first BLOCK_LINES lines come back exactly, of 12: 9 / 8 / 9 / 7 / 8 (fp32 and int8 alike).
MIN_BLOCK_RATE = 0.4


def line_config(block_size: int) -> DecodeConfig:
    return DecodeConfig(block_size=block_size, tau=0.9, max_tokens=32, mode="line")


@pytest.fixture(scope="module")
def engines(memorized) -> dict[str, Engine]:
    return {v: Engine.from_bundle(memorized.bundle, device="cpu", variant=v, threads=1) for v in ("fp32", "int8")}


def all_line_cases(memorized, at_boundary: bool = True) -> list[tuple[str, str, str]]:
    return [case for name in memorized.files for case in memorized.line_cases(name, at_boundary)]


def misses(cases, got, limit: int = 8) -> str:
    wrong = [f"{want!r} -> {text!r}" for (_, _, want), text in zip(cases, got) if text != want]
    return "; ".join(wrong[:limit])


def test_line_cases_are_cursors_in_the_memorized_text(memorized):
    for name, text in memorized.files.items():
        assert memorized.line_cases(name) and memorized.line_cases(name, at_boundary=False)
        for prefix, suffix, rest in memorized.line_cases(name, at_boundary=None):
            assert prefix + rest + "\n" + suffix == text and rest.strip() and "\n" not in rest


@pytest.mark.parametrize("block_size", [8, 1])
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_engine_completes_memorized_lines(memorized, engines, variant, block_size):
    cases = all_line_cases(memorized)
    got = complete_all(engines[variant], cases, line_config(block_size))
    rate = exact_rate(got, cases)
    print(f"engine {variant} B={block_size}: {rate:.1%} of {len(cases)} lines exact")  # shown with -s / -rA
    assert rate >= MIN_LINE_RATE[block_size], f"{variant} B={block_size}: {rate:.0%} exact; misses: {misses(cases, got)}"


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_block_mode_writes_function_bodies(memorized, engines, variant):
    # Cursor at the end of `def ...:`; the expected block is the newline and the body.
    cases = [case for name in memorized.files for case in memorized.block_cases(name, at_body=False)]
    config = DecodeConfig(block_size=8, tau=0.9, max_tokens=64, mode="block")
    got = complete_all(engines[variant], cases, config)
    head = lambda text: text.split("\n")[: BLOCK_LINES + 1]  # noqa: E731 (element 0: the rest of the def line)
    good = [head(text) == head(want) for (_, _, want), text in zip(cases, got)]
    print(f"block {variant}: {sum(good)}/{len(cases)} bodies start right")
    assert sum(good) / len(cases) >= MIN_BLOCK_RATE, f"{variant}: {sum(good)}/{len(cases)} bodies; got {got[:3]}"


@pytest.mark.parametrize("block_size", [4, 1])
def test_torch_decode_reproduces_memorized_lines(memorized, engines, block_size):
    """Before export: the trained checkpoint, through the decode loop (model.sample.infill)."""
    model = ckpt.load_model(memorized.checkpoint)
    budget = engines["fp32"].budget  # the engine's window: the positions the model was trained on
    cases = memorized.line_cases(next(iter(memorized.files)))
    exact = passes = tokens = 0
    for prefix, suffix, want in cases:
        window = build_context(memorized.codec, prefix, suffix, budget)
        with torch_threads(1):  # many tiny steps: a second thread only waits (30 s instead of 2 s on a busy machine)
            got, result = infill(model, memorized.codec, prefix[window.prefix_start:], suffix[: window.suffix_end],
                                 mode="line", block_size=block_size, tau=0.9, max_tokens=32)
        if got == want:
            exact += 1
            assert result.stop_reason == "newline"
            passes, tokens = passes + result.forward_passes, tokens + len(result.tokens)
    print(f"torch B={block_size}: {exact}/{len(cases)} lines exact, {passes} passes for {tokens} tokens")
    assert exact / len(cases) >= MIN_TORCH_LINE_RATE[block_size], f"B={block_size}: {exact}/{len(cases)} exact"
    if block_size > 1:  # a short line can take an extra pass; over all lines, diffusion must save some
        assert passes <= MAX_PASSES_PER_TOKEN * tokens, f"B={block_size}: {passes} passes for {tokens} tokens"


@pytest.mark.xfail(reason="token healing: a prefix ending inside a token (after indentation or a space)", strict=False)
def test_cursor_inside_a_token_needs_healing(memorized, engines):
    # Measured 0 of 68 (B=1 and B=8): the model never learned these cuts. Passes once the engine heals them.
    cases = all_line_cases(memorized, at_boundary=False)
    got = complete_all(engines["fp32"], cases, line_config(1))
    print(f"inside a token: {exact_rate(got, cases):.1%} of {len(cases)} lines exact")
    assert exact_rate(got, cases) >= 0.5, misses(cases, got)
