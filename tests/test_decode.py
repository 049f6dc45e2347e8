"""Tests of engine/decode.py against fake numpy step functions (no torch, fast).

Two fakes implement the step contract:
- OracleModel knows the target continuation and puts a chosen probability on it at
  every position, so commit schedules and stop rules can be checked exactly; it
  also asserts the contract on every call (shapes, dtypes, attention-mask rules,
  and that the cache holds exactly the committed clean tokens).
- TinyTransformer is a real two-layer attention network with random weights:
  rows see each other only through the mask and the past. RecomputeModel wraps it,
  ignores the past and recomputes from the full token history; decoding with the
  cache must give the same tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decode import (
    DecodeCancelled,
    DecodeConfig,
    build_attention_mask,
    choose_tokens,
    decode,
)

VOCAB = 16
PAD, MASK, BOS, EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = range(7)  # contract order
NL_A, NL_B = 10, 11  # tokens whose text contains "\n"
NEWLINES = np.zeros(VOCAB, dtype=np.bool_)
NEWLINES[[NL_A, NL_B]] = True
WORDS = [7, 8, 9, 12, 13, 14, 15]  # plain tokens
DECOY = 14  # what a head predicts when a test wants to prove that head is not used
CONTEXT = [BOS, FIM_SUFFIX, 7, 8, FIM_PREFIX, 9, 12, FIM_MIDDLE]
LONG_TARGET = [7, 8, 9, 12, 13, 15, 7, 9, 8, 12, 15, 13, 7, 8, 9, 12, 13, 15, 9, 8]
LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 4

IDS = dict(mask_id=MASK, eos_id=EOS, newline_tokens=NEWLINES)


def check_call_shapes(input_ids, position_ids, attention_mask, past) -> tuple[int, int]:
    """Assert the step contract's shapes and dtypes; return (q, past_len)."""
    assert input_ids.dtype == np.int64 and input_ids.ndim == 2 and input_ids.shape[0] == 1
    q = input_ids.shape[1]
    assert q >= 1
    assert position_ids.dtype == np.int64 and position_ids.shape == (1, q)
    assert isinstance(past, list) and len(past) in (0, LAYERS)
    past_len = past[0][0].shape[2] if past else 0
    for key, value in past:
        assert key.shape == value.shape == (1, KV_HEADS, past_len, HEAD_DIM)
    assert attention_mask.dtype == np.bool_
    assert attention_mask.shape == (1, 1, q, past_len + q)
    assert (position_ids[0] == past_len + np.arange(q)).all(), "positions continue the cache"
    assert attention_mask[..., :past_len].all(), "every row sees the whole cache"
    return q, past_len


def check_mask_rules(attention_mask, past_len: int, n_clean: int) -> None:
    """Clean rows causal and blind to the block; block rows see all inputs (bidirectional)."""
    inputs = attention_mask[0, 0, :, past_len:]
    clean_rows, block_rows = inputs[:n_clean], inputs[n_clean:]
    assert (clean_rows[:, :n_clean] == np.tri(n_clean, dtype=np.bool_)).all(), "clean rows causal"
    assert not clean_rows[:, n_clean:].any(), "clean rows never see the noisy block"
    assert block_rows.all(), "block rows see every clean row and the whole block"


def peaked_logits(token: int, prob: float) -> np.ndarray:
    """Logits whose softmax puts exactly `prob` on token (mask token impossible)."""
    assert 1.0 / (VOCAB - 1) < prob < 1.0, "token must be the argmax"
    row = np.full(VOCAB, np.log((1.0 - prob) / (VOCAB - 2)), dtype=np.float64)
    row[token] = np.log(prob)
    row[MASK] = -np.inf
    return row.astype(np.float32)


class OracleModel:
    """Step function that favours a known target continuation and checks every call.

    Mask rows at generated offset j predict target[j] with probability confidence(j);
    clean rows at offset j predict target[j + 1] (or DECOY when clean_head="decoy").
    Past the end of the target it predicts eos. Context rows (negative offsets)
    predict eos with probability 0.5: nothing reads them.
    """

    def __init__(self, target, block_size, confidence=lambda offset: 0.95, clean_head="target",
                 mask_head="target"):
        self.target = list(target)
        self.block_size = block_size
        self.confidence = confidence
        self.clean_head = clean_head
        self.mask_head = mask_head
        self.calls: list[dict] = []  # per call: q, past_len, n_clean, n_block, input ids
        self.history: list[int] = []  # clean tokens sent so far = what the cache must hold
        self.n_context = None
        self.block_positions = None
        self.block_ids = None

    def target_at(self, offset: int) -> int:
        return self.target[offset] if 0 <= offset < len(self.target) else EOS

    def prob_at(self, offset: int) -> float:
        return self.confidence(offset) if offset >= 0 else 0.5

    def __call__(self, input_ids, position_ids, attention_mask, past):
        q, past_len = check_call_shapes(input_ids, position_ids, attention_mask, past)
        ids, positions = input_ids[0], position_ids[0]
        self.check_past(past, past_len)
        n_clean = self.split_rows(ids, positions, past_len)
        check_mask_rules(attention_mask, past_len, n_clean)
        self.history.extend(int(t) for t in ids[:n_clean])
        self.calls.append(dict(q=q, past_len=past_len, n_clean=n_clean, n_block=q - n_clean,
                               ids=ids.tolist()))

        logits = np.empty((1, q, VOCAB), dtype=np.float32)
        for row, (token, position) in enumerate(zip(ids, positions)):
            offset = int(position) - self.n_context
            if token == MASK:  # diffusion head: the token at this position
                predicted = DECOY if self.mask_head == "decoy" else self.target_at(offset)
                logits[0, row] = peaked_logits(predicted, self.prob_at(offset))
            else:  # AR head: the next token
                predicted = DECOY if self.clean_head == "decoy" else self.target_at(offset + 1)
                logits[0, row] = peaked_logits(predicted, self.prob_at(offset + 1))
        return logits, self.kv_for(ids, positions, n_clean)

    def kv_for(self, ids, positions, n_clean):
        """Keys encode (token, position, layer, was-a-clean-row) so the cache can be audited."""
        kv = []
        for layer in range(LAYERS):
            key = np.zeros((1, KV_HEADS, len(ids), HEAD_DIM), dtype=np.float32)
            key[0, :, :, 0] = ids
            key[0, :, :, 1] = positions
            key[0, :, :, 2] = layer
            key[0, :, :n_clean, 3] = 1.0
            kv.append((key, -key))
        return kv

    def check_past(self, past, past_len):
        assert past_len == len(self.history), "cache holds exactly the clean tokens sent so far"
        for layer, (key, value) in enumerate(past):
            assert (key[0, :, :, 0] == np.array(self.history)).all()
            assert (key[0, :, :, 1] == np.arange(past_len)).all()
            assert (key[0, :, :, 2] == layer).all()
            assert (key[0, :, :, 3] == 1.0).all(), "keys of noisy (block) rows are never cached"
            assert (value == -key).all()

    def split_rows(self, ids, positions, past_len) -> int:
        """Work out how many leading rows are clean, asserting the protocol on the way."""
        if past_len == 0:  # prefill: the whole context, causal
            assert self.n_context is None, "only one prefill"
            assert MASK not in ids
            self.n_context = len(ids)
            return len(ids)
        if self.block_size == 1:  # AR: one clean token per call, never a mask
            assert len(ids) == 1 and ids[0] != MASK
            return 1
        if self.block_positions == tuple(positions):  # another step of the same block
            was_masked = np.array(self.block_ids) == MASK
            now_masked = ids == MASK
            assert (now_masked <= was_masked).all() and now_masked.sum() < was_masked.sum(), \
                "every step commits at least one token and never un-commits one"
            assert (ids[~was_masked] == np.array(self.block_ids)[~was_masked]).all()
            self.block_ids = ids.tolist()
            return 0
        # A new block starts all masked, so it is the trailing run of mask tokens.
        n_block = len(ids) - len(np.flatnonzero(ids != MASK))
        n_clean = len(ids) - n_block
        assert (ids[n_clean:] == MASK).all() and 1 <= n_block <= self.block_size
        previous = 0 if self.block_positions is None else len(self.block_positions)
        assert n_clean == previous, "pending = the whole previous block, fused into this step"
        assert self.block_positions is None or \
            tuple(positions[:n_clean]) == self.block_positions
        self.block_positions = tuple(positions[n_clean:])
        self.block_ids = ids[n_clean:].tolist()
        return n_clean


class TinyTransformer:
    """A real step function: two attention layers with random weights over mask + past."""

    def __init__(self, seed=0, scale=3.0, max_positions=128):
        rng = np.random.default_rng(seed)
        d = KV_HEADS * HEAD_DIM
        self.token_embed = rng.normal(size=(VOCAB, d))
        self.position_embed = rng.normal(size=(max_positions, d)) * 0.5
        self.wq, self.wk, self.wv, self.wo = (rng.normal(size=(LAYERS, d, d)) / np.sqrt(d)
                                              for _ in range(4))
        self.ar_head = rng.normal(size=(d, VOCAB)) * scale / np.sqrt(d)
        self.diffusion_head = rng.normal(size=(d, VOCAB)) * scale / np.sqrt(d)
        self.bias = np.zeros(VOCAB)
        self.bias[EOS] = -20.0  # long generations: no early eos
        self.bias[MASK] = -20.0
        self.calls = 0

    def __call__(self, input_ids, position_ids, attention_mask, past):
        q, past_len = check_call_shapes(input_ids, position_ids, attention_mask, past)
        self.calls += 1
        ids = input_ids[0]
        x = self.token_embed[ids] + self.position_embed[position_ids[0]]
        visible = attention_mask[0]  # [1, q, past + q], broadcast over heads
        new_kv = []
        for layer in range(LAYERS):
            heads = lambda w: (x @ w[layer]).reshape(q, KV_HEADS, HEAD_DIM).transpose(1, 0, 2)
            key = heads(self.wk)[None].astype(np.float32)
            value = heads(self.wv)[None].astype(np.float32)
            new_kv.append((key, value))
            keys = np.concatenate([past[layer][0], key], axis=2)[0] if past else key[0]
            values = np.concatenate([past[layer][1], value], axis=2)[0] if past else value[0]
            scores = np.einsum("hqd,hkd->hqk", heads(self.wq), keys) / np.sqrt(HEAD_DIM)
            scores = np.where(visible, scores, -np.inf)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            attended = np.einsum("hqk,hkd->qhd", weights, values).reshape(q, -1)
            x = x + np.tanh(attended @ self.wo[layer])
        logits = np.where((ids == MASK)[:, None], x @ self.diffusion_head, x @ self.ar_head)
        return (logits + self.bias)[None].astype(np.float32), new_kv


class RecomputeModel:
    """Same network, no cache: recomputes every call from the full clean history.

    The history before this call's first position is rebuilt from the clean
    tokens seen in earlier calls, causal among themselves (the exact semantics the
    cache claims to reproduce).
    """

    def __init__(self, network):
        self.network = network
        self.clean_at: dict[int, int] = {}

    def __call__(self, input_ids, position_ids, attention_mask, past):
        q, past_len = check_call_shapes(input_ids, position_ids, attention_mask, past)
        history = [self.clean_at[p] for p in range(past_len)]
        ids = np.array([history + input_ids[0].tolist()], dtype=np.int64)
        positions = np.arange(past_len + q, dtype=np.int64)[None]
        mask = np.zeros((1, 1, past_len + q, past_len + q), dtype=np.bool_)
        mask[0, 0, :past_len, :past_len] = np.tri(past_len, dtype=np.bool_)
        mask[0, 0, past_len:] = attention_mask[0, 0]
        logits, kv = self.network(ids, positions, mask, [])
        for position, token in zip(position_ids[0], input_ids[0]):
            if token != MASK:
                self.clean_at.setdefault(int(position), int(token))
        return logits[:, past_len:], [(k[:, :, past_len:], v[:, :, past_len:]) for k, v in kv]


def run_oracle(target, confidence=lambda offset: 0.95, clean_head="target", mask_head="target",
               **config):
    oracle = OracleModel(target, config.get("block_size", 8), confidence, clean_head, mask_head)
    result = decode(oracle, CONTEXT, DecodeConfig(**config), **IDS)
    return result, oracle


# --- pieces ---------------------------------------------------------------------------------


def test_attention_mask_rules():
    mask = build_attention_mask(past_len=3, n_clean=2, n_block=3)
    assert mask.shape == (1, 1, 5, 8) and mask.dtype == np.bool_
    check_mask_rules(mask, past_len=3, n_clean=2)
    assert mask[0, 0, :, :3].all()
    prefill = build_attention_mask(past_len=0, n_clean=4, n_block=0)
    assert (prefill[0, 0] == np.tri(4, dtype=np.bool_)).all()


def test_choose_tokens_greedy_confidence_is_softmax_probability():
    logits = np.stack([peaked_logits(9, 0.7), peaked_logits(12, 0.3)])
    tokens, confidences = choose_tokens(logits, temperature=0.0, top_k=0, rng=None)
    assert tokens.tolist() == [9, 12]
    assert np.allclose(confidences, [0.7, 0.3])


def test_top_k_sampling_draws_only_top_tokens():
    logits = np.log(np.array([[0.05, 0.5, 0.3, 0.15]]))
    rng = np.random.default_rng(0)
    drawn = set()
    for _ in range(200):
        tokens, confidences = choose_tokens(logits, temperature=1.0, top_k=2, rng=rng)
        drawn.add(int(tokens[0]))
        expected = {1: 0.5 / 0.8, 2: 0.3 / 0.8}[int(tokens[0])]  # renormalised over the top 2
        assert np.isclose(confidences[0], expected)
    assert drawn == {1, 2}


# --- commit schedule ------------------------------------------------------------------------


def test_tau_one_commits_exactly_one_token_per_step():
    result, oracle = run_oracle(LONG_TARGET, block_size=4, tau=1.0, max_tokens=12, mode="block")
    assert result.tokens == LONG_TARGET[:12]
    assert result.forward_passes == len(result.tokens) == 12
    assert result.steps_per_block == [4, 4, 4]
    assert result.stop_reason == "max_tokens"
    assert result.prefill_tokens == len(CONTEXT)
    assert np.allclose(result.confidences, 0.95)


def test_tiny_tau_commits_a_whole_block_per_step_and_fuses_the_clean_block():
    result, oracle = run_oracle(LONG_TARGET, block_size=4, tau=1e-6, max_tokens=12, mode="block")
    assert result.tokens == LONG_TARGET[:12]
    assert result.forward_passes == 3 and result.steps_per_block == [1, 1, 1]
    # The finished block rides along with the next block's first step: no pass of its own.
    assert [(c["n_clean"], c["n_block"]) for c in oracle.calls] == [
        (len(CONTEXT), 0), (0, 4), (4, 4), (4, 4)]


def test_commits_everything_above_tau_and_at_least_the_best():
    probs = {0: 0.95, 1: 0.5, 2: 0.96, 3: 0.4}
    result, oracle = run_oracle(LONG_TARGET, confidence=lambda j: probs.get(j % 4, 0.5),
                                block_size=4, tau=0.9, max_tokens=4, mode="block")
    assert result.tokens == LONG_TARGET[:4]
    assert result.steps_per_block == [3]
    t = LONG_TARGET
    assert [c["ids"] for c in oracle.calls[1:]] == [
        [MASK, MASK, MASK, MASK],
        [t[0], MASK, t[2], MASK],  # 0 and 2 passed tau together
        [t[0], t[1], t[2], MASK],  # none passed: only the most confident (0.5 > 0.4)
    ]
    assert np.allclose(result.confidences, [0.95, 0.5, 0.96, 0.4])


def test_diffusion_mode_reads_the_mask_head():
    result, _ = run_oracle(LONG_TARGET, clean_head="decoy", block_size=4, tau=0.5,
                           max_tokens=8, mode="block")
    assert result.tokens == LONG_TARGET[:8]


def test_block_size_one_is_autoregressive_on_the_clean_head():
    result, oracle = run_oracle(LONG_TARGET, mask_head="decoy", block_size=1, max_tokens=6,
                                mode="block")
    assert result.tokens == LONG_TARGET[:6]
    # Token 1 comes from the prefill; every later token costs one q=1 pass.
    assert result.forward_passes == 5
    assert all(c["q"] == 1 and MASK not in c["ids"] for c in oracle.calls[1:])
    assert [c["ids"][0] for c in oracle.calls[1:]] == LONG_TARGET[:5]


# --- stop rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 4])
def test_eos_stops_and_is_not_returned(block_size):
    target = [7, 8, 9, 12, 13, EOS, 7, 8]
    result, _ = run_oracle(target, block_size=block_size, tau=0.5, max_tokens=20, mode="block")
    assert result.tokens == [7, 8, 9, 12, 13]
    assert result.stop_reason == "eos"
    assert len(result.confidences) == len(result.tokens)
    # AR: five passes after the prefill (the fifth yields eos); diffusion: two blocks of one step.
    assert result.forward_passes == (5 if block_size == 1 else 2)


def test_newline_stops_line_mode_early_inside_the_block():
    target = [7, 8, NL_A, 9, 12, 13, 14, 15]
    # tau = 1 and falling confidence: one commit per step, left to right.
    result, _ = run_oracle(target, confidence=lambda j: 0.9 - 0.05 * j, block_size=8, tau=1.0,
                           max_tokens=20, mode="line")
    assert result.tokens == [7, 8, NL_A], "the newline token is kept, what follows is dropped"
    assert result.stop_reason == "newline"
    assert result.forward_passes == 3 and result.steps_per_block == [3]


def test_stop_token_waits_for_every_position_before_it():
    target = [7, 8, NL_A, 9, NL_B, 13, 14, 15]
    order = {4: 0.9, 0: 0.8, 1: 0.7, 2: 0.6}  # the later newline is committed first
    result, oracle = run_oracle(target, confidence=lambda j: order.get(j, 0.5), block_size=8,
                                tau=1.0, max_tokens=20, mode="line")
    assert result.tokens == [7, 8, NL_A]
    assert result.stop_reason == "newline"
    assert result.steps_per_block == [4]


def test_newline_is_no_stop_in_block_mode():
    target = [7, NL_A, 8, NL_B, 9, 12]
    result, _ = run_oracle(target, block_size=4, tau=0.5, max_tokens=6, mode="block")
    assert result.tokens == target and result.stop_reason == "max_tokens"


@pytest.mark.parametrize("block_size, max_tokens, blocks", [(4, 10, [4, 4, 2]), (8, 3, [3])])
def test_max_tokens_is_exact(block_size, max_tokens, blocks):
    result, oracle = run_oracle(LONG_TARGET, block_size=block_size, tau=1e-6,
                                max_tokens=max_tokens, mode="block")
    assert result.tokens == LONG_TARGET[:max_tokens]
    assert result.stop_reason == "max_tokens"
    assert [c["n_block"] for c in oracle.calls[1:]] == blocks


@pytest.mark.parametrize("block_size, seen", [(4, [4, 8]), (1, list(range(1, 9)))])
def test_should_stop_callback_after_each_block(block_size, seen):
    calls = []

    def should_stop(tokens):
        calls.append(list(tokens))
        return len(tokens) >= 8

    oracle = OracleModel(LONG_TARGET, block_size)
    result = decode(oracle, CONTEXT, DecodeConfig(block_size=block_size, tau=0.5, max_tokens=20,
                                                  mode="block"), should_stop=should_stop, **IDS)
    assert result.tokens == LONG_TARGET[:8] and result.stop_reason == "callback"
    assert [len(c) for c in calls] == seen
    assert calls[-1] == LONG_TARGET[:8]


@pytest.mark.parametrize("block_size", [1, 4])
@pytest.mark.parametrize("calls_before_cancel", [0, 1, 3])
def test_cancellation_raises_and_stops_calling_the_model(block_size, calls_before_cancel):
    checks = []

    def should_cancel():
        checks.append(1)
        return len(checks) > calls_before_cancel

    oracle = OracleModel(LONG_TARGET, block_size)
    with pytest.raises(DecodeCancelled):
        decode(oracle, CONTEXT, DecodeConfig(block_size=block_size, tau=1.0, max_tokens=20),
               should_cancel=should_cancel, **IDS)
    assert len(oracle.calls) == calls_before_cancel
    assert len(checks) == calls_before_cancel + 1


def test_never_commits_the_mask_token():
    def loves_mask(input_ids, position_ids, attention_mask, past):
        q, _ = check_call_shapes(input_ids, position_ids, attention_mask, past)
        logits = np.zeros((1, q, VOCAB), dtype=np.float32)
        logits[..., MASK] = 10.0
        logits[..., 9] = 5.0
        kv = [(np.zeros((1, KV_HEADS, q, HEAD_DIM), np.float32),) * 2 for _ in range(LAYERS)]
        return logits, kv

    for block_size in (1, 4):
        result = decode(loves_mask, CONTEXT, DecodeConfig(block_size=block_size, max_tokens=6,
                                                          mode="block"), **IDS)
        assert result.tokens == [9] * 6


# --- cache exactness, determinism, sampling -------------------------------------------------


@pytest.mark.parametrize("block_size, tau", [(1, 0.9), (2, 0.5), (3, 1.0), (4, 0.9), (8, 0.3),
                                             (8, 1e-6)])
def test_cached_decoding_equals_recomputation(block_size, tau):
    config = DecodeConfig(block_size=block_size, tau=tau, max_tokens=19, mode="block")
    network = TinyTransformer(seed=1)
    cached = decode(network, CONTEXT, config, **IDS)
    recomputed = decode(RecomputeModel(TinyTransformer(seed=1)), CONTEXT, config, **IDS)
    assert cached.tokens == recomputed.tokens
    assert len(cached.tokens) == 19
    assert np.allclose(cached.confidences, recomputed.confidences, atol=1e-6)
    assert cached.forward_passes == recomputed.forward_passes == network.calls - 1
    if block_size > 1:
        assert sum(cached.steps_per_block) == cached.forward_passes


def test_greedy_is_deterministic():
    config = DecodeConfig(block_size=4, tau=0.6, max_tokens=16, mode="block")
    first = decode(TinyTransformer(seed=2), CONTEXT, config, **IDS)
    second = decode(TinyTransformer(seed=2), CONTEXT, config, rng=np.random.default_rng(7), **IDS)
    assert first == second


@pytest.mark.parametrize("block_size", [1, 4])
def test_sampling_is_reproducible_with_a_seeded_generator(block_size):
    config = DecodeConfig(block_size=block_size, tau=0.6, max_tokens=16, mode="block",
                          temperature=1.5)

    def sample(seed):
        rng = np.random.default_rng(seed)
        return decode(TinyTransformer(seed=3, scale=1.0), CONTEXT, config, rng=rng, **IDS)

    assert sample(0) == sample(0)
    assert sample(0).tokens != sample(1).tokens
    greedy = DecodeConfig(block_size=block_size, tau=0.6, max_tokens=16, mode="block")
    top1 = DecodeConfig(block_size=block_size, tau=0.6, max_tokens=16, mode="block",
                        temperature=1.5, top_k=1)
    rng = np.random.default_rng(0)
    assert (decode(TinyTransformer(seed=3, scale=1.0), CONTEXT, top1, rng=rng, **IDS).tokens
            == decode(TinyTransformer(seed=3, scale=1.0), CONTEXT, greedy, **IDS).tokens)


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    dict(block_size=0), dict(block_size=2.5), dict(tau=0.0), dict(tau=1.5), dict(max_tokens=0),
    dict(mode="word"), dict(temperature=-1.0), dict(temperature=float("nan")), dict(top_k=-1),
])
def test_invalid_config_raises(bad):
    with pytest.raises(ValueError):
        DecodeConfig(**bad)


@pytest.mark.parametrize("context, ids", [
    ([], IDS),
    ([BOS, MASK, 7], IDS),
    (CONTEXT, dict(mask_id=MASK, eos_id=EOS)),  # line mode without newline_tokens
    (CONTEXT, dict(mask_id=MASK, eos_id=EOS, newline_tokens=np.array([NL_A, NL_B]))),
    (CONTEXT, dict(mask_id=MASK, eos_id=EOS, newline_tokens=np.zeros(VOCAB + 1, np.bool_))),
    (CONTEXT, dict(mask_id=-1, eos_id=EOS, newline_tokens=NEWLINES)),
    (CONTEXT, dict(mask_id=MASK, eos_id=VOCAB, newline_tokens=NEWLINES)),
])
def test_invalid_decode_arguments_raise(context, ids):
    with pytest.raises(ValueError):
        decode(OracleModel(LONG_TARGET, 8), context, DecodeConfig(mode="line"), **ids)


# --- properties -----------------------------------------------------------------------------


def expected_output(target, max_tokens, mode):
    tokens = []
    for token in target + [EOS]:
        if len(tokens) == max_tokens:
            return tokens, "max_tokens"
        if token == EOS:
            return tokens, "eos"
        tokens.append(token)
        if mode == "line" and NEWLINES[token]:
            return tokens, "newline"
    raise AssertionError("unreachable")


@settings(max_examples=60, deadline=None)
@given(
    target=st.lists(st.sampled_from(WORDS * 4 + [NL_A, EOS]), min_size=0, max_size=24),
    probs=st.lists(st.floats(0.1, 0.99), min_size=32, max_size=32),
    block_size=st.integers(1, 6),
    tau=st.floats(0.01, 1.0),
    max_tokens=st.integers(1, 20),
    mode=st.sampled_from(["line", "block"]),
)
def test_any_schedule_yields_the_target_within_budget(target, probs, block_size, tau, max_tokens,
                                                      mode):
    result, oracle = run_oracle(target, confidence=lambda j: probs[j % 32], block_size=block_size,
                                tau=tau, max_tokens=max_tokens, mode=mode)
    tokens, reason = expected_output(target, max_tokens, mode)
    assert (result.tokens, result.stop_reason) == (tokens, reason)
    assert len(result.confidences) == len(result.tokens) <= max_tokens
    assert result.forward_passes == len(oracle.calls) - 1
    if block_size == 1:
        assert result.forward_passes == len(tokens) - (0 if reason == "eos" else 1)
    else:
        assert sum(result.steps_per_block) == result.forward_passes
        assert all(1 <= s <= block_size for s in result.steps_per_block)


def test_banned_ids_are_never_committed():
    """Special tokens the caller bans never appear, even when the model prefers them."""
    vocab = 16
    banned = [0, 2, 4, 5, 6]

    def step(input_ids, position_ids, attention_mask, past):
        q = input_ids.shape[1]
        logits = np.zeros((1, q, vocab), np.float32)
        logits[..., 5] = 10.0  # the model's favourite is a fim marker
        logits[..., 9] = 5.0
        kv = [(np.zeros((1, 1, q, 2), np.float32), np.zeros((1, 1, q, 2), np.float32))]
        return logits, kv

    for block_size in (1, 4):
        result = decode(step, [2, 5, 7, 8], DecodeConfig(block_size=block_size, max_tokens=6, mode="block"),
                        mask_id=1, eos_id=3, banned_ids=banned)
        assert result.tokens == [9] * 6
