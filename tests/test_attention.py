"""The one-pass block diffusion mask, checked on the real network by perturbing inputs.

A noisy block must never see later clean tokens or other blocks' noise, clean
tokens must never see noisy ones, and packed samples must not see each other.
Each rule is checked by changing the tokens a position must not see and
asserting its output is unchanged, with a positive control that the test can fail.
"""

import torch

from model.attention import (
    ChunkedMask,
    causal_chunked,
    causal_mask,
    causal_plan,
    one_pass_chunked,
    one_pass_mask,
    one_pass_plan,
)
from model.network import DiffusionLM, ModelConfig

L, B, VOCAB = 16, 4, 64


def tiny_model() -> DiffusionLM:
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64)).eval()


def run_one_pass(model, noisy, clean, sample_ids):
    ids = torch.cat([noisy, clean], 1)
    pos = torch.arange(L).repeat(2)[None]
    with torch.no_grad():
        logits, _ = model(ids, pos, one_pass_mask(sample_ids, B))
    return logits[0, :L], logits[0, L:]


def streams(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(7, VOCAB, (1, L), generator=g), torch.randint(7, VOCAB, (1, L), generator=g)


def changed(a, b):
    return (a - b).abs().amax(-1) > 1e-5


def test_noisy_block_never_sees_later_clean_tokens():
    model, sample_ids = tiny_model(), torch.zeros(1, L, dtype=torch.long)
    noisy, clean = streams()
    base_noisy, _ = run_one_pass(model, noisy, clean, sample_ids)
    clean2 = clean.clone()
    clean2[0, 2 * B:] = (clean2[0, 2 * B:] + 1) % VOCAB  # blocks 2 and 3 of the clean stream
    new_noisy, _ = run_one_pass(model, noisy, clean2, sample_ids)
    diff = changed(base_noisy, new_noisy)
    assert not diff[: 3 * B].any(), "noisy blocks 0-2 saw clean tokens of their own or later blocks"
    assert diff[3 * B:].all(), "positive control: block 3 must see the clean block 2"


def test_noisy_block_never_sees_other_noisy_blocks():
    model, sample_ids = tiny_model(), torch.zeros(1, L, dtype=torch.long)
    noisy, clean = streams()
    base_noisy, base_clean = run_one_pass(model, noisy, clean, sample_ids)
    noisy2 = noisy.clone()
    noisy2[0, B:2 * B] = 1  # mask block 1 entirely
    new_noisy, new_clean = run_one_pass(model, noisy2, clean, sample_ids)
    diff = changed(base_noisy, new_noisy)
    assert not diff[:B].any() and not diff[2 * B:].any(), "another block's noise leaked"
    assert diff[B:2 * B].all(), "positive control: a block sees its own noise (bidirectionally)"
    assert not changed(base_clean, new_clean).any(), "clean tokens saw noisy ones"


def test_clean_stream_is_causal_and_blind_to_noise():
    model, sample_ids = tiny_model(), torch.zeros(1, L, dtype=torch.long)
    noisy, clean = streams()
    _, base_clean = run_one_pass(model, noisy, clean, sample_ids)
    clean2 = clean.clone()
    clean2[0, 9] = (clean2[0, 9] + 1) % VOCAB
    _, new_clean = run_one_pass(model, torch.randint(7, VOCAB, (1, L)), clean2, sample_ids)
    diff = changed(base_clean, new_clean)
    assert not diff[:9].any(), "a clean token saw a later one or the noisy stream"
    assert diff[9:].all()


def test_clean_stream_matches_plain_causal_forward():
    """The clean half of the one-pass input is exactly the AR model (so the KV cache is exact)."""
    model, sample_ids = tiny_model(), torch.zeros(1, L, dtype=torch.long)
    noisy, clean = streams()
    _, one_pass_clean = run_one_pass(model, noisy, clean, sample_ids)
    with torch.no_grad():
        causal, _ = model(clean, torch.arange(L)[None], causal_mask(sample_ids))
    torch.testing.assert_close(one_pass_clean, causal[0], atol=1e-5, rtol=1e-5)


def test_packed_samples_do_not_see_each_other():
    model = tiny_model()
    sample_ids = torch.tensor([[0] * 6 + [1] * 10])
    noisy, clean = streams()
    base_noisy, base_clean = run_one_pass(model, noisy, clean, sample_ids)
    noisy2, clean2 = noisy.clone(), clean.clone()
    noisy2[0, :6] = (noisy2[0, :6] + 1) % VOCAB
    clean2[0, :6] = (clean2[0, :6] + 1) % VOCAB
    new_noisy, new_clean = run_one_pass(model, noisy2, clean2, sample_ids)
    assert not changed(base_noisy, new_noisy)[6:].any()
    assert not changed(base_clean, new_clean)[6:].any()
    assert changed(base_clean, new_clean)[:6].all()


def test_mask_shape_and_rows_never_empty():
    sample_ids = torch.tensor([[0, 0, 0, 1, 1, -1, -1, -1]])
    mask = one_pass_mask(sample_ids, 4)
    assert mask.shape == (1, 1, 16, 16) and mask.dtype == torch.bool
    assert mask.any(-1).all(), "a row attending to nothing gives NaN in attention"


# ------------------------------------------------------------------ chunked masks (training speed)

def packed_sample_ids(length: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.cumsum((torch.rand(2, length, generator=g) < 0.08).long(), 1)
    ids[1, -5:] = -1  # padding at the end of the second row
    return ids


def full_mask_has_nothing_outside(mask: torch.Tensor, plan) -> bool:
    covered = torch.zeros_like(mask)
    for start, end, ranges in plan:
        for a, b in ranges:
            covered[:, :, start:end, a:b] = True
    return not (mask & ~covered).any()


def test_chunk_plans_cover_every_attended_pair():
    length = 32
    sample_ids = packed_sample_ids(length)
    for block, chunks in [(4, 2), (4, 4), (8, 4), (16, 2), (4, 8)]:
        plan = one_pass_plan(length, block, chunks)
        assert full_mask_has_nothing_outside(one_pass_mask(sample_ids, block), plan)
        assert [c[0] for c in plan] == [0] + [c[1] for c in plan[:-1]]  # queries in order, no gaps
    assert full_mask_has_nothing_outside(causal_mask(sample_ids), causal_plan(length, 4))
    # a chunk boundary inside a diffusion block is refused: the full mask is used
    assert one_pass_plan(32, 16, 4) is None and isinstance(one_pass_chunked(sample_ids, 16, 4), torch.Tensor)


def test_chunked_attention_equals_full_mask_forward_and_backward():
    model = tiny_model().train()
    length = 32
    sample_ids = packed_sample_ids(length)
    g = torch.Generator().manual_seed(5)
    for ids, pos, full, chunked in [
        (torch.randint(7, VOCAB, (2, 2 * length), generator=g), torch.arange(length).repeat(2)[None].expand(2, -1),
         one_pass_mask(sample_ids, 8), one_pass_chunked(sample_ids, 8, 4)),
        (torch.randint(7, VOCAB, (2, length), generator=g), torch.arange(length)[None].expand(2, -1),
         causal_mask(sample_ids), causal_chunked(sample_ids, 4)),
    ]:
        assert isinstance(chunked, ChunkedMask)
        results = []
        for mask in (full, chunked):
            model.zero_grad()
            hidden, _ = model.hidden_states(ids, pos, mask)
            hidden.square().sum().backward()
            results.append((hidden.detach(), model.blocks[0].attn.wq.weight.grad.clone()))
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-5)
