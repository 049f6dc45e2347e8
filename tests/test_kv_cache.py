"""Decoding with the KV cache gives the same tokens as recomputing from scratch.

The engine's decode loop caches the keys/values of clean tokens and feeds only
new positions; a reference step function ignores the cache and re-runs the whole
history every time. Both drive the real torch network (random weights, so the
tokens are arbitrary but deterministic) in diffusion mode and in B=1 mode.
"""

import numpy as np
import pytest
import torch

from engine.decode import DecodeConfig, decode
from model.network import DiffusionLM, ModelConfig
from model.step import TorchStep

VOCAB, MASK, EOS = 96, 1, 3


def tiny_model() -> DiffusionLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96)
    return DiffusionLM(cfg).eval()


class RecomputeStep:
    """Ignores `past`: runs the full clean history plus the query with an equivalent mask."""

    def __init__(self, model):
        self.step = TorchStep(model)
        self.history_ids = np.zeros((1, 0), np.int64)
        self.history_pos = np.zeros((1, 0), np.int64)

    def __call__(self, input_ids, position_ids, attention_mask, past):
        width = attention_mask.shape[-1] - input_ids.shape[1]
        past_len = int(attention_mask[0, 0, 0, :width].sum())
        assert past_len == self.history_ids.shape[1], "cache length disagrees with the clean history"
        hist = past_len
        attention_mask = np.concatenate(
            [attention_mask[..., :past_len], attention_mask[..., width:]], axis=-1)
        ids = np.concatenate([self.history_ids, input_ids], 1)
        pos = np.concatenate([self.history_pos, position_ids], 1)
        full = np.zeros((1, 1, ids.shape[1], ids.shape[1]), bool)
        full[:, :, :hist, :hist] = np.tril(np.ones((hist, hist), bool))
        full[:, :, hist:, :] = attention_mask
        logits, kv = self.step(ids, pos, full, [])
        # A query holding mask tokens ends with a noisy block whose rows all share the
        # last row's visibility; the rows before it are clean and the decoder caches them.
        rows = attention_mask[0, 0]
        if (input_ids == MASK).any():
            n_clean = int((rows != rows[-1]).any(-1).sum())
        else:
            n_clean = input_ids.shape[1]
        self.history_ids = np.concatenate([self.history_ids, input_ids[:, :n_clean]], 1)
        self.history_pos = np.concatenate([self.history_pos, position_ids[:, :n_clean]], 1)
        return logits[:, hist:], [(k[:, :, hist:], v[:, :, hist:]) for k, v in kv]


def context(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [2, 5, *rng.integers(7, VOCAB, n).tolist(), 4, 6]


@pytest.mark.parametrize("block_size,tau", [(1, 0.9), (4, 0.9), (8, 0.5), (8, 0.99), (16, 0.3)])
def test_cached_decode_equals_recompute(block_size, tau):
    model = tiny_model()
    cfg = DecodeConfig(block_size=block_size, tau=tau, max_tokens=24, mode="block")
    cached = decode(TorchStep(model), context(), cfg, mask_id=MASK, eos_id=EOS)
    fresh = decode(RecomputeStep(model), context(), cfg, mask_id=MASK, eos_id=EOS)
    assert cached.tokens == fresh.tokens
    assert cached.forward_passes == fresh.forward_passes
    np.testing.assert_allclose(cached.confidences, fresh.confidences, rtol=1e-4, atol=1e-5)
    assert len(cached.tokens) > 0


def test_prefill_then_step_matches_one_forward():
    """Logits of a cached step equal those of the same positions in a single causal forward."""
    model = tiny_model()
    ids = torch.tensor([context(30)])
    n = ids.shape[1]
    pos = torch.arange(n)[None]
    mask = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        full, _ = model(ids, pos, mask)
        _, kv = model(ids[:, :20], pos[:, :20], mask[:, :, :20, :20])
        part, _ = model(ids[:, 20:], pos[:, 20:], mask[:, :, 20:, :], kv)
    torch.testing.assert_close(part, full[:, 20:], atol=1e-5, rtol=1e-5)
