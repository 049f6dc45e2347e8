"""Tests of the training objective's pieces (CPU, small tensors).

- model.fim: random_split always returns pieces that concatenate to the input;
  fim_example lays out <bos><fim_suffix> S <fim_prefix> P <fim_middle> M <eos>
  with model.fim.SpecialIds, which agree with the committed tokenizer; the
  trainer's spm_context equals the engine's TextCodec.spm_context.
- model.schedule: sample_block_masks masks >= 1 valid token per non-empty block,
  never padding, rates constant per block in [t_min, 1]; block_mask_rates are
  stratified; bad lengths raise; a seeded generator reproduces the draw.
- model.corruption: corrupt_edits is the identity at rate 0; otherwise it edits
  some tokens, never touches padding, never creates special ids, keeps every
  edit inside its block (surviving clean tokens stay in their block and in
  order), and edits about the share of tokens it is asked to.
- model.losses: effective_rates is max(drawn rate, masked share) per block;
  next_token_targets never pairs tokens across samples or padding;
  diffusion_loss is ~0 for a perfect prediction and log(vocab)*sum(w)/n_tokens
  for uniform logits.
- model.data: make_batch rows have the requested shape, positions restart at 0
  per sample, sample ids are -1 exactly on padding, every sample starts with
  <bos>, FIM samples hold fim_suffix < fim_prefix < fim_middle (also when a
  sample is packed into the short tail of a row), and samples reproduce the
  corpus text.
"""

from __future__ import annotations

import math
import random
import sysconfig
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.contract import SPECIAL_TOKENS
from engine.tokenizer import TextCodec, load_tokenizer
from model.corruption import corrupt_edits
from model.data import MIN_TAIL, SampleSource, make_batch
from model.fim import SpecialIds, fim_example, random_split, spm_context, spm_sample
from model.losses import diffusion_loss, effective_rates, next_token_loss, next_token_targets, token_cross_entropy
from model.network import DiffusionLM, ModelConfig
from model.schedule import block_mask_rates, sample_block_masks

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "model" / "tokenizer.json"
IDS = SpecialIds()
FIRST_PLAIN = len(SPECIAL_TOKENS)
T_MIN = 1e-3

HYP = settings(derandomize=True, database=None, deadline=None, max_examples=100,
               suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


@pytest.fixture(scope="module")
def codec(tokenizer) -> TextCodec:
    return TextCodec(tokenizer)


# ---------------------------------------------------------------------- fim


def test_special_ids_agree_with_tokenizer(codec):
    tok = codec.tokenizer
    names = ["pad", "mask", "bos", "eos", "fim_prefix", "fim_suffix", "fim_middle"]
    assert list(asdict(IDS)) == names
    for name, token in zip(names, SPECIAL_TOKENS):
        assert getattr(IDS, name) == tok.token_to_id(token), name


@HYP
@given(st.text(), st.integers(0, 2**32), st.sampled_from([0.0, 0.5, 1.0]))
def test_random_split_concatenates_to_input(text, seed, line_rate):
    pieces = random_split(text, random.Random(seed), line_aligned_rate=line_rate)
    assert isinstance(pieces, tuple) and len(pieces) == 3
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == text


@HYP
@given(st.text(alphabet=st.sampled_from("ab \n\t"), min_size=1), st.integers(0, 2**32))
def test_line_aligned_split_ends_after_a_newline(text, seed):
    prefix, middle, suffix = random_split(text, random.Random(seed), line_aligned_rate=1.0)
    assert middle, "a line-aligned cut starts at a character of a non-empty text"
    assert middle.endswith("\n") or not suffix, "the middle ends after whole lines"
    assert middle.count("\n") <= 16


def test_random_split_uses_both_kinds_of_cut():
    text = "".join(f"line {i} of text\n" for i in range(200))
    rng = random.Random(7)
    cuts = [random_split(text, rng) for _ in range(400)]
    aligned = sum(m.endswith("\n") for _, m, s in cuts if m and s)
    assert 140 < aligned < 300  # about half are line-aligned, uniform cuts rarely end at "\n"


@HYP
@given(st.text(max_size=300), st.integers(0, 2**32))
def test_fim_example_layout_and_pieces(codec, text, seed):
    prefix, middle, suffix = random_split(text, random.Random(seed))
    ids = fim_example(text, codec.encode, random.Random(seed), IDS)
    assert ids[0] == IDS.bos and ids[1] == IDS.fim_suffix and ids[-1] == IDS.eos
    for special in (IDS.bos, IDS.fim_suffix, IDS.fim_prefix, IDS.fim_middle, IDS.eos):
        assert ids.count(special) == 1
    assert not set(ids) & {IDS.pad, IDS.mask}
    i_pre, i_mid = ids.index(IDS.fim_prefix), ids.index(IDS.fim_middle)
    assert 1 < i_pre < i_mid < len(ids) - 1
    assert codec.decode(ids[2:i_pre]) == suffix
    assert codec.decode(ids[i_pre + 1:i_mid]) == prefix
    assert codec.decode(ids[i_mid + 1:-1]) == middle
    assert ids == spm_sample(codec.encode(prefix), codec.encode(middle), codec.encode(suffix), IDS)


@HYP
@given(st.text(max_size=200), st.text(max_size=200))
def test_trainer_and_engine_agree_on_spm_context(codec, prefix, suffix):
    assert spm_context(codec.encode(prefix), codec.encode(suffix), IDS) == codec.spm_context(prefix, suffix)


def test_spm_context_with_custom_ids():
    ids = SpecialIds(pad=10, mask=11, bos=12, eos=13, fim_prefix=14, fim_suffix=15, fim_middle=16)
    assert spm_context([1, 2], [3], ids) == [12, 15, 3, 14, 1, 2, 16]
    assert spm_sample([1], [7, 8], [3], ids) == [12, 15, 3, 14, 1, 16, 7, 8, 13]


# ----------------------------------------------------------------- schedule


def _trailing_valid(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


@HYP
@given(
    st.integers(1, 4),                        # batch
    st.sampled_from([1, 2, 4, 8, 16]),        # block size
    st.integers(1, 6),                        # blocks per row
    st.data(),
)
def test_sample_block_masks_properties(batch, block_size, n_blocks, data):
    length = block_size * n_blocks
    lengths = data.draw(st.lists(st.integers(0, length), min_size=batch, max_size=batch))
    valid = _trailing_valid(lengths, length)
    # also holes: packed rows only pad at the end, but the schedule must not care
    if data.draw(st.booleans()):
        holes = torch.tensor(data.draw(st.lists(st.booleans(), min_size=batch * length, max_size=batch * length)))
        valid = valid & holes.view(batch, length)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    masked, rates = sample_block_masks(batch, length, block_size, valid, gen)
    assert masked.shape == rates.shape == (batch, length) and masked.dtype == torch.bool
    assert not (masked & ~valid).any(), "padding was masked"
    mb = masked.view(batch, n_blocks, block_size)
    vb = valid.view(batch, n_blocks, block_size)
    assert torch.equal(mb.any(-1), vb.any(-1)), "a block with valid tokens has no mask (or an empty block has one)"
    rb = rates.view(batch, n_blocks, block_size)
    assert (rb == rb[..., :1]).all(), "rate varies inside a block"
    assert (rates >= T_MIN).all() and (rates <= 1).all()


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 500])
def test_block_mask_rates_are_stratified(n):
    gen = torch.Generator().manual_seed(n)
    rates = block_mask_rates(n, t_min=T_MIN, generator=gen)
    assert rates.shape == (n,)
    assert (rates >= T_MIN).all() and (rates <= 1).all()
    strata = (rates.double() - T_MIN) / (1 - T_MIN)  # undo the t_min rescaling
    s = strata.sort().values
    assert 0 <= s[0] < 1 / n + 1e-6
    if n > 1:
        assert torch.allclose(s.diff(), torch.full((n - 1,), 1 / n, dtype=torch.float64), atol=1e-5)


def test_block_mask_rates_order_is_shuffled():
    rates = block_mask_rates(200, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(rates, rates.sort().values)
    # a full rotation of the strata would be sorted up to one wrap: rule that out too
    assert (rates.diff() < 0).sum() > 10


def test_sample_block_masks_rejects_ragged_length():
    valid = torch.ones(2, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="multiple of block size"):
        sample_block_masks(2, 10, 4, valid)


def test_sample_block_masks_reproducible_with_generator():
    valid = _trailing_valid([64, 40, 5], 64)
    a = sample_block_masks(3, 64, 8, valid, torch.Generator().manual_seed(123))
    b = sample_block_masks(3, 64, 8, valid, torch.Generator().manual_seed(123))
    c = sample_block_masks(3, 64, 8, valid, torch.Generator().manual_seed(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_masked_share_follows_the_block_rate():
    batch, length, block = 32, 512, 32
    valid = torch.ones(batch, length, dtype=torch.bool)
    masked, rates = sample_block_masks(batch, length, block, valid, torch.Generator().manual_seed(5))
    share = masked.view(batch, -1, block).float().mean(-1)
    t = rates.view(batch, -1, block)[..., 0]
    # per block the masked count is ~Binomial(32, t) (plus the one-token clip)
    assert (share - t).abs().mean() < 0.1
    assert abs(share.mean() - t.mean()) < 0.02
    assert torch.corrcoef(torch.stack([share.flatten(), t.flatten()]))[0, 1] > 0.9


# --------------------------------------------------------------- corruption

NOISE_VOCAB = 1_000  # noise ids come from [FIRST_PLAIN, NOISE_VOCAB)
CLEAN_BASE = 10_000  # clean tokens get unique ids >= CLEAN_BASE, so each one is traceable


def _traceable_rows(batch: int, length: int, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    tokens = CLEAN_BASE + np.arange(batch * length, dtype=np.int64).reshape(batch, length)
    valid = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    tokens[~valid] = IDS.pad
    return tokens, valid


def test_corrupt_edits_rate_zero_is_identity():
    tokens, valid = _traceable_rows(4, 64, [64, 50, 3, 0])
    out = corrupt_edits(tokens, valid, 8, 0.0, FIRST_PLAIN, NOISE_VOCAB, np.random.default_rng(0))
    assert np.array_equal(out, tokens)
    assert out is not tokens


@pytest.mark.parametrize("block_size", [1, 4, 8, 16])
def test_corrupt_edits_stays_in_blocks_and_off_padding(block_size):
    batch, length = 48, 128
    rng = np.random.default_rng(block_size)
    lengths = rng.integers(1, length + 1, size=batch).tolist()
    tokens, valid = _traceable_rows(batch, length, lengths)
    before = tokens.copy()
    out = corrupt_edits(tokens, valid, block_size, 0.3, FIRST_PLAIN, NOISE_VOCAB, rng)
    assert np.array_equal(tokens, before), "the input was modified in place"
    assert out.shape == tokens.shape and out.dtype == tokens.dtype
    assert np.array_equal(out[~valid], tokens[~valid]), "padding was touched"
    assert not np.array_equal(out, tokens), "nothing was edited"
    changed_blocks = 0
    for r in range(batch):
        for b0 in range(0, length, block_size):
            clean, noisy = tokens[r, b0:b0 + block_size], out[r, b0:b0 + block_size]
            v = valid[r, b0:b0 + block_size]
            is_noise = (noisy >= FIRST_PLAIN) & (noisy < NOISE_VOCAB)
            survivors = noisy[~is_noise & v]
            # every valid output token is fresh noise or a clean token of this very block ...
            assert np.isin(survivors, clean[v]).all(), "a token moved across a block boundary"
            # ... and clean tokens keep their order (edits shift, never swap)
            assert (np.diff(survivors) > 0).all()
            changed_blocks += not np.array_equal(clean, noisy)
    assert changed_blocks > 0


def test_corrupt_edits_never_creates_special_tokens():
    batch, length, block = 64, 128, 8
    rng = np.random.default_rng(1)
    vocab = 12_288
    tokens = rng.integers(FIRST_PLAIN, vocab, size=(batch, length))
    specials = rng.random((batch, length)) < 0.15  # bos / fim markers / eos sprinkled in
    tokens[specials] = rng.integers(IDS.bos, FIRST_PLAIN, size=int(specials.sum()))
    lengths = rng.integers(length // 2, length + 1, size=batch)
    valid = np.arange(length)[None, :] < lengths[:, None]
    tokens[~valid] = IDS.pad
    out = corrupt_edits(tokens, valid, block, 0.4, FIRST_PLAIN, vocab, rng)
    assert out.min() >= 0 and out.max() < vocab
    assert np.array_equal(out[~valid], tokens[~valid])
    for r in range(batch):
        for b0 in range(0, length, block):
            before = Counter(tokens[r, b0:b0 + block][valid[r, b0:b0 + block]].tolist())
            after = Counter(out[r, b0:b0 + block][valid[r, b0:b0 + block]].tolist())
            new = after - before
            assert all(FIRST_PLAIN <= t < vocab for t in new), f"special id created in row {r} block {b0}"
    assert not ((out == IDS.pad) & valid).any() and not ((out == IDS.mask) & valid).any()


@pytest.mark.parametrize("max_rate", [0.05, 0.2])
def test_corrupt_edits_edit_share_matches_rate(max_rate):
    """Each edit brings exactly one noise token into its block; rows draw rate ~ U(0, max_rate),
    so fresh noise tokens should be about max_rate / 2 of the valid tokens (a little less when a
    later edit pushes an earlier noise token out)."""
    batch, length = 128, 256
    tokens, valid = _traceable_rows(batch, length, [length] * batch)
    out = corrupt_edits(tokens, valid, 8, max_rate, FIRST_PLAIN, NOISE_VOCAB, np.random.default_rng(42))
    noise_share = ((out < NOISE_VOCAB) & valid).sum() / valid.sum()
    assert 0.3 * max_rate < noise_share < 0.6 * max_rate, noise_share
    # A substitution changes one position; an insert/delete shifts the rest of its block of 8
    # (4.5 positions on average), so ~3.3 positions differ per edit: more than 1 shows the
    # shifts happen, far less than 8 shows they stay inside the block.
    differ = ((out != tokens) & valid).sum() / valid.sum()
    assert 2.0 * noise_share < differ < 4.5 * noise_share, (differ, noise_share)


# -------------------------------------------------------------------- losses


@HYP
@given(st.integers(1, 3), st.sampled_from([1, 2, 4, 8]), st.integers(1, 4), st.integers(0, 2**31))
def test_effective_rates_is_max_of_rate_and_share(batch, block, n_blocks, seed):
    length = block * n_blocks
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(batch, length, generator=g) < 0.8
    masked = (torch.rand(batch, length, generator=g) < 0.5) & valid
    rates = (torch.rand(batch, n_blocks, 1, generator=g) * 0.999 + 1e-3).expand(-1, -1, block).reshape(batch, length)
    eff = effective_rates(masked, rates, valid, block)
    assert eff.shape == (batch, length)
    assert (eff >= rates).all()
    for r in range(batch):
        for b0 in range(0, length, block):
            v = valid[r, b0:b0 + block].sum().item()
            m = masked[r, b0:b0 + block].sum().item()
            share = m / v if v else 0.0
            expected = max(rates[r, b0].item(), share)
            assert torch.allclose(eff[r, b0:b0 + block], torch.tensor(expected), atol=1e-6)


def test_effective_rates_caps_the_weight_of_clipped_blocks():
    # a block of 4 valid tokens drew t = 0.001 but the clip masked one token: weight 4, not 1000
    masked = torch.tensor([[True, False, False, False]])
    rates = torch.full((1, 4), 1e-3)
    valid = torch.ones(1, 4, dtype=torch.bool)
    assert torch.allclose(1 / effective_rates(masked, rates, valid, 4), torch.full((1, 4), 4.0))


def test_next_token_targets_stay_inside_samples():
    ids = torch.tensor([[2, 10, 11, 12, 2, 20, 21, 0, 0], [2, 30, 31, 32, 33, 34, 35, 36, 37]])
    smp = torch.tensor([[0, 0, 0, 0, 1, 1, 1, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    valid = smp >= 0
    has_next, targets = next_token_targets(ids, smp, valid)
    assert has_next.tolist() == [
        [True, True, True, False, True, True, False, False, False],
        [True] * 8 + [False],
    ]
    assert targets[0, :3].tolist() == [10, 11, 12]
    assert targets[0, 4:6].tolist() == [20, 21]
    assert targets[1, :8].tolist() == ids[1, 1:].tolist()


@HYP
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(0, 5))
def test_next_token_targets_property(sample_lengths, pad):
    smp = [s for s, n in enumerate(sample_lengths) for _ in range(n)] + [-1] * pad
    ids = torch.arange(100, 100 + len(smp))[None]
    smp_t = torch.tensor(smp)[None]
    valid = smp_t >= 0
    has_next, targets = next_token_targets(ids, smp_t, valid)
    for i in range(len(smp)):
        same = i + 1 < len(smp) and smp[i] >= 0 and smp[i] == smp[i + 1]
        assert bool(has_next[0, i]) == same
        if same:
            assert targets[0, i] == ids[0, i + 1]
    assert int(has_next.sum()) == sum(n - 1 for n in sample_lengths)


def test_diffusion_loss_perfect_and_uniform():
    vocab, n = 50, 6
    targets = torch.tensor([3, 7, 7, 12, 49, 0])
    weights = torch.tensor([1.0, 2.0, 0.5, 10.0, 1.0, 3.0])
    n_tokens = 20
    loss = lambda logits, tokens=n_tokens: diffusion_loss(token_cross_entropy(logits, targets), weights, tokens)
    perfect = torch.full((n, vocab), -30.0)
    perfect[torch.arange(n), targets] = 30.0
    assert loss(perfect).item() < 1e-6
    uniform = torch.zeros(n, vocab)
    expected = math.log(vocab) * weights.sum().item() / n_tokens
    assert loss(uniform).item() == pytest.approx(expected, rel=1e-5)
    # n_tokens 0 (an all-padding batch) does not divide by zero
    assert math.isfinite(loss(uniform, 0).item())
    # a wrong confident prediction costs more than a uniform one
    wrong = torch.roll(perfect, 1, dims=1)
    assert loss(wrong) > loss(uniform)


def test_next_token_loss_uniform_is_log_vocab():
    logits = torch.zeros(5, 32, dtype=torch.bfloat16)
    ce = token_cross_entropy(logits, torch.tensor([1, 2, 3, 4, 5]))
    assert ce.dtype == torch.float32 and ce.shape == (5,)
    assert next_token_loss(ce).item() == pytest.approx(math.log(32), rel=1e-4)


def test_head_cross_entropy_compiled_matches_eager():
    """The compiled (fused head + log-softmax) per-token CE the trainer uses equals the eager one."""
    from model.train import head_cross_entropy

    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2))
    eager, compiled = head_cross_entropy(model, compile=False), head_cross_entropy(model, compile=True)
    for n in (5, 9):  # two sizes: the compiled one must not be tied to one shape
        hidden = torch.randn(n, 32, requires_grad=True)
        targets = torch.randint(0, 64, (n,))
        a, b = eager(hidden, targets), compiled(hidden, targets)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        (grad_a,) = torch.autograd.grad(a.sum(), hidden)
        (grad_b,) = torch.autograd.grad(b.sum(), hidden)
        torch.testing.assert_close(grad_b, grad_a, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- data

STDLIB_FILES = ["json/decoder.py", "textwrap.py", "bisect.py", "colorsys.py", "keyword.py"]


@pytest.fixture(scope="module")
def corpus(tokenizer):
    """A tiny token array: a few stdlib files plus many short documents (so rows have tails)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [(root / f).read_text(encoding="utf-8") for f in STDLIB_FILES]
    lines = texts[1].splitlines(keepends=True)
    texts += ["".join(lines[i:i + 6]) for i in range(0, 600, 6)]  # ~100 short documents
    texts = [t for t in texts if t.strip()]
    pieces = [np.asarray(tokenizer.encode(t, add_special_tokens=False).ids, dtype=np.uint16) for t in texts]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    return np.concatenate(pieces), offsets, texts


def _samples(batch, r: int) -> list[tuple[int, list[int]]]:
    ids, smp = batch.input_ids[r].tolist(), batch.sample_ids[r].tolist()
    out: dict[int, list[int]] = {}
    for t, s in zip(ids, smp):
        if s >= 0:
            out.setdefault(s, []).append(t)
    return sorted(out.items())


def _check_layout(batch, batch_size, length, pad_id=IDS.pad):
    for t in (batch.input_ids, batch.position_ids, batch.sample_ids, batch.valid):
        assert t.shape == (batch_size, length)
    assert batch.input_ids.dtype == batch.position_ids.dtype == batch.sample_ids.dtype == torch.int64
    assert batch.valid.dtype == torch.bool
    assert torch.equal(batch.valid, batch.sample_ids >= 0), "sample id -1 exactly on padding"
    assert (batch.input_ids[~batch.valid] == pad_id).all()
    assert batch.n_tokens == int(batch.valid.sum())
    for r in range(batch_size):
        ids = batch.input_ids[r].tolist()
        pos = batch.position_ids[r].tolist()
        smp = batch.sample_ids[r].tolist()
        n_valid = sum(s >= 0 for s in smp)
        assert n_valid > 0 and all(s >= 0 for s in smp[:n_valid]), "padding only at the end of a row"
        assert length - n_valid < MIN_TAIL, "a tail long enough for another sample was left empty"
        for i in range(n_valid):
            starts = i == 0 or smp[i] != smp[i - 1]
            if starts:
                assert smp[i] == (0 if i == 0 else smp[i - 1] + 1), "sample numbers count up"
                assert pos[i] == 0, "positions restart at each sample"
                assert ids[i] == IDS.bos, "every sample starts with <bos>"
            else:
                assert pos[i] == pos[i - 1] + 1
        assert all(p == 0 for p in pos[n_valid:])


def _is_fim(sample: list[int]) -> bool:
    return len(sample) > 1 and sample[1] == IDS.fim_suffix


@pytest.mark.parametrize("length", [64, 128, 256])
def test_make_batch_layout(corpus, tokenizer, length):
    tokens, offsets, _ = corpus
    source = SampleSource(tokens, offsets, tokenizer, max_len=length, fim_rate=0.5, seed=length)
    batch = make_batch(source, 6, length)
    _check_layout(batch, 6, length)


def test_make_batch_fim_samples_keep_their_markers(corpus, tokenizer):
    """Also the tail sample of a row (packed into the room the earlier samples left)."""
    tokens, offsets, _ = corpus
    length = 256
    source = SampleSource(tokens, offsets, tokenizer, max_len=length, fim_rate=1.0, seed=3)
    batch = make_batch(source, 16, length)
    _check_layout(batch, 16, length)
    n_fim = n_tail = 0
    for r in range(16):
        samples = _samples(batch, r)
        for k, (_, s) in enumerate(samples):
            assert _is_fim(s)
            n_fim += 1
            n_tail += k > 0
            assert s.count(IDS.fim_suffix) == s.count(IDS.fim_prefix) == s.count(IDS.fim_middle) == 1
            assert s.index(IDS.fim_suffix) < s.index(IDS.fim_prefix) < s.index(IDS.fim_middle), s[:12]
    assert n_tail > 0, "the corpus should give rows with more than one sample"
    assert n_fim > 16


def test_make_batch_plain_samples_are_corpus_windows(corpus, tokenizer):
    tokens, offsets, _ = corpus
    length = 128
    source = SampleSource(tokens, offsets, tokenizer, max_len=length, fim_rate=0.0, seed=11)
    batch = make_batch(source, 8, length)
    _check_layout(batch, 8, length)
    docs = [tokens[offsets[d]:offsets[d + 1]].tolist() for d in range(len(offsets) - 1)]
    for r in range(8):
        for _, s in _samples(batch, r):
            assert s[0] == IDS.bos and not _is_fim(s)
            body, ends = (s[1:-1], True) if s[-1] == IDS.eos else (s[1:], False)
            assert all(t >= FIRST_PLAIN for t in body)
            hits = [doc for doc in docs if _find(doc, body) >= 0]
            assert hits, "a plain sample is not a window of a corpus document"
            if ends:
                assert any(doc[len(doc) - len(body):] == body for doc in hits), "eos before the document's end"


def _find(haystack: list[int], needle: list[int]) -> int:
    n = len(needle)
    for i in range(len(haystack) - n + 1):
        if haystack[i:i + n] == needle:
            return i
    return -1


def test_fim_samples_reassemble_corpus_text(corpus, tokenizer, codec):
    tokens, offsets, texts = corpus
    length = 192
    source = SampleSource(tokens, offsets, tokenizer, max_len=length, fim_rate=1.0, seed=5)
    batch = make_batch(source, 8, length)
    checked = 0
    for r in range(8):
        for _, s in _samples(batch, r):
            if s[-1] != IDS.eos:  # cut short by re-tokenisation slack: nothing to reassemble
                continue
            i_pre, i_mid = s.index(IDS.fim_prefix), s.index(IDS.fim_middle)
            suffix, prefix, middle = codec.decode(s[2:i_pre]), codec.decode(s[i_pre + 1:i_mid]), codec.decode(s[i_mid + 1:-1])
            window = prefix + middle + suffix
            assert window and any(window in t for t in texts)
            checked += 1
    assert checked >= 8


def test_sample_source_is_deterministic_by_seed(corpus, tokenizer):
    tokens, offsets, _ = corpus
    a = make_batch(SampleSource(tokens, offsets, tokenizer, 128, 0.7, seed=9), 4, 128)
    b = make_batch(SampleSource(tokens, offsets, tokenizer, 128, 0.7, seed=9), 4, 128)
    c = make_batch(SampleSource(tokens, offsets, tokenizer, 128, 0.7, seed=10), 4, 128)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.sample_ids, b.sample_ids)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_sample_respects_max_len(corpus, tokenizer):
    tokens, offsets, _ = corpus
    source = SampleSource(tokens, offsets, tokenizer, max_len=100, fim_rate=0.5, seed=1)
    for _ in range(50):
        assert 1 < len(source.sample()) <= 100
        assert 1 < len(source.sample(40)) <= 40


def test_empty_split_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        SampleSource(np.zeros(0, np.uint16), np.zeros(1, np.int64), tokenizer, 64)


def test_precision_auto_follows_the_hardware(monkeypatch):
    """bf16 only where it is native: emulated bf16 on an AVX2-only CPU is far slower than fp32."""
    from model import train

    cpu = torch.device("cpu")
    assert train.use_bf16("bf16", cpu) is True
    assert train.use_bf16("fp32", cpu) is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert train.use_bf16("auto", cpu) is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert train.use_bf16("auto", cpu) is True


def test_resume_without_optimizer_moments_ramps_the_lr_again():
    from model.train import rewarm_factor

    assert rewarm_factor(500, None, 200) == 1.0  # moments restored: no ramp
    ramp = [rewarm_factor(step, 500, 200) for step in range(500, 720)]
    assert ramp[0] == pytest.approx(1 / 200) and ramp[99] == pytest.approx(0.5)
    assert all(a < b for a, b in zip(ramp[:199], ramp[1:200])) and set(ramp[199:]) == {1.0}
    assert rewarm_factor(10, 500, 200) == 1.0  # a later stage's fresh schedule restarts at step 0


def test_two_trainers_cannot_write_one_folder(tmp_path):
    pytest.importorskip("fcntl", reason="no fcntl locks on this platform")
    from model.train import hold_folder_lock

    first = hold_folder_lock(tmp_path)
    with pytest.raises(SystemExit, match="being written by another `seed-lsp train` \\(pid \\d+\\)"):
        hold_folder_lock(tmp_path)
    first.close()  # what the OS does when the first trainer ends, killed or not
    hold_folder_lock(tmp_path).close()


def test_a_changed_token_budget_on_resume_is_reported():
    import argparse

    from model.train import lr_jump_warning

    args = argparse.Namespace(lr=1.5e-3, warmup_steps=200, min_lr_ratio=0.1)
    state = {"step": 10072, "schedule_steps": 14649}
    warning = lr_jump_warning(state, 19532, args)
    assert warning and "4.58e-04 to 8.02e-04" in warning
    assert lr_jump_warning(state, 14649, args) is None
    assert lr_jump_warning({"step": 10072}, 19532, args) is None  # nothing recorded: nothing to compare
