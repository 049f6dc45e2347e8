"""The decode loop: turns a model's step function into completions, one or many at once.

The model is reached only through `step(input_ids, position_ids, attention_mask,
past) -> (logits, kv)` (see `StepFunction`), so the same loop drives the torch
model during development and onnxruntime in the server. This module owns the
KV cache, the attention masks and every decision about which tokens to commit.

Two ways to decode, on the same weights (DESIGN.md, "Decoding"):

- Block diffusion (block_size B >= 2): the B positions after the last committed
  token start as mask tokens; each step runs the block (bidirectional inside,
  seeing the whole clean past) and commits every masked position whose
  confidence is at least tau, and at least the most confident one. A finished
  block is clean text: its keys/values are cached by the first step of the next
  block (fused, so no extra forward pass).
- Autoregressive (B == 1): the exact next-token baseline using the clean head,
  one token per forward pass. Every speed-up of diffusion is measured against it.

Work is split in two phases so a server can reuse work across requests:
`prefill` runs a context through the model once (optionally continuing an
earlier context that shares a token prefix) and returns a `Prefix`; `decode_rows`
then decodes any number of rows (candidates of one context, or different jobs)
together, one batched step call per step, each row at its own pace. `decode` is
both for one context.

The cache is a preallocated buffer [rows, kv_heads, capacity, head_dim] per layer,
and the step gets the *whole* buffer as its past: unfilled columns are simply
not attended (the mask says so). That avoids copying the cache into a
contiguous array on every step, which costs as much as the step itself on CPU.
A step may supply its own cache with the same interface (`new_cache`): the
onnxruntime IO-binding step keeps the buffers on the GPU (engine.device_kv).

Logit semantics: at a clean input position i the logits predict token i + 1
(AR head); at a mask-token position i they predict the token at i (diffusion head).

numpy only: never import torch or onnxruntime here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

__all__ = [
    "KV",
    "StepFunction",
    "DecodeCancelled",
    "DecodeConfig",
    "DecodeResult",
    "KVCache",
    "Prefix",
    "Row",
    "build_attention_mask",
    "choose_tokens",
    "common_prefix_length",
    "decode",
    "decode_rows",
    "prefill",
]

# Per layer (key, value), each [rows, kv_heads, positions, head_dim].
KV = list[tuple[np.ndarray, np.ndarray]]

MODES = ("line", "block", "infill")
DRAFTS = ("lookup", "diffusion", "both")
# Prompt lookup tries the last 3 tokens, then 2, then 1 (DecodeConfig.min_match sets the floor).
LOOKUP_NGRAM = 3
STOP_REASONS = ("eos", "newline", "max_tokens", "callback", "deadline")


class StepFunction(Protocol):
    """One forward pass of the model over q new positions of each of b rows.

    input_ids, position_ids: int64 [b, q]. past: per layer (key, value) float32
    [b, kv_heads, P, head_dim] ([] or P == 0 before anything is cached); which of
    the P columns hold real entries for a row is said by the mask only.
    attention_mask: bool [b, 1, q, P + q], True where the row may attend to the
    column (the P cache columns first, then the q inputs). Returns logits float32
    [b, q, vocab] and the keys/values of the q inputs only.

    Optional methods the loop uses when a step has them: keys_values(...) (the same
    call without logits, for prefills) and new_cache(rows, capacity) (a cache that
    keeps keys/values where the step wants them, e.g. on a GPU: engine.device_kv;
    past and kv are then that cache's tensors, not numpy arrays).
    """

    def __call__(
        self,
        input_ids: np.ndarray,
        position_ids: np.ndarray,
        attention_mask: np.ndarray,
        past: KV,
    ) -> tuple[np.ndarray, KV]: ...


class DecodeCancelled(Exception):
    """should_cancel() returned True: the request is gone, there is no partial result."""


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode one completion; validated on construction."""

    # B: positions denoised together; 1 = the autoregressive baseline (AR head).
    block_size: int = 8
    # Commit every masked position at least this confident (and always the most confident one).
    tau: float = 0.9
    # Hard cap on returned tokens; the last block is shortened so the cap is exact.
    max_tokens: int = 64
    # "line": also stop at the first token containing a newline; "block": eos, cap, callback
    # (the engine adds a dedent rule); "infill": eos or cap only (a span between prefix and suffix).
    mode: str = "line"
    # 0 = greedy and deterministic; > 0 samples from softmax(logits / temperature).
    temperature: float = 0.0
    # When sampling, draw only among the k most likely tokens; 0 = no restriction.
    top_k: int = 0
    # Diffusion: each block's first token is the AR head's choice at the clean token before it.
    anchor: bool = True
    # Draft and verify (B >= 2, greedy only): every step the diffusion head drafts the next B
    # positions and the AR head checks the previous draft, keeping its longest agreeing prefix
    # plus one token of its own. The text is exactly B=1's; the speed is in the accepted drafts.
    verify: bool = False
    # Where verify's guesses come from: "lookup" (earlier text after the same last tokens),
    # "diffusion" (the mask rows of the previous step), "both" (lookup, else diffusion).
    # Lookup by default: on 2-core CPUs a step of 5 rows costs about 2x a 1-row step, and
    # this model's diffusion guesses are right too rarely to pay for their rows (bench/speed.py).
    draft: str = "lookup"
    # A lookup draft needs an earlier occurrence of at least this many of the last tokens
    # (1..3). A 1-token match is right about a third of the time, a 3-token one 80%: where
    # the match is shorter the step drafts nothing ("lookup": a 1-row AR step) or diffuses.
    min_match: int = 2

    def __post_init__(self) -> None:
        if not _is_int(self.block_size) or self.block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {self.block_size!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not (np.isfinite(self.temperature) and self.temperature >= 0.0):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.draft not in DRAFTS:
            raise ValueError(f"draft must be one of {DRAFTS}, got {self.draft!r}")
        if not _is_int(self.min_match) or not 1 <= self.min_match <= LOOKUP_NGRAM:
            raise ValueError(f"min_match must be an integer in 1..{LOOKUP_NGRAM}, got {self.min_match!r}")
        if self.verify and self.temperature > 0.0:
            raise ValueError("verify compares greedy choices: it needs temperature 0")


@dataclass
class DecodeResult:
    """What one decode produced, and what it cost."""

    tokens: list[int]  # committed tokens in order (eos excluded; a stopping newline token included)
    confidences: list[float]  # probability of each token when it was committed, aligned with tokens
    stop_reason: str  # one of STOP_REASONS
    prefill_tokens: int  # context tokens forwarded by the prefill (not served from a cache)
    forward_passes: int  # step calls this row took part in after the prefill
    # Diffusion mode only (empty for block_size 1); sums to forward_passes.
    steps_per_block: list[int] = field(default_factory=list)
    cached_tokens: int = 0  # context tokens whose keys/values came from an earlier prefill


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --- attention masks and the KV cache -------------------------------------------------------


def build_attention_mask(past_len: int, n_clean: int, n_block: int) -> np.ndarray:
    """Mask [1, 1, q, past_len + q] for one step over n_clean clean rows then n_block block rows.

    Every row sees the whole cache. Clean rows are causal among themselves and never
    see the block: their keys/values get cached, so they must not depend on noisy
    tokens (this keeps the cache exact). Block rows see every clean row and the whole
    block, bidirectionally, as in training. The prefill is n_block = 0 (plain causal).
    """
    q = n_clean + n_block
    mask = np.zeros((q, past_len + q), dtype=np.bool_)
    mask[:, :past_len] = True
    mask[:n_clean, past_len : past_len + n_clean] = np.tri(n_clean, dtype=np.bool_)
    mask[n_clean:, past_len:] = True
    return mask[None, None]


def build_batch_mask(width: int, lengths: Sequence[int], n_clean: Sequence[int],
                     n_block: Sequence[int], q: int) -> np.ndarray:
    """Mask [b, 1, q, width + q] for rows with their own cache fill and inputs, padded to q.

    Row r sees its first lengths[r] cache columns (the rest of the buffer is unused
    for it) and its own inputs by the rule of build_attention_mask. Padding rows
    (beyond n_clean + n_block) see only themselves: no NaN, and nobody sees them.
    """
    mask = np.zeros((len(lengths), 1, q, width + q), dtype=np.bool_)
    for r, (length, clean, block) in enumerate(zip(lengths, n_clean, n_block)):
        used = clean + block
        mask[r, 0, :used, :length] = True
        mask[r, 0, :used, width : width + used] = build_attention_mask(0, clean, block)[0, 0]
        pad = np.arange(used, q)
        mask[r, 0, pad, width + pad] = True
    return mask


class KVCache:
    """Keys/values of committed (clean) positions of each row; noisy positions are never cached.

    Buffers [rows, kv_heads, capacity, head_dim] are allocated once (zeroed, so
    unused columns are finite), at the largest size the decode can reach; each row
    fills its own columns from 0 to lengths[row]. past() hands the step the whole
    buffers: no copy per step.
    """

    def __init__(self, rows: int, capacity: int):
        self.capacity = capacity
        self.lengths = np.zeros(rows, dtype=np.int64)
        self.layers: Optional[KV] = None

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers or [])

    def past(self) -> KV:
        return list(self.layers) if self.layers is not None else []

    def allocate_like(self, kv: KV) -> None:
        if self.layers is None:
            self.layers = [(self._zeros_like(k), self._zeros_like(v)) for k, v in kv]

    def _zeros_like(self, x: np.ndarray) -> np.ndarray:
        _, heads, _, head_dim = x.shape
        return np.zeros((self.rows, heads, self.capacity, head_dim), dtype=np.float32)

    def append(self, kv: KV, counts: Sequence[int]) -> None:
        """Cache the first counts[r] input positions of row r of a step's kv (clean rows come first)."""
        self.allocate_like(kv)
        if len(kv) != len(self.layers):
            raise ValueError(f"step returned {len(kv)} layers of kv, the cache has {len(self.layers)}")
        for r, count in enumerate(counts):
            start, end = int(self.lengths[r]), int(self.lengths[r]) + int(count)
            if end > self.capacity:
                raise RuntimeError(f"KV cache overflow: {start} + {count} > {self.capacity}")
            for (keys, values), (k, v) in zip(self.layers, kv):
                keys[r, :, start:end] = k[r, :, :count]
                values[r, :, start:end] = v[r, :, :count]
            self.lengths[r] = end

    def copy_row_from(self, row: int, source: "KVCache", source_row: int, length: int) -> None:
        """Copy the first `length` cached positions of source's row into this cache's row."""
        if length == 0:
            return
        self.allocate_like(source.layers)
        for (keys, values), (k, v) in zip(self.layers, source.layers):
            keys[row, :, :length] = k[source_row, :, :length]
            values[row, :, :length] = v[source_row, :, :length]
        self.lengths[row] = length

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Drop the other rows (finished ones), so later steps do not compute for them."""
        rows = np.asarray(rows, dtype=np.int64)
        self.lengths = self.lengths[rows]
        if self.layers is not None:
            self.layers = [(k[rows], v[rows]) for k, v in self.layers]


def new_cache(step: StepFunction, rows: int, capacity: int) -> KVCache:
    """The step's own cache when it has one (IO binding keeps it on the device), else numpy."""
    make = getattr(step, "new_cache", None)
    return make(rows, capacity) if make is not None else KVCache(rows, capacity)


def _check_step_output(logits: np.ndarray, kv: KV, rows: int, q: int) -> None:
    """Fail loudly on a step function that breaks the contract, before it corrupts the cache."""
    if logits.ndim != 3 or logits.shape[:2] != (rows, q):
        raise ValueError(f"step returned logits of shape {logits.shape}, expected ({rows}, {q}, vocab)")
    for key, value in kv:
        if key.shape[:1] != (rows,) or key.shape[2] != q or value.shape[2] != q:
            raise ValueError(
                f"step returned kv of shape {key.shape}, expected ({rows}, heads, {q}, head_dim): "
                "keys/values of the inputs only"
            )


def _run_step(step: StepFunction, cache: KVCache, inputs: Sequence[Sequence[int]],
              n_clean: Sequence[int], want_logits: bool = True, append: bool = True):
    """One batched step: row r feeds inputs[r] (its first n_clean[r] clean) at its next positions.

    Rows are padded to the longest input; clean rows are cached. Returns logits [b, q, vocab],
    or None with want_logits=False (the step's keys_values method, which skips the head).
    append=False: nothing is cached and (logits, kv) is returned; the caller appends what
    turned out to be right (a verify row's draft is clean input but may be wrong).
    """
    q = max(len(ids) for ids in inputs)
    rows = len(inputs)
    input_ids = np.zeros((rows, q), dtype=np.int64)  # pad id 0 in padding slots
    position_ids = np.zeros((rows, q), dtype=np.int64)
    for r, ids in enumerate(inputs):
        input_ids[r, : len(ids)] = ids
        position_ids[r] = cache.lengths[r] + np.arange(q)
    width = cache.capacity if cache.layers is not None else 0
    n_block = [len(ids) - c for ids, c in zip(inputs, n_clean)]
    mask = build_batch_mask(width, cache.lengths, n_clean, n_block, q)
    if not want_logits:
        kv = step.keys_values(input_ids, position_ids, mask, cache.past())
        _check_step_output(np.zeros((rows, q, 1), np.float32), kv, rows, q)
        cache.append(kv, n_clean)
        return None
    logits, kv = step(input_ids, position_ids, mask, cache.past())
    _check_step_output(logits, kv, rows, q)
    if not append:
        return logits, kv
    cache.append(kv, n_clean)
    return logits


# --- prefill --------------------------------------------------------------------------------


@dataclass
class Prefix:
    """A context the model has read: its ids, their cached keys/values and the next-token logits."""

    ids: np.ndarray  # int64 [n] context token ids
    cache: KVCache  # one row holding exactly the n context positions (capacity may be larger)
    last_logits: np.ndarray  # float32 [vocab]: the AR head after the last context token
    cached_tokens: int = 0  # leading ids whose keys/values came from an earlier Prefix
    prefill_tokens: int = 0  # ids forwarded by this prefill

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens two id sequences share."""
    a, b = np.asarray(a), np.asarray(b)
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def prefill(
    step: StepFunction,
    context_ids: Sequence[int],
    *,
    mask_id: int,
    reuse: Optional[Prefix] = None,
    extra_capacity: int = 0,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> Prefix:
    """Run context_ids through the model causally; returns the Prefix to decode from.

    reuse: an earlier Prefix (e.g. the same document a keystroke ago). Its keys/values
    for the longest common token prefix are kept and only the rest is forwarded; at
    least the last token is always forwarded, for its logits. When reuse's buffer is
    large enough it is written in place, so the caller must own it (not share it).
    extra_capacity: room left after the context for the tokens a decode will add.
    """
    context = _validate_context(context_ids, mask_id)
    if should_cancel is not None and should_cancel():
        raise DecodeCancelled()
    capacity = len(context) + extra_capacity
    keep = 0
    if reuse is not None:
        keep = min(common_prefix_length(reuse.ids, context), len(context) - 1)
    if reuse is not None and keep > 0 and reuse.cache.capacity >= capacity:
        cache = reuse.cache
        cache.lengths[0] = keep
    else:
        cache = new_cache(step, 1, capacity)
        if reuse is not None and keep > 0:
            cache.copy_row_from(0, reuse.cache, 0, keep)
    new = context[keep:].tolist()
    if len(new) > 1 and hasattr(step, "keys_values"):
        # All but the last token without the output head; only the last one needs logits.
        _run_step(step, cache, [new[:-1]], [len(new) - 1], want_logits=False)
        if should_cancel is not None and should_cancel():
            raise DecodeCancelled()
        new = new[-1:]
    logits = _run_step(step, cache, [new], [len(new)])
    return Prefix(context, cache, logits[0, -1].astype(np.float32), cached_tokens=keep,
                  prefill_tokens=len(context) - keep)


# --- choosing tokens ------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _keep_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Set all but the k largest logits of each row to -inf (ties at the k-th value are kept)."""
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits >= kth_largest, logits, -np.inf)


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one index per row of probs by inverting its cumulative distribution."""
    cdf = np.cumsum(probs, axis=-1)
    draws = rng.random(len(probs)) * cdf[:, -1]
    picked = np.array([np.searchsorted(row, u, side="right") for row, u in zip(cdf, draws)])
    # Float rounding can push a draw past the last token that has probability: pull it back,
    # so a token with zero probability (outside top-k, or banned) can never come out.
    last_possible = probs.shape[-1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)
    return np.minimum(picked, last_possible)


def choose_tokens(
    logits: np.ndarray, temperature: float, top_k: int, rng: Optional[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """Pick one token per row of logits [n, vocab]; return (tokens [n], confidences [n]).

    Greedy (temperature 0): the argmax, with its softmax probability at temperature 1
    as confidence (top_k cannot change an argmax). Sampling: a draw from
    softmax(logits / temperature) restricted to top_k, with the drawn token's
    probability in that distribution as confidence.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0.0:
        probs = _softmax(logits)
        tokens = np.argmax(logits, axis=-1)
    else:
        if rng is None:
            raise ValueError("sampling (temperature > 0) needs an np.random.Generator")
        probs = _softmax(_keep_top_k(logits / temperature, top_k))
        tokens = _sample_rows(probs, rng)
    return tokens, probs[np.arange(len(tokens)), tokens]


# --- one row of a batch ---------------------------------------------------------------------


@dataclass
class Row:
    """One sequence to decode: a prefilled context and how to continue it.

    first_rank: greedy candidates of one context differ by their first token: rank r
    takes the r-th most likely one (0 = the argmax), then continues greedily.
    first_allowed / first_newline: token healing (engine.healing): bool [vocab] masks
    of the tokens the first one may be, and of those that end a line (they replace
    newline_tokens for the first token, whose leading text the caller removes).
    """

    prefix: Prefix
    config: DecodeConfig
    rng: Optional[np.random.Generator] = None
    should_stop: Optional[Callable[[list[int]], bool]] = None
    first_rank: int = 0
    first_allowed: Optional[np.ndarray] = None
    first_newline: Optional[np.ndarray] = None


class _RowState:
    """Where one row stands: committed tokens, the block being denoised, counters."""

    def __init__(self, row: Row, ids: "_Ids"):
        self.config = row.config
        self.rng = row.rng
        if self.config.temperature > 0.0 and self.rng is None:
            self.rng = np.random.default_rng()
        self.should_stop = row.should_stop
        self.first_rank = row.first_rank
        self.first_allowed = row.first_allowed
        self.first_newline = row.first_newline
        self.ids = ids
        self.context_ids = row.prefix.ids
        self.newline_tokens = ids.newline_tokens if self.config.mode == "line" else None
        self.tokens: list[int] = []
        self.confidences: list[float] = []
        self.steps_per_block: list[int] = []
        self.forward_passes = 0
        self.stop_reason: Optional[str] = None
        self.pending: list[int] = []  # committed tokens not yet cached (AR: the last one)
        self.draft: list[int] = []  # verify: guessed tokens after pending, checked by the next step
        self.draft_masks = 0  # verify: mask tokens after the draft, for the diffusion head to guess
        # Diffusion: the block in progress.
        self.block: Optional[np.ndarray] = None
        self.masked: Optional[np.ndarray] = None
        self.block_conf: Optional[np.ndarray] = None
        self.block_steps = 0
        self.anchor_due = False  # the block's first token still comes from the AR head
        self.start(row.prefix.last_logits[None])

    @property
    def diffusion(self) -> bool:
        """Block diffusion: the text comes from the diffusion head (verify rows are not this)."""
        return self.config.block_size >= 2 and not self.config.verify

    @property
    def verifying(self) -> bool:
        """Draft and verify: the diffusion head guesses, the AR head decides."""
        return self.config.block_size >= 2 and self.config.verify

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    # choosing

    def choose(self, logits: np.ndarray, first_row: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and confidences for rows of logits; never the mask token nor a banned id.

        A committed mask token would be read back as "still noisy" by the model and
        is never meaningful text, so it is banned before choosing; callers ban the
        other special tokens (bos, fim markers, pad) the same way. first_row: the row
        (if any) that chooses the completion's first token, restricted by healing.
        """
        logits = np.array(logits, dtype=np.float64)
        logits[:, self.ids.banned] = -np.inf
        if first_row is not None and self.first_allowed is not None:
            logits[first_row, ~self.first_allowed] = -np.inf
        return choose_tokens(logits, self.config.temperature, self.config.top_k, self.rng)

    def choose_first(self, logits: np.ndarray) -> tuple[int, float]:
        """The first token of the completion: the first_rank-th most likely (greedy candidates)."""
        if self.first_rank == 0 or self.config.temperature > 0.0:
            token, confidence = self.choose(logits, first_row=0)
            return int(token[0]), float(confidence[0])
        row = np.array(logits[0], dtype=np.float64)
        row[self.ids.banned] = -np.inf
        if self.first_allowed is not None:
            row[~self.first_allowed] = -np.inf
        order = np.argsort(-row, kind="stable")
        token = int(order[min(self.first_rank, len(order) - 1)])
        return token, float(_softmax(row[None])[0, token])

    def stop_kind(self, token: int, first: bool = False) -> Optional[str]:
        if token == self.ids.eos_id:
            return "eos"
        if self.newline_tokens is None:
            return None
        newline = self.first_newline if first and self.first_newline is not None else self.newline_tokens
        return "newline" if newline[token] else None

    def accept(self, tokens: Sequence[int], confidences: Sequence[float]) -> None:
        """Append finished tokens to the output; set stop_reason when decoding ends."""
        for token, confidence in zip(tokens, confidences):
            kind = self.stop_kind(int(token), first=not self.tokens)
            if kind == "eos":
                self.stop_reason = "eos"  # eos ends the text and is not part of it
                return
            self.tokens.append(int(token))
            self.confidences.append(float(confidence))
            if kind == "newline":
                self.stop_reason = "newline"  # kept: the caller cuts the text inside this token
                return
        # The callback first: a content stop (e.g. a dedent) tells the caller more than the limit.
        if self.should_stop is not None and self.should_stop(list(self.tokens)):
            self.stop_reason = "callback"
        elif len(self.tokens) >= self.config.max_tokens:
            self.stop_reason = "max_tokens"

    # the step protocol: start, inputs, absorb

    def start(self, prefill_logits: np.ndarray) -> None:
        """Begin decoding from the prefill's AR logits [1, vocab]."""
        if not self.diffusion:  # AR and verify: the first token is the AR head's
            token, confidence = self.choose_first(prefill_logits)
            self.accept([token], [confidence])
            self.pending = [token]
            if self.verifying and not self.done:
                self.next_draft([])
            return
        self.start_block(anchor_logits=prefill_logits if self.config.anchor else None)

    def inputs(self) -> tuple[list[int], int]:
        """Input ids of this row's next step and how many of them lead as clean rows."""
        if self.verifying:
            masks = [self.ids.mask_id] * self.draft_masks
            return [*self.pending, *self.draft, *masks], len(self.pending) + len(self.draft)
        if not self.diffusion:
            return list(self.pending), len(self.pending)
        return [*self.pending, *self.block.tolist()], len(self.pending)

    def absorb(self, logits: np.ndarray) -> int:
        """Take this row's logits [q_row, vocab] of a step (padding rows already cut off).

        Returns how many leading inputs of the step are now known-good clean text, whose
        keys/values the cache keeps (the pending tokens; verify: and the accepted draft).
        """
        self.forward_passes += 1
        if self.verifying:
            return self.absorb_verified(logits)
        if not self.diffusion:
            tokens, confidences = self.choose(logits[-1:])
            self.accept(tokens[:1], confidences[:1])
            self.pending = [int(tokens[0])]
            return 1
        n_pending = len(self.pending)
        self.pending = []  # cached by that step
        self.block_steps += 1
        progressed = False
        if self.anchor_due and n_pending:
            self.commit_anchor(logits[n_pending - 1 : n_pending])
            progressed = True
        block_len = len(self.block)
        rows = np.flatnonzero(self.masked)
        if len(rows):
            # The completion's first position, when no anchor chose it (healing restricts it).
            first_row = 0 if not self.tokens and rows[0] == 0 else None
            chosen, confidence = self.choose(logits[-block_len:][rows], first_row=first_row)
            commit = confidence >= self.config.tau
            if not progressed:
                commit[np.argmax(confidence)] = True  # progress is guaranteed: at least one per step
            self.block[rows[commit]] = chosen[commit]
            self.block_conf[rows[commit]] = confidence[commit]
            self.masked[rows[commit]] = False
        self.finish_block_if_done()
        return n_pending

    # draft and verify

    def guess_window(self) -> int:
        """Positions guessed after the pending token: B, but never past max_tokens."""
        return max(0, min(self.config.block_size, self.config.max_tokens - len(self.tokens)))

    def absorb_verified(self, logits: np.ndarray) -> int:
        """Check the draft against the AR head, keep the agreeing prefix, draft again.

        Inputs were [pending (1 token), draft (k), masks]. The AR logits at the pending
        token and at each draft token predict the next position, so draft[i] is right
        (what B=1 would write) iff it equals the AR choice one row earlier. The first
        disagreement is replaced by the AR choice, the step's bonus token; with no
        disagreement the bonus is the AR choice after the whole draft, and the mask rows
        (drafted on the assumption that the draft was right) hold guesses for the
        positions after it.
        """
        n_pending, draft = len(self.pending), self.draft
        ar_tokens, ar_conf = self.choose(logits[n_pending - 1 : n_pending + len(draft)])
        agreed = 0
        while agreed < len(draft) and ar_tokens[agreed] == draft[agreed]:
            agreed += 1
        new_tokens = [*draft[:agreed], int(ar_tokens[agreed])]
        room = self.config.max_tokens - len(self.tokens)
        self.accept(new_tokens[:room], ar_conf[: agreed + 1][:room])
        self.pending = [new_tokens[-1]]
        diffused: list[int] = []
        if agreed == len(draft) and self.draft_masks:
            # Mask row 0 sat where the bonus went; the rows after it guess what follows.
            diffused = self.choose(logits[len(logits) - self.draft_masks :])[0].tolist()[1:]
        if not self.done:
            self.next_draft(diffused)
        return n_pending + agreed

    def next_draft(self, diffused: list[int]) -> None:
        """Guesses for the positions after the pending token, and how many masks to add.

        Lookup first (config.draft "lookup" or "both"): text that follows the latest
        earlier occurrence of the last few tokens, in the context or the completion so
        far. Code repeats itself (names, call patterns, the suffix the completion runs
        into), and such a draft is often right for many tokens, at no model cost; a match
        shorter than config.min_match counts as none. Without one, "lookup" drafts nothing
        (the step is a 1-row AR step, the cheapest), and "diffusion" and "both" take the
        diffusion head's guesses from this step (there are none after a rejection: they
        were conditioned on the rejected token) and masks for the rest of the window,
        whose guesses the next step makes.
        """
        window = self.guess_window()
        if self.config.draft in ("lookup", "both"):
            history = np.concatenate([self.context_ids, np.asarray(self.tokens, dtype=np.int64)])
            found = lookup_draft(history, window, min_ngram=self.config.min_match)
            if found or self.config.draft == "lookup":
                self.draft, self.draft_masks = found, 0
                return
        self.draft = diffused[:window]
        self.draft_masks = window - len(self.draft)

    # diffusion blocks

    def start_block(self, anchor_logits: Optional[np.ndarray] = None) -> None:
        """A new all-masked block after the committed tokens (pending = the previous block).

        Anchoring (config.anchor): the block's first token is the AR head's choice at
        the clean token before it: from `anchor_logits` when already known (first
        block: the prefill's last row), else from the last pending row of the block's
        first step, which that step computes anyway. A weak diffusion head is often
        unsure *where* in the block a token goes (it predicts the next tokens shifted
        by one); the anchor pins the block's offset without an extra pass.
        """
        # Never start past the limit: the last block shrinks so max_tokens is exact.
        block_len = min(self.config.block_size, self.config.max_tokens - len(self.tokens))
        self.block = np.full(block_len, self.ids.mask_id, dtype=np.int64)
        self.masked = np.ones(block_len, dtype=np.bool_)
        self.block_conf = np.zeros(block_len, dtype=np.float64)
        self.block_steps = 0
        self.anchor_due = self.config.anchor
        if self.anchor_due and anchor_logits is not None:
            self.commit_anchor(anchor_logits)
            self.finish_block_if_done()

    def commit_anchor(self, ar_logits: np.ndarray) -> None:
        """Commit the block's first position from AR logits [1, vocab]."""
        if not self.tokens and self.block_steps <= 1:
            token, confidence = self.choose_first(ar_logits)
        else:
            chosen, conf = self.choose(ar_logits)
            token, confidence = int(chosen[0]), float(conf[0])
        self.block[0], self.block_conf[0], self.masked[0] = token, confidence, False
        self.anchor_due = False

    def finish_block_if_done(self) -> None:
        end = self.block_end()
        if end is None:
            return
        tokens = self.block[:end].tolist()
        self.steps_per_block.append(self.block_steps)
        self.accept(tokens, self.block_conf[:end].tolist())
        if not self.done:
            self.pending = tokens
            self.start_block()

    def block_end(self) -> Optional[int]:
        """Length of the finished block, or None while it still needs steps.

        Finished when nothing is masked, or earlier when a stop token is committed
        and every position before it is too: whatever follows it would be discarded,
        so denoising it is wasted passes.
        """
        masked = self.masked
        settled = int(np.argmax(masked)) if masked.any() else len(masked)
        for i in range(settled):
            if self.stop_kind(int(self.block[i]), first=i == 0 and not self.tokens) is not None:
                return i + 1
        return None if masked.any() else len(masked)

    def result(self, prefix: Prefix) -> DecodeResult:
        return DecodeResult(
            tokens=self.tokens,
            confidences=self.confidences,
            stop_reason=self.stop_reason,
            prefill_tokens=prefix.prefill_tokens,
            forward_passes=self.forward_passes,
            steps_per_block=self.steps_per_block if self.diffusion else [],
            cached_tokens=prefix.cached_tokens,
        )


def lookup_draft(history: np.ndarray, length: int, max_ngram: int = LOOKUP_NGRAM, min_ngram: int = 1) -> list[int]:
    """Prompt lookup: up to `length` tokens that followed the latest earlier occurrence of
    history's last n tokens, trying n = max_ngram first (a longer match predicts better)
    down to min_ngram; [] when no such match exists."""
    for n in range(min(max_ngram, len(history) - 1), min_ngram - 1, -1):
        tail = history[-n:]
        windows = np.lib.stride_tricks.sliding_window_view(history[:-1], n)
        hits = np.flatnonzero((windows == tail).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return history[start : start + length].tolist()
    return []


@dataclass
class _Ids:
    """The token ids every row needs: mask and eos, newline tokens, banned ids."""

    mask_id: int
    eos_id: int
    newline_tokens: Optional[np.ndarray]
    banned: np.ndarray


# --- the loop -------------------------------------------------------------------------------


def decode_rows(
    step: StepFunction,
    rows: Sequence[Row],
    *,
    mask_id: int,
    eos_id: int,
    newline_tokens: Optional[np.ndarray] = None,
    banned_ids: Sequence[int] = (),
    should_cancel: Optional[Callable[[], bool]] = None,
    deadline: Optional[float] = None,
) -> list[DecodeResult]:
    """Decode every row to its stop rule, all rows in one batched step call per step.

    Rows may come from different contexts and configs; each advances at its own pace
    (a diffusion row may start its next block while another still denoises), and a
    finished row leaves the batch. Greedy results equal decoding the rows one by one.
    The rows' contexts are copied into one batch cache (a single row with room decodes
    in its own buffer, after the context). should_cancel is checked
    before every step (True raises DecodeCancelled); at `deadline` (a time.monotonic()
    value) the rows still running stop with stop_reason "deadline" and keep the
    tokens of their finished blocks.
    """
    if not rows:
        return []
    vocab = len(rows[0].prefix.last_logits)
    needs_newlines = any(row.config.mode == "line" for row in rows)
    banned = np.array(sorted({mask_id, *banned_ids}), dtype=np.int64)
    ids = _Ids(mask_id, eos_id, _validate_newlines(newline_tokens, needs_newlines), banned)
    _check_vocab(ids, vocab)
    cache = _batch_cache(step, rows)
    states = [_RowState(row, ids) for row in rows]
    active = list(range(len(rows)))  # cache row i holds states[active[i]]
    while True:
        still = [i for i, s in enumerate(active) if not states[s].done]
        if not still:
            break
        if len(still) < len(active):
            cache.keep_rows(still)
            active = [active[i] for i in still]
        if should_cancel is not None and should_cancel():
            raise DecodeCancelled()
        if deadline is not None and time.monotonic() >= deadline:
            for s in active:
                states[s].stop_reason = "deadline"
            break
        inputs, n_clean = zip(*(states[s].inputs() for s in active))
        logits, kv = _run_step(step, cache, inputs, n_clean, append=False)
        known_good = [states[s].absorb(logits[i, : len(inputs[i])]) for i, s in enumerate(active)]
        cache.append(kv, known_good)
    return [state.result(row.prefix) for state, row in zip(states, rows)]


def _batch_cache(step: StepFunction, rows: Sequence[Row]) -> KVCache:
    """The cache the rows decode in: each row's context copied in, room for max_tokens more.

    A single row whose prefix buffer has room decodes in place (no copy): decoding
    writes only after the context, so the Prefix stays valid for its ids.
    """
    capacity = max(len(row.prefix.ids) + row.config.max_tokens for row in rows)
    if len(rows) == 1 and rows[0].prefix.cache.capacity >= capacity:
        cache = rows[0].prefix.cache
        cache.lengths[0] = len(rows[0].prefix.ids)
        return cache
    cache = new_cache(step, len(rows), capacity)
    for r, row in enumerate(rows):
        cache.copy_row_from(r, row.prefix.cache, 0, len(row.prefix.ids))
    return cache


def _check_vocab(ids: _Ids, vocab: int) -> None:
    for name, token in (("mask_id", ids.mask_id), ("eos_id", ids.eos_id)):
        if token >= vocab:
            raise ValueError(f"{name}={token} is outside the model's vocabulary of {vocab}")
    if ids.newline_tokens is not None and len(ids.newline_tokens) != vocab:
        raise ValueError(
            f"newline_tokens has {len(ids.newline_tokens)} entries, the model's vocabulary {vocab}"
        )


def _validate_newlines(newline_tokens, needed: bool) -> Optional[np.ndarray]:
    if not needed:
        return None
    if newline_tokens is None:
        raise ValueError('mode "line" needs newline_tokens (bool array over the vocabulary)')
    newline_tokens = np.asarray(newline_tokens)
    if newline_tokens.dtype != np.bool_ or newline_tokens.ndim != 1:
        raise ValueError("newline_tokens must be a 1-D boolean array over the vocabulary")
    return newline_tokens


def _validate_context(context_ids: Sequence[int], mask_id: int) -> np.ndarray:
    if not _is_int(mask_id) or mask_id < 0:
        raise ValueError(f"mask_id must be an integer >= 0, got {mask_id!r}")
    context = np.asarray(context_ids, dtype=np.int64)
    if context.ndim != 1 or len(context) == 0:
        raise ValueError("context_ids must be a non-empty 1-D sequence of token ids")
    if (context < 0).any():
        raise ValueError("context_ids must be >= 0")
    if (context == mask_id).any():
        # The context is prefilled as clean text and cached; a mask token there has no meaning.
        raise ValueError("context_ids must not contain the mask token")
    return context


def decode(
    step: StepFunction,
    context_ids: Sequence[int],
    config: DecodeConfig,
    *,
    mask_id: int,
    eos_id: int,
    newline_tokens: Optional[np.ndarray] = None,
    rng: Optional[np.random.Generator] = None,
    should_stop: Optional[Callable[[list[int]], bool]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    banned_ids: Sequence[int] = (),
) -> DecodeResult:
    """Generate the continuation of context_ids (laid out by the caller at positions 0..n-1).

    mask_id / eos_id: the tokenizer's special ids. newline_tokens: bool [vocab], True
    for tokens whose text contains a newline (needed in line mode). rng: used only
    when sampling (temperature > 0); a fresh unseeded one if omitted. should_stop:
    called with the tokens so far after every finished block (every token in AR
    mode); True ends decoding with stop_reason "callback". should_cancel: called
    before every step call, prefill included; True raises DecodeCancelled.
    banned_ids: tokens never committed (besides mask_id), e.g. the other special tokens.
    """
    for name, token in (("mask_id", mask_id), ("eos_id", eos_id)):
        if not _is_int(token) or token < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {token!r}")
    _validate_context(context_ids, mask_id)
    _validate_newlines(newline_tokens, config.mode == "line")
    context = prefill(step, context_ids, mask_id=mask_id, extra_capacity=config.max_tokens,
                      should_cancel=should_cancel)
    row = Row(context, config, rng=rng, should_stop=should_stop)
    return decode_rows(step, [row], mask_id=mask_id, eos_id=eos_id, newline_tokens=newline_tokens,
                       banned_ids=banned_ids, should_cancel=should_cancel)[0]
