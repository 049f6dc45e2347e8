"""Tests of the engine around the decode loop: prefix cache, batching, candidates,
cancellation, deadlines, context windows and block stop rules.

The model is the real network with tiny random weights behind TorchStep, and the
real tokenizer; the text is real code from the standard library.
"""

from __future__ import annotations

import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.decode import DecodeCancelled, DecodeConfig, Row, decode, decode_rows, prefill
from engine.engine import Engine, Job
from engine.jobs import Budget, block_floor, build_context, cut_block, window_prefix, window_suffix
from engine.prefix_cache import PrefixCache
from engine.tokenizer import TextCodec
from model.network import DiffusionLM, ModelConfig
from model.step import TorchStep

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text()
CURSOR = SOURCE.index("def raw_decode") + 200


@pytest.fixture(scope="module")
def codec() -> TextCodec:
    return TextCodec.from_file(ROOT / "model" / "tokenizer.json")


@pytest.fixture(scope="module")
def step(codec) -> TorchStep:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=codec.vocab_size, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_hidden=96)
    return TorchStep(DiffusionLM(cfg).eval())


class CountingStep:
    """Wraps a step function and counts its calls."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, *args):
        self.calls += 1
        return self.step(*args)


def engine(step, codec, **kw) -> Engine:
    return Engine(step, codec, budget=Budget(256, 96), **kw)


BLOCK = DecodeConfig(block_size=4, tau=0.5, max_tokens=16, mode="block")
AR = DecodeConfig(block_size=1, max_tokens=12, mode="block")
VERIFY = DecodeConfig(block_size=4, max_tokens=16, mode="block", verify=True)


# --- prefix cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", [BLOCK, AR, VERIFY])
def test_typing_reuses_the_cache_and_gives_the_cold_completion(step, codec, config):
    warm = engine(step, codec)
    suffix = SOURCE[CURSOR:]
    warm.complete(Job(SOURCE[:CURSOR], suffix, config, doc_id="doc"))
    for typed in ("x", "x =", "x = self"):
        job = Job(SOURCE[:CURSOR] + typed, suffix, config, doc_id="doc")
        hot = warm.complete(job)[0]
        cold = engine(step, codec).complete(job)[0]
        assert hot.completions[0].tokens == cold.completions[0].tokens
        assert cold.stats.cached_tokens == 0
        assert hot.stats.cached_tokens > 0.9 * hot.stats.context_tokens
        assert hot.stats.prefill_tokens == hot.stats.context_tokens - hot.stats.cached_tokens <= 4


def test_prefill_forwards_only_the_tokens_after_the_common_prefix(step, codec):
    ids = build_context(codec, SOURCE[:CURSOR], SOURCE[CURSOR:], Budget(200, 50)).ids
    first = prefill(step, ids, mask_id=codec.mask)
    longer = ids[:-1] + codec.encode(" = 1") + ids[-1:]
    counting = CountingStep(step)
    second = prefill(counting, longer, mask_id=codec.mask, reuse=first)
    assert second.cached_tokens == len(ids) - 1 and second.prefill_tokens == len(longer) - len(ids) + 1
    fresh = prefill(step, longer, mask_id=codec.mask)
    np.testing.assert_allclose(second.last_logits, fresh.last_logits, atol=1e-4)
    assert counting.calls == 1


def test_identical_context_still_forwards_its_last_token(step, codec):
    ids = build_context(codec, SOURCE[:CURSOR], "", Budget(100, 10)).ids
    first = prefill(step, ids, mask_id=codec.mask)
    again = prefill(step, ids, mask_id=codec.mask, reuse=first)
    assert again.prefill_tokens == 1 and again.cached_tokens == len(ids) - 1


def test_prefix_cache_is_bounded_and_least_recently_used_goes_first(step, codec):
    prefixes = [prefill(step, build_context(codec, SOURCE[: CURSOR + i], "", Budget(64, 8)).ids,
                        mask_id=codec.mask) for i in range(4)]
    size = prefixes[0].nbytes
    cache = PrefixCache(max_bytes=int(size * 2.5))
    for i, p in enumerate(prefixes[:3]):
        cache.put(f"d{i}", p)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert cache.take("d0") is None, "the oldest entry was evicted"
    assert cache.take("d2") is prefixes[2] and cache.take("d2") is None, "take removes"
    tiny = PrefixCache(max_bytes=size - 1)
    tiny.put("x", prefixes[0])
    assert len(tiny) == 0, "an entry larger than the limit is not stored"


# --- batching and candidates ----------------------------------------------------------------


@pytest.mark.parametrize("config", [BLOCK, AR, VERIFY, DecodeConfig(block_size=8, tau=0.9, max_tokens=20, mode="line")])
def test_a_batch_of_jobs_equals_the_jobs_one_by_one(step, codec, config):
    eng = engine(step, codec)
    cursors = (CURSOR, CURSOR + 700, CURSOR + 1500, 300)
    jobs = [Job(SOURCE[:c], SOURCE[c:], config) for c in cursors]
    batched = eng.complete(jobs)
    for job, together in zip(jobs, batched):
        alone = eng.complete(job)[0]
        assert together.completions[0].tokens == alone.completions[0].tokens
        assert together.completions[0].stop_reason == alone.completions[0].stop_reason


def test_rows_with_different_configs_share_a_batch(step, codec):
    contexts = [build_context(codec, SOURCE[:c], SOURCE[c:], Budget(128, 32)).ids for c in (CURSOR, 900, 2000)]
    configs = [BLOCK, AR, VERIFY]
    kw = dict(mask_id=codec.mask, eos_id=codec.eos, banned_ids=codec.banned_ids)
    rows = [Row(prefill(step, ids, mask_id=codec.mask), cfg) for ids, cfg in zip(contexts, configs)]
    together = decode_rows(step, rows, **kw)
    for ids, cfg, result in zip(contexts, configs, together):
        assert result.tokens == decode(step, ids, cfg, **kw).tokens


def test_candidates_differ_in_their_first_token_and_the_first_is_the_greedy_one(step, codec):
    eng = engine(step, codec)
    job = Job(SOURCE[:CURSOR], SOURCE[CURSOR:], BLOCK)
    single = eng.complete(job)[0].completions[0]
    many = eng.complete(Job(job.prefix, job.suffix, BLOCK, n=3))[0]
    assert len(many.completions) == 3
    assert many.completions[0].tokens == single.tokens
    assert len({c.tokens[0] for c in many.completions}) == 3
    assert many.stats.tokens == sum(len(c.tokens) for c in many.completions)


def test_sampled_candidates_follow_the_seed(step, codec):
    cfg = DecodeConfig(block_size=4, tau=0.5, max_tokens=12, mode="block", temperature=1.0)
    job = Job(SOURCE[:CURSOR], SOURCE[CURSOR:], cfg, n=2, seed=5)
    a = engine(step, codec).complete(job)[0].completions
    b = engine(step, codec).complete(job)[0].completions
    assert [c.tokens for c in a] == [c.tokens for c in b]


# --- cancellation and deadlines -------------------------------------------------------------


@pytest.mark.parametrize("allowed_calls", [0, 1, 4])
def test_cancellation_stops_before_the_next_model_call(step, codec, allowed_calls):
    counting = CountingStep(step)
    eng = engine(counting, codec)
    with pytest.raises(DecodeCancelled):
        eng.complete(Job(SOURCE[:CURSOR], SOURCE[CURSOR:], BLOCK, n=2),
                     should_cancel=lambda: counting.calls >= allowed_calls)
    assert counting.calls == allowed_calls


def test_a_passed_deadline_returns_what_is_finished(step, codec):
    eng = engine(step, codec)
    result = eng.complete(Job(SOURCE[:CURSOR], SOURCE[CURSOR:], BLOCK), deadline=time.monotonic() - 1)[0]
    completion = result.completions[0]
    assert completion.stop_reason == "deadline"
    assert result.stats.forward_passes == 0
    # The anchor token of the first block came with the prefill, but the block is unfinished.
    assert completion.tokens == []


def test_the_cache_survives_a_cancelled_job(step, codec):
    eng = engine(step, codec)
    job = Job(SOURCE[:CURSOR], SOURCE[CURSOR:], BLOCK, doc_id="d")
    calls = CountingStep(step)
    eng.step = calls
    with pytest.raises(DecodeCancelled):
        eng.complete(job, should_cancel=lambda: calls.calls >= 1)
    again = eng.complete(job)[0]
    assert again.stats.cached_tokens == again.stats.context_tokens - 1
    assert again.completions[0].tokens == engine(step, codec).complete(job)[0].completions[0].tokens


# --- context windows ------------------------------------------------------------------------


def test_window_start_stays_put_while_typing(codec):
    starts, sizes = set(), []
    for typed in range(0, 60, 3):
        prefix = SOURCE[:CURSOR] + "value = compute(x, y)"[: typed % 22] + "\n" * (typed // 22)
        start, ids = window_prefix(codec, prefix, budget=200)
        starts.add(start)
        sizes.append(len(ids))
        assert len(ids) <= 200
        assert codec.decode(ids) == prefix[start:]
        assert start == 0 or prefix[start - 1] == "\n", "windows start at a line"
    assert len(starts) == 1
    assert min(sizes) > 100, "the window uses most of its budget"


def test_window_of_a_short_file_is_the_whole_file(codec):
    start, ids = window_prefix(codec, "import os\nx = ", budget=100)
    assert start == 0 and codec.decode(ids) == "import os\nx = "


def test_window_falls_back_to_a_token_cut_for_one_giant_line(codec):
    prefix = "x = [" + ", ".join(str(i) for i in range(3000))
    start, ids = window_prefix(codec, prefix, budget=50)
    assert len(ids) <= 50 and prefix[start:] == codec.decode(ids)


def test_suffix_window_keeps_the_start_and_ends_on_a_line(codec):
    end, ids = window_suffix(codec, SOURCE[CURSOR:], budget=60)
    text = codec.decode(ids)
    assert SOURCE[CURSOR:].startswith(text) and len(text) == end
    assert text.endswith("\n") and len(ids) <= 60
    assert window_suffix(codec, "", 60) == (0, [])
    assert window_suffix(codec, "abc", 0) == (0, [])


def test_context_layout_and_budget(codec):
    ctx = build_context(codec, SOURCE[:CURSOR], SOURCE[CURSOR:], Budget(150, 40))
    assert ctx.ids[:2] == [codec.bos, codec.fim_suffix] and ctx.ids[-1] == codec.fim_middle
    assert ctx.ids.count(codec.fim_prefix) == 1
    assert ctx.prefix_tokens <= 150 and ctx.suffix_tokens <= 40
    assert len(ctx.ids) == ctx.prefix_tokens + ctx.suffix_tokens + 4


# --- block stop rules -----------------------------------------------------------------------


@pytest.mark.parametrize("prefix,floor", [
    ("def f():", 1),                  # the body must go deeper than the def
    ("def f():\n    ", 4),            # typed indentation is the floor
    ("def f():\n", 1),                # empty line after a colon: deeper than the def
    ("    x = 1\n", 4),               # empty line inside a body: the body's level
    ("    x = compute(", 4),          # mid-line: the line's level
    ("", 0),
])
def test_block_floor(prefix, floor):
    assert block_floor(prefix) == floor


def test_cut_block_stops_at_the_first_dedented_line():
    text = " = 3\n    y = 4\n\nz = 5\n    w = 6"
    assert cut_block(text, 4) == (" = 3\n    y = 4", True)
    assert cut_block(" = 3\n    y = 4\n", 4) == (" = 3\n    y = 4\n", False)
    # A line still being written (only indentation so far) is not judged yet.
    assert cut_block(" = 3\n  ", 4) == (" = 3\n  ", False)


def test_block_mode_completion_never_leaves_the_block(step, codec):
    eng = engine(step, codec)
    prefix = "def f(x):\n    "
    result = eng.complete(Job(prefix, "", DecodeConfig(block_size=4, tau=0.5, max_tokens=32, mode="block")))[0]
    text = result.completions[0].text
    for line in text.split("\n")[1:]:
        assert not line.strip() or line.startswith("    ")


def test_infill_mode_ignores_newlines_and_dedents(step, codec):
    eng = engine(step, codec)
    cfg = DecodeConfig(block_size=4, tau=0.5, max_tokens=24, mode="infill")
    result = eng.complete(Job("def f(x):\n    ", "\n\nprint(f(1))\n", cfg))[0]
    completion = result.completions[0]
    assert completion.stop_reason in ("eos", "max_tokens")
    assert completion.healed + completion.text == codec.decode(completion.tokens)


@pytest.mark.parametrize("block_size", [1, 4])
def test_stop_at_ends_a_candidate_once_its_text_holds_the_stop_text(step, codec, block_size):
    eng = engine(step, codec)
    cfg = DecodeConfig(block_size=block_size, tau=0.5, max_tokens=24, mode="infill")
    prefix, suffix = SOURCE[:CURSOR], SOURCE[CURSOR:]
    free = eng.complete(Job(prefix, suffix, cfg))[0].completions[0]
    assert free.stop_reason == "max_tokens" and len(free.text) > 12, "the random model should run to the cap"
    # Stop at a piece of what it writes anyway (greedy: the same text up to there).
    stop_at = free.text[6:10]
    stopped = eng.complete(Job(prefix, suffix, cfg, stop_at=stop_at))[0].completions[0]
    assert stopped.stop_reason == "callback" and stop_at in stopped.text
    assert free.text.startswith(stopped.text) and len(stopped.tokens) < len(free.tokens)
    # Without the stop text in what it writes, nothing changes.
    unseen = eng.complete(Job(prefix, suffix, cfg, stop_at="\x00never"))[0].completions[0]
    assert unseen.text == free.text and unseen.stop_reason == "max_tokens"


@pytest.mark.parametrize("draft", ["lookup", "diffusion", "both"])
def test_verify_candidates_equal_autoregressive_candidates_on_real_code(step, codec, draft):
    """Verify's text is B=1's for every candidate (first-token ranks, healing, block stop rule)."""
    eng = engine(step, codec)
    for cursor in (CURSOR, CURSOR + 700, 1500):
        verify = Job(SOURCE[:cursor], SOURCE[cursor:], DecodeConfig(block_size=4, max_tokens=16, mode="block",
                                                                   verify=True, draft=draft), n=2)
        ar = Job(verify.prefix, verify.suffix, DecodeConfig(block_size=1, max_tokens=16, mode="block"), n=2)
        got, want = eng.complete(verify)[0], eng.complete(ar)[0]
        assert [c.text for c in got.completions] == [c.text for c in want.completions]
        assert [c.tokens for c in got.completions] == [c.tokens for c in want.completions]
        assert got.stats.forward_passes <= want.stats.forward_passes
