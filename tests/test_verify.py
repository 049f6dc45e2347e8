"""Tests of draft-and-verify decoding (DecodeConfig.verify) in engine/decode.py.

Verify rows commit only what the AR head agrees with, so their text must equal the
B=1 baseline's token for token, whatever the drafts were: that is checked on a real
(random) network, through a cache-free recomputation, and against a model that copies
earlier text (where prompt-lookup drafts are right and must save forward passes).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.decode import DRAFTS, DecodeCancelled, DecodeConfig, decode, lookup_draft
from tests.test_decode import (BOS, CONTEXT, DECOY, EOS, FIM_PREFIX, IDS, MASK, RecomputeModel, TinyTransformer,
                               check_call_shapes, peaked_logits)


def verify_config(**kw) -> DecodeConfig:
    return DecodeConfig(**{"verify": True, "block_size": 4, "max_tokens": 19, "mode": "block", **kw})


def baseline(network, context, config: DecodeConfig):
    """The B=1 decode of the same job: what verify must reproduce."""
    ar = DecodeConfig(block_size=1, max_tokens=config.max_tokens, mode=config.mode)
    return decode(network, context, ar, **IDS)


class CopyModel:
    """An induction-head step function: after token x it predicts what followed the latest
    earlier x (else x + 1 among the plain words). Mask rows predict DECOY, so only lookup
    drafts can be right. Recomputes from the clean history like RecomputeModel, so it
    also proves the cache keeps only accepted tokens."""

    WORDS = [7, 8, 9, 12, 13, 15]

    def __init__(self):
        self.clean_at: dict[int, int] = {}
        self.calls = 0

    def next_after(self, history: list[int]) -> int:
        last = history[-1]
        for i in range(len(history) - 2, -1, -1):
            if history[i] == last:
                return history[i + 1]
        words = self.WORDS
        return words[(words.index(last) + 1) % len(words)] if last in words else words[0]

    def __call__(self, input_ids, position_ids, attention_mask, past):
        q, past_len, width = check_call_shapes(input_ids, position_ids, attention_mask, past)
        self.calls += 1
        history = [self.clean_at[p] for p in range(past_len)]
        logits = np.empty((1, q, 16), dtype=np.float32)
        for row, (token, position) in enumerate(zip(input_ids[0], position_ids[0])):
            if token == MASK:
                logits[0, row] = peaked_logits(DECOY, 0.9)
                continue
            self.clean_at[int(position)] = int(token)
            history.append(int(token))
            logits[0, row] = peaked_logits(self.next_after(history), 0.9)
        kv = [(np.zeros((1, 2, q, 4), np.float32), np.zeros((1, 2, q, 4), np.float32)) for _ in range(2)]
        return logits, kv


# --- prompt lookup --------------------------------------------------------------------------


def test_lookup_prefers_the_longest_match_and_the_latest_occurrence():
    history = np.array([1, 2, 3, 9, 2, 3, 4, 5, 7, 1, 2, 3])
    # "1 2 3" occurred once before, followed by 9 2 3 4: the 3-gram wins over later "2 3".
    assert lookup_draft(history, 4) == [9, 2, 3, 4]
    assert lookup_draft(np.array([5, 6, 1, 5, 7, 5]), 2) == [7, 5], "the latest earlier 5"
    assert lookup_draft(np.array([1, 2, 3]), 4) == [], "nothing repeats"
    assert lookup_draft(np.array([4]), 4) == []
    assert lookup_draft(np.array([1, 2, 1]), 8) == [2, 1], "the draft stops at the history's end"


def test_lookup_needs_a_match_of_at_least_min_ngram_tokens():
    history = np.array([5, 1, 9, 9, 2, 6, 1])  # only the last token (1) occurred before
    assert lookup_draft(history, 3) == [9, 9, 2]
    assert lookup_draft(history, 3, min_ngram=2) == []
    longer = np.array([4, 1, 9, 9, 2, 4, 1])  # "4 1" occurred before
    assert lookup_draft(longer, 3, min_ngram=2) == [9, 9, 2]
    assert lookup_draft(longer, 3, min_ngram=3) == []


class RowCountingModel(CopyModel):
    """CopyModel that records how many input rows each step fed."""

    def __init__(self):
        super().__init__()
        self.rows: list[int] = []

    def __call__(self, input_ids, position_ids, attention_mask, past):
        self.rows.append(int(input_ids.shape[1]))
        return super().__call__(input_ids, position_ids, attention_mask, past)


@pytest.mark.parametrize("min_match, single_row_steps", [(1, False), (2, True)])
def test_lookup_without_a_long_enough_match_runs_one_row_steps(min_match, single_row_steps):
    # Every token of this context occurs once. The copy model writes 7 (nothing followed 15
    # before), and "15 7" never occurred: the step after it has a 1-token match only (7 -> 8).
    context = [BOS, FIM_PREFIX, 7, 8, 9, 12, 13, 15]
    config = verify_config(block_size=4, draft="lookup", min_match=min_match, max_tokens=2)
    model = RowCountingModel()
    result = decode(model, context, config, **IDS)
    assert result.tokens == baseline(CopyModel(), context, config).tokens
    steps = model.rows[1:]  # after the prefill
    assert (max(steps) == 1) == single_row_steps, steps


# --- exactness ------------------------------------------------------------------------------


@pytest.mark.parametrize("draft", DRAFTS)
@pytest.mark.parametrize("block_size", [2, 3, 4, 8])
@pytest.mark.parametrize("mode, max_tokens", [("block", 19), ("block", 5), ("line", 24)])
def test_verify_writes_exactly_the_autoregressive_text(draft, block_size, mode, max_tokens):
    config = verify_config(block_size=block_size, draft=draft, mode=mode, max_tokens=max_tokens)
    expected = baseline(TinyTransformer(seed=1), CONTEXT, config)
    cached = decode(TinyTransformer(seed=1), CONTEXT, config, **IDS)
    recomputed = decode(RecomputeModel(TinyTransformer(seed=1)), CONTEXT, config, **IDS)
    assert cached.tokens == recomputed.tokens == expected.tokens
    assert cached.stop_reason == expected.stop_reason
    assert np.allclose(cached.confidences, expected.confidences, atol=1e-6)
    assert cached.forward_passes <= expected.forward_passes
    assert cached.steps_per_block == []


@pytest.mark.parametrize("draft", ["lookup", "both"])
def test_right_lookup_drafts_save_forward_passes(draft):
    context = [BOS, FIM_PREFIX, 7, 8, 9, 12, 13, 8, 9, 12, 6]
    config = verify_config(block_size=6, draft=draft, max_tokens=30)
    expected = baseline(CopyModel(), context, config)
    model = CopyModel()
    result = decode(model, context, config, **IDS)
    assert result.tokens == expected.tokens and len(result.tokens) == 30
    assert expected.forward_passes == 29
    # The copy loop repeats: after the first steps every 6-token draft is right (7 per pass).
    assert result.forward_passes <= 8
    assert model.calls == result.forward_passes + 1


def test_wrong_diffusion_drafts_cost_passes_not_text():
    config = verify_config(block_size=4, draft="diffusion", max_tokens=12)
    context = [BOS, FIM_PREFIX, 7, 8, 9, 6]
    expected = baseline(CopyModel(), context, config)
    result = decode(CopyModel(), context, config, **IDS)
    assert result.tokens == expected.tokens
    assert result.forward_passes == expected.forward_passes, "every DECOY draft is rejected: one token per pass"


def test_verify_stops_at_eos_and_newline_inside_an_accepted_draft():
    # The context repeats "7 8 <newline> 9 <eos>": lookup drafts run through the stop tokens.
    context = [BOS, FIM_PREFIX, 7, 8, 10, 9, EOS, 7]
    for mode, stop, tokens in (("line", "newline", [8, 10]), ("block", "eos", [8, 10, 9])):
        config = verify_config(block_size=6, draft="lookup", mode=mode, max_tokens=20)
        result = decode(CopyModel(), context, config, **IDS)
        assert (result.tokens, result.stop_reason) == (tokens, stop)
        assert result.tokens == baseline(CopyModel(), context, config).tokens


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 7])
def test_max_tokens_is_exact_with_long_right_drafts(max_tokens):
    context = [BOS, FIM_PREFIX, 7, 8, 9, 12, 13, 7]
    config = verify_config(block_size=8, draft="lookup", max_tokens=max_tokens)
    result = decode(CopyModel(), context, config, **IDS)
    assert len(result.tokens) == max_tokens == len(result.confidences)
    assert result.stop_reason == "max_tokens"
    assert result.tokens == baseline(CopyModel(), context, config).tokens


def test_cancellation_stops_a_verify_decode_between_steps():
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    network = TinyTransformer(seed=1)
    with pytest.raises(DecodeCancelled):
        decode(network, CONTEXT, verify_config(max_tokens=40), should_cancel=should_cancel, **IDS)
    assert network.calls == 3, "the prefill and two steps ran; the third step never started"


@pytest.mark.parametrize("bad", [dict(verify=True, temperature=0.5), dict(draft="ngram"), dict(min_match=0),
                                 dict(min_match=4), dict(min_match=1.5)])
def test_invalid_verify_config_raises(bad):
    with pytest.raises(ValueError):
        DecodeConfig(**bad)


def test_block_size_one_with_verify_is_plain_autoregressive():
    result = decode(TinyTransformer(seed=1), CONTEXT, verify_config(block_size=1), **IDS)
    expected = baseline(TinyTransformer(seed=1), CONTEXT, verify_config())
    assert result.tokens == expected.tokens and result.forward_passes == expected.forward_passes
