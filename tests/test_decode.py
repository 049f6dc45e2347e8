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


def check_call_shapes(input_ids, position_ids, attention_mask, past) -> tuple[int, int, int]:
    """Assert the step contract's shapes and dtypes; return (q, past_len, width).

    The decoder hands over its whole cache buffer (width columns); the mask says
    which leading past_len columns hold cached positions.
    """
    assert input_ids.dtype == np.int64 and input_ids.ndim == 2 and input_ids.shape[0] == 1
    q = input_ids.shape[1]
    assert q >= 1
    assert position_ids.dtype == np.int64 and position_ids.shape == (1, q)
    assert isinstance(past, list) and len(past) in (0, LAYERS)
    width = past[0][0].shape[2] if past else 0
    for key, value in past:
        assert key.shape == value.shape == (1, KV_HEADS, width, HEAD_DIM)
    assert attention_mask.dtype == np.bool_
    assert attention_mask.shape == (1, 1, q, width + q)
    cache_columns = attention_mask[0, 0, :, :width]
    past_len = int(cache_columns[0].sum()) if width else 0
    assert cache_columns[:, :past_len].all(), "every row sees the whole cache"
    assert not cache_columns[:, past_len:].any(), "nobody sees the unused part of the buffer"
    assert (position_ids[0] == past_len + np.arange(q)).all(), "positions continue the cache"
    return q, past_len, width


def check_mask_rules(attention_mask, width: int, n_clean: int) -> None:
    """Clean rows causal and blind to the block; block rows see all inputs (bidirectional)."""
    inputs = attention_mask[0, 0, :, width:]
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
    clean rows at offset j predict target[j + 1]. A head set to "decoy" predicts DECOY
    everywhere instead; a head given a set of offsets predicts DECOY only for the tokens
    at those offsets (a clean row at j speaks for offset j + 1), so the two heads can
    disagree at chosen positions. Past the end of the target it predicts eos. Context
    rows before the last predict eos with probability 0.5: nothing reads them.

    anchor=True (DecodeConfig.anchor, greedy decoding): the first block's first step
    arrives with its first slot already committed, and every block's first token must
    be the clean head's prediction at the token before it.
    """

    def __init__(self, target, block_size, confidence=lambda offset: 0.95, clean_head="target",
                 mask_head="target", anchor=False):
        self.target = list(target)
        self.block_size = block_size
        self.confidence = confidence
        self.clean_head = clean_head
        self.mask_head = mask_head
        self.anchor = anchor and block_size >= 2
        self.calls: list[dict] = []  # per call: q, past_len, n_clean, n_block, input ids
        self.history: list[int] = []  # clean tokens sent so far = what the cache must hold
        self.clean_says: dict[int, int] = {}  # position -> clean head's token for it
        self.n_context = None
        self.block_positions = None
        self.block_ids = None

    def target_at(self, offset: int) -> int:
        return self.target[offset] if 0 <= offset < len(self.target) else EOS

    def prob_at(self, offset: int) -> float:
        return self.confidence(offset) if offset >= 0 else 0.5

    def head_says(self, head, offset: int) -> int:
        decoy = head == "decoy" if isinstance(head, str) else offset in head
        return DECOY if decoy else self.target_at(offset)

    def __call__(self, input_ids, position_ids, attention_mask, past):
        q, past_len, width = check_call_shapes(input_ids, position_ids, attention_mask, past)
        ids, positions = input_ids[0], position_ids[0]
        self.check_past(past, past_len)
        n_clean = self.split_rows(ids, positions, past_len)
        check_mask_rules(attention_mask, width, n_clean)
        self.history.extend(int(t) for t in ids[:n_clean])
        self.calls.append(dict(q=q, past_len=past_len, n_clean=n_clean, n_block=q - n_clean,
                               ids=ids.tolist()))

        logits = np.empty((1, q, VOCAB), dtype=np.float32)
        for row, (token, position) in enumerate(zip(ids, positions)):
            offset = int(position) - self.n_context
            if token == MASK:  # diffusion head: the token at this position
                predicted = self.head_says(self.mask_head, offset)
                logits[0, row] = peaked_logits(predicted, self.prob_at(offset))
            else:  # AR head: the next token
                predicted = self.head_says(self.clean_head, offset + 1)
                logits[0, row] = peaked_logits(predicted, self.prob_at(offset + 1))
                if row < n_clean:
                    self.clean_says.setdefault(int(position) + 1, predicted)
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
            key, value = key[:, :, :past_len], value[:, :, :past_len]
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
            if self.anchor:  # committed before the first step, or by it
                self.check_anchor(positions[0], ids[0])
            self.block_ids = ids.tolist()
            return 0
        # A new block starts all masked, so it is the trailing run of mask tokens; an
        # anchored first block already holds its first token, committed from the prefill.
        anchored_start = self.anchor and self.block_positions is None
        n_block = len(ids) - len(np.flatnonzero(ids != MASK)) + anchored_start
        n_clean = len(ids) - n_block
        assert (ids[n_clean + anchored_start:] == MASK).all() and 1 <= n_block <= self.block_size
        previous = 0 if self.block_positions is None else len(self.block_positions)
        assert n_clean == previous, "pending = the whole previous block, fused into this step"
        assert self.block_positions is None or \
            tuple(positions[:n_clean]) == self.block_positions
        if anchored_start:
            assert n_block >= 2, "a one-slot anchored block needs no step"
            self.check_anchor(positions[0], ids[0])
        elif self.anchor:  # the previous block's first token, now clean
            self.check_anchor(positions[0], ids[0])
        self.block_positions = tuple(positions[n_clean:])
        self.block_ids = ids[n_clean:].tolist()
        return n_clean

    def check_anchor(self, position, token) -> None:
        assert token != MASK and token == self.clean_says[int(position)], \
            "a block's first token is the clean head's choice at the token before it"


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
        check_call_shapes(input_ids, position_ids, attention_mask, past)
        q = input_ids.shape[1]
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
        q, past_len, width = check_call_shapes(input_ids, position_ids, attention_mask, past)
        history = [self.clean_at[p] for p in range(past_len)]
        ids = np.array([history + input_ids[0].tolist()], dtype=np.int64)
        positions = np.arange(past_len + q, dtype=np.int64)[None]
        mask = np.zeros((1, 1, past_len + q, past_len + q), dtype=np.bool_)
        mask[0, 0, :past_len, :past_len] = np.tri(past_len, dtype=np.bool_)
        rows = attention_mask[0, 0]
        mask[0, 0, past_len:] = np.concatenate([rows[:, :past_len], rows[:, width:]], axis=1)
        logits, kv = self.network(ids, positions, mask, [])
        for position, token in zip(position_ids[0], input_ids[0]):
            if token != MASK:
                # Overwrite: a verify row's rejected draft token is later replaced at its position.
                self.clean_at[int(position)] = int(token)
        return logits[:, past_len:], [(k[:, :, past_len:], v[:, :, past_len:]) for k, v in kv]


def run_oracle(target, confidence=lambda offset: 0.95, clean_head="target", mask_head="target",
               **config):
    config = DecodeConfig(**config)
    oracle = OracleModel(target, config.block_size, confidence, clean_head, mask_head,
                         anchor=config.anchor)
    result = decode(oracle, CONTEXT, config, **IDS)
    return result, oracle


# --- pieces ---------------------------------------------------------------------------------


def test_attention_mask_rules():
    mask = build_attention_mask(past_len=3, n_clean=2, n_block=3)
    assert mask.shape == (1, 1, 5, 8) and mask.dtype == np.bool_
    check_mask_rules(mask, width=3, n_clean=2)
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
    result, oracle = run_oracle(LONG_TARGET, block_size=4, tau=1.0, max_tokens=12, mode="block",
                                anchor=False)
    assert result.tokens == LONG_TARGET[:12]
    assert result.forward_passes == len(result.tokens) == 12
    assert result.steps_per_block == [4, 4, 4]
    assert result.stop_reason == "max_tokens"
    assert result.prefill_tokens == len(CONTEXT)
    assert np.allclose(result.confidences, 0.95)


def test_tiny_tau_commits_a_whole_block_per_step_and_fuses_the_clean_block():
    result, oracle = run_oracle(LONG_TARGET, block_size=4, tau=1e-6, max_tokens=12, mode="block",
                                anchor=False)
    assert result.tokens == LONG_TARGET[:12]
    assert result.forward_passes == 3 and result.steps_per_block == [1, 1, 1]
    # The finished block rides along with the next block's first step: no pass of its own.
    assert [(c["n_clean"], c["n_block"]) for c in oracle.calls] == [
        (len(CONTEXT), 0), (0, 4), (4, 4), (4, 4)]


def test_commits_everything_above_tau_and_at_least_the_best():
    probs = {0: 0.95, 1: 0.5, 2: 0.96, 3: 0.4}
    result, oracle = run_oracle(LONG_TARGET, confidence=lambda j: probs.get(j % 4, 0.5),
                                block_size=4, tau=0.9, max_tokens=4, mode="block", anchor=False)
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
                           max_tokens=8, mode="block", anchor=False)
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
    result, _ = run_oracle(target, block_size=block_size, tau=0.5, max_tokens=20, mode="block",
                           anchor=False)
    assert result.tokens == [7, 8, 9, 12, 13]
    assert result.stop_reason == "eos"
    assert len(result.confidences) == len(result.tokens)
    # AR: five passes after the prefill (the fifth yields eos); diffusion: two blocks of one step.
    assert result.forward_passes == (5 if block_size == 1 else 2)


def test_newline_stops_line_mode_early_inside_the_block():
    target = [7, 8, NL_A, 9, 12, 13, 14, 15]
    # tau = 1 and falling confidence: one commit per step, left to right.
    result, _ = run_oracle(target, confidence=lambda j: 0.9 - 0.05 * j, block_size=8, tau=1.0,
                           max_tokens=20, mode="line", anchor=False)
    assert result.tokens == [7, 8, NL_A], "the newline token is kept, what follows is dropped"
    assert result.stop_reason == "newline"
    assert result.forward_passes == 3 and result.steps_per_block == [3]


def test_stop_token_waits_for_every_position_before_it():
    target = [7, 8, NL_A, 9, NL_B, 13, 14, 15]
    order = {4: 0.9, 0: 0.8, 1: 0.7, 2: 0.6}  # the later newline is committed first
    result, oracle = run_oracle(target, confidence=lambda j: order.get(j, 0.5), block_size=8,
                                tau=1.0, max_tokens=20, mode="line", anchor=False)
    assert result.tokens == [7, 8, NL_A]
    assert result.stop_reason == "newline"
    assert result.steps_per_block == [4]


@pytest.mark.parametrize("anchor", [False, True])
def test_newline_is_no_stop_in_block_mode(anchor):
    target = [7, NL_A, 8, NL_B, 9, 12]
    result, _ = run_oracle(target, block_size=4, tau=0.5, max_tokens=6, mode="block",
                           anchor=anchor)
    assert result.tokens == target and result.stop_reason == "max_tokens"


@pytest.mark.parametrize("block_size, max_tokens, blocks", [(4, 10, [4, 4, 2]), (8, 3, [3])])
def test_max_tokens_is_exact(block_size, max_tokens, blocks):
    result, oracle = run_oracle(LONG_TARGET, block_size=block_size, tau=1e-6,
                                max_tokens=max_tokens, mode="block", anchor=False)
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
                                                  mode="block", anchor=False),
                    should_stop=should_stop, **IDS)
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
        decode(oracle, CONTEXT, DecodeConfig(block_size=block_size, tau=1.0, max_tokens=20,
                                             anchor=False),
               should_cancel=should_cancel, **IDS)
    assert len(oracle.calls) == calls_before_cancel
    assert len(checks) == calls_before_cancel + 1


def test_never_commits_the_mask_token():
    def loves_mask(input_ids, position_ids, attention_mask, past):
        q, _, _ = check_call_shapes(input_ids, position_ids, attention_mask, past)
        logits = np.zeros((1, q, VOCAB), dtype=np.float32)
        logits[..., MASK] = 10.0
        logits[..., 9] = 5.0
        kv = [(np.zeros((1, KV_HEADS, q, HEAD_DIM), np.float32),) * 2 for _ in range(LAYERS)]
        return logits, kv

    for block_size in (1, 4):
        result = decode(loves_mask, CONTEXT, DecodeConfig(block_size=block_size, max_tokens=6,
                                                          mode="block"), **IDS)
        assert result.tokens == [9] * 6


# --- anchoring: each block's first token from the AR (clean) head ----------------------------


class Recorder:
    """Wraps a step function and keeps every call's input ids and returned logits."""

    def __init__(self, step):
        self.step = step
        self.ids: list[list[int]] = []
        self.logits: list[np.ndarray] = []

    def __call__(self, input_ids, position_ids, attention_mask, past):
        logits, kv = self.step(input_ids, position_ids, attention_mask, past)
        self.ids.append(input_ids[0].tolist())
        self.logits.append(logits[0].copy())
        return logits, kv


def greedy_pick(logits_row: np.ndarray) -> int:
    """What decode's greedy choice is for one row (the mask token is never chosen)."""
    row = np.array(logits_row, dtype=np.float64)
    row[MASK] = -np.inf
    return int(np.argmax(row))


def test_anchor_first_token_is_the_prefill_clean_head_not_the_mask_head():
    # At offset 0 the mask head says DECOY, the clean head (prefill's last row) says target[0].
    assert LONG_TARGET[0] != DECOY
    oracle = OracleModel(LONG_TARGET, 4, mask_head={0}, anchor=True)
    recorder = Recorder(oracle)
    config = DecodeConfig(block_size=4, tau=0.5, max_tokens=4, mode="block")
    assert config.anchor, "anchoring is on by default"
    result = decode(recorder, CONTEXT, config, **IDS)
    prefill_last_row = recorder.logits[0][-1]
    assert result.tokens[0] == greedy_pick(prefill_last_row) == LONG_TARGET[0]
    assert result.tokens == LONG_TARGET[:4]
    assert np.isclose(result.confidences[0], 0.95)
    # Committed before any step: the first step already carries it, and it is one step.
    assert oracle.calls[1]["ids"] == [LONG_TARGET[0], MASK, MASK, MASK]
    assert result.forward_passes == 1 and result.steps_per_block == [1]

    # The same oracle without anchoring takes the mask head's DECOY there.
    unanchored, _ = run_oracle(LONG_TARGET, mask_head={0}, block_size=4, tau=0.5, max_tokens=4,
                               mode="block", anchor=False)
    assert unanchored.tokens == [DECOY] + LONG_TARGET[1:4]

    # And where only the clean head is wrong at offset 0, the anchor follows it.
    decoyed, _ = run_oracle(LONG_TARGET, clean_head={0}, block_size=4, tau=0.5, max_tokens=4,
                            mode="block")
    assert decoyed.tokens == [DECOY] + LONG_TARGET[1:4]


@pytest.mark.parametrize("decoy_head", ["mask", "clean"])
@pytest.mark.parametrize("block_size", [2, 4])
def test_anchor_later_blocks_take_the_last_pending_rows_clean_head(decoy_head, block_size):
    # One head is all DECOY: block-first positions show the clean head, the others the mask head.
    heads = dict(mask_head="decoy") if decoy_head == "mask" else dict(clean_head="decoy")
    oracle = OracleModel(LONG_TARGET, block_size, anchor=True, **heads)
    recorder = Recorder(oracle)
    config = DecodeConfig(block_size=block_size, tau=0.5, max_tokens=12, mode="block")
    result = decode(recorder, CONTEXT, config, **IDS)
    # Block-first positions come from the clean head, all others from the mask head.
    clean_is_right = decoy_head == "mask"
    expected = [LONG_TARGET[i] if (i % block_size == 0) == clean_is_right else DECOY
                for i in range(12)]
    assert result.tokens == expected
    assert result.steps_per_block == [1] * (12 // block_size)
    # Each later block's first step fuses the previous block; its last (clean) row's AR
    # logits are what the block's first token was chosen from.
    for block in range(1, 12 // block_size):
        call = 1 + block  # one step per block, after the prefill
        assert recorder.ids[call][:block_size] == result.tokens[(block - 1) * block_size:
                                                               block * block_size]
        last_pending_row = recorder.logits[call][block_size - 1]
        assert result.tokens[block * block_size] == greedy_pick(last_pending_row)


def test_anchor_is_committed_by_the_first_fused_step_without_a_forced_commit():
    # tau = 1: nothing passes tau, so the diffusion rows commit one per step, left to right
    # (falling confidence fixes the order).
    result, oracle = run_oracle(LONG_TARGET, confidence=lambda j: 0.9 - 0.01 * j, block_size=4,
                                tau=1.0, max_tokens=8, mode="block")
    t = LONG_TARGET
    assert result.tokens == t[:8]
    assert [c["ids"] for c in oracle.calls[1:]] == [
        [t[0], MASK, MASK, MASK],  # anchored from the prefill before any step
        [t[0], t[1], MASK, MASK],
        [t[0], t[1], t[2], MASK],
        [t[0], t[1], t[2], t[3], MASK, MASK, MASK, MASK],  # fused: its last clean row anchors
        [t[4], MASK, MASK, MASK],  # that step committed the anchor and nothing else
        [t[4], t[5], MASK, MASK],
        [t[4], t[5], t[6], MASK],
    ]
    assert result.steps_per_block == [3, 4]


@pytest.mark.parametrize("block_size", [2, 3, 4, 8])
def test_anchor_step_count_at_tau_one(block_size):
    """One commit per step otherwise: count the steps the anchor saves, exactly.

    The first block's anchor costs no step (it comes from the prefill), so that block
    takes B - 1 steps. A later block's anchor comes from its first step, which then
    commits no diffusion row (tau = 1 passes none and no forced commit is made): the
    anchor takes the place of that step's one commit, so the block still takes B steps.
    """
    max_tokens = 3 * block_size
    kwargs = dict(block_size=block_size, tau=1.0, max_tokens=max_tokens, mode="block")
    plain, _ = run_oracle(LONG_TARGET * 2, anchor=False, **kwargs)
    anchored, oracle = run_oracle(LONG_TARGET * 2, anchor=True, **kwargs)
    assert plain.tokens == anchored.tokens == (LONG_TARGET * 2)[:max_tokens]
    assert plain.steps_per_block == [block_size] * 3
    assert anchored.steps_per_block == [block_size - 1, block_size, block_size]
    assert anchored.forward_passes == plain.forward_passes - 1 == max_tokens - 1
    assert anchored.forward_passes == len(oracle.calls) - 1


@pytest.mark.parametrize("mode", ["line", "block"])
@pytest.mark.parametrize("block_size", [2, 4, 8])
def test_eos_anchor_ends_decoding_without_a_step(block_size, mode):
    for target in ([EOS, 7, 8, 9], []):  # the clean head predicts eos right after the context
        result, oracle = run_oracle(target, block_size=block_size, tau=0.5, max_tokens=20,
                                    mode=mode)
        assert result.tokens == [] and result.confidences == []
        assert result.stop_reason == "eos"
        assert result.forward_passes == 0 and result.steps_per_block == [0]
        assert len(oracle.calls) == 1, "only the prefill"
    # Without the anchor the same target costs one step.
    result, _ = run_oracle([EOS, 7, 8, 9], block_size=block_size, tau=0.5, max_tokens=20,
                           mode=mode, anchor=False)
    assert result.stop_reason == "eos" and result.forward_passes == 1


def test_newline_anchor_ends_line_mode_without_a_step():
    result, oracle = run_oracle([NL_A, 7, 8, 9], block_size=4, tau=0.5, max_tokens=20,
                                mode="line")
    assert result.tokens == [NL_A] and result.stop_reason == "newline"
    assert result.forward_passes == 0 and result.steps_per_block == [0]
    assert len(oracle.calls) == 1


def test_eos_anchor_of_a_later_block_ends_it_after_its_first_step():
    # The mask head never predicts eos: only the anchor (clean head) can stop here.
    target = [7, 8, 9, 12, EOS, 13, 15]
    result, oracle = run_oracle(target, mask_head="decoy", block_size=4, tau=0.5, max_tokens=20,
                                mode="block")
    assert result.tokens == [7, DECOY, DECOY, DECOY]
    assert result.stop_reason == "eos"
    assert result.steps_per_block == [1, 1] and result.forward_passes == 2


@pytest.mark.parametrize("block_size, max_tokens, tau, blocks, steps", [
    (4, 10, 1e-6, [4, 4, 2], [1, 1, 1]),
    (4, 9, 1e-6, [4, 4, 1], [1, 1, 1]),  # a one-slot last block: its anchor is its only commit
    (8, 3, 1e-6, [3], [1]),
    (3, 7, 1.0, [3, 3, 3, 3, 3, 1], [2, 3, 1]),
    (4, 1, 1.0, [], [0]),  # a one-slot first block: the prefill's anchor fills it
])
def test_anchor_max_tokens_is_exact(block_size, max_tokens, tau, blocks, steps):
    result, oracle = run_oracle(LONG_TARGET, block_size=block_size, tau=tau,
                                max_tokens=max_tokens, mode="block")
    assert result.tokens == LONG_TARGET[:max_tokens]
    assert len(result.tokens) == len(result.confidences) == max_tokens
    assert result.stop_reason == "max_tokens"
    assert [c["n_block"] for c in oracle.calls[1:]] == blocks
    assert result.steps_per_block == steps and result.forward_passes == sum(steps)


@pytest.mark.parametrize("block_size", [2, 3, 4])
@pytest.mark.parametrize("max_tokens", [1, 7, 19])
def test_anchor_max_tokens_is_exact_on_a_real_network(block_size, max_tokens):
    config = DecodeConfig(block_size=block_size, tau=0.7, max_tokens=max_tokens, mode="block")
    result = decode(TinyTransformer(seed=4), CONTEXT, config, **IDS)
    assert len(result.tokens) == len(result.confidences) == max_tokens
    assert result.stop_reason == "max_tokens"


@pytest.mark.parametrize("block_size, tau", [(2, 0.5), (3, 1.0), (4, 0.9), (8, 0.3)])
def test_anchor_tokens_are_the_ar_heads_choice_on_a_real_network(block_size, tau):
    """Every block's first token is the clean head's greedy choice after the text before it.

    Checked against a plain causal pass of the network over context + tokens so far,
    independent of the cache and of the fused steps.
    """
    network = TinyTransformer(seed=5)
    config = DecodeConfig(block_size=block_size, tau=tau, max_tokens=19, mode="block")
    result = decode(network, CONTEXT, config, **IDS)
    for start in range(0, len(result.tokens), block_size):
        ids = np.array([CONTEXT + result.tokens[:start]], dtype=np.int64)
        n = ids.shape[1]
        causal = np.tri(n, dtype=np.bool_)[None, None]
        logits, _ = network(ids, np.arange(n, dtype=np.int64)[None], causal, [])
        assert result.tokens[start] == greedy_pick(logits[0, -1])


def test_anchor_leaves_autoregressive_mode_unchanged():
    for anchor in (False, True):
        result, _ = run_oracle(LONG_TARGET, mask_head="decoy", block_size=1, max_tokens=6,
                               mode="block", anchor=anchor)
        assert result.tokens == LONG_TARGET[:6] and result.forward_passes == 5
        assert result.steps_per_block == []
    configs = [DecodeConfig(block_size=1, max_tokens=12, mode="block", anchor=a)
               for a in (False, True)]
    plain, anchored = (decode(TinyTransformer(seed=6), CONTEXT, c, **IDS) for c in configs)
    assert plain == anchored


@settings(max_examples=40, deadline=None)
@given(
    target=st.lists(st.sampled_from(WORDS * 4 + [NL_A, EOS]), min_size=0, max_size=24),
    probs=st.lists(st.floats(0.1, 0.99), min_size=32, max_size=32),
    block_size=st.integers(2, 6),
    tau=st.floats(0.01, 1.0),
    max_tokens=st.integers(1, 20),
    mode=st.sampled_from(["line", "block"]),
)
def test_any_anchored_schedule_yields_the_target_within_budget(target, probs, block_size, tau,
                                                               max_tokens, mode):
    # The oracle also checks every block's first token against its clean head.
    result, oracle = run_oracle(target, confidence=lambda j: probs[j % 32], block_size=block_size,
                                tau=tau, max_tokens=max_tokens, mode=mode, anchor=True)
    tokens, reason = expected_output(target, max_tokens, mode)
    assert (result.tokens, result.stop_reason) == (tokens, reason)
    assert len(result.confidences) == len(result.tokens) <= max_tokens
    assert result.forward_passes == len(oracle.calls) - 1
    assert sum(result.steps_per_block) == result.forward_passes
    first, *later = result.steps_per_block
    assert 0 <= first <= min(block_size, max_tokens) - 1, "the first block's anchor is free"
    assert all(1 <= s <= block_size for s in later)


# --- cache exactness, determinism, sampling -------------------------------------------------


@pytest.mark.parametrize("anchor", [False, True])
@pytest.mark.parametrize("block_size, tau", [(1, 0.9), (2, 0.5), (3, 1.0), (4, 0.9), (8, 0.3),
                                             (8, 1e-6)])
def test_cached_decoding_equals_recomputation(block_size, tau, anchor):
    config = DecodeConfig(block_size=block_size, tau=tau, max_tokens=19, mode="block",
                          anchor=anchor)
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
                                tau=tau, max_tokens=max_tokens, mode=mode, anchor=False)
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
