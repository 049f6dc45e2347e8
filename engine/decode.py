"""The decode loop: turns a model's step function into a completion.

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

Logit semantics: at a clean input position i the logits predict token i + 1
(AR head); at a mask-token position i they predict the token at i (diffusion head).

numpy only: never import torch or onnxruntime here.
"""

from __future__ import annotations

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
    "build_attention_mask",
    "choose_tokens",
    "decode",
]

# Per layer (key, value), each [1, kv_heads, positions, head_dim].
KV = list[tuple[np.ndarray, np.ndarray]]

MODES = ("line", "block")
STOP_REASONS = ("eos", "newline", "max_tokens", "callback")


class StepFunction(Protocol):
    """One forward pass of the model over q new positions.

    input_ids, position_ids: int64 [1, q]. attention_mask: bool [1, 1, q, past_len + q],
    True where the row may attend to the column (cache columns first, then the q
    inputs). past: the cached keys/values, [] before the first call. Returns
    logits float32 [1, q, vocab] and the keys/values of the q inputs only.
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
    # "line": also stop at the first token containing a newline; "block": eos, cap, callback.
    mode: str = "line"
    # 0 = greedy and deterministic; > 0 samples from softmax(logits / temperature).
    temperature: float = 0.0
    # When sampling, draw only among the k most likely tokens; 0 = no restriction.
    top_k: int = 0
    # Diffusion: each block's first token is the AR head's choice at the clean token before it.
    anchor: bool = True

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


@dataclass
class DecodeResult:
    """What one decode produced, and what it cost."""

    tokens: list[int]  # committed tokens in order (eos excluded; a stopping newline token included)
    confidences: list[float]  # probability of each token when it was committed, aligned with tokens
    stop_reason: str  # one of STOP_REASONS
    prefill_tokens: int  # context tokens forwarded by the prefill
    forward_passes: int  # step calls after the prefill
    # Diffusion mode only (empty for block_size 1); sums to forward_passes.
    steps_per_block: list[int] = field(default_factory=list)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --- attention mask and KV cache ------------------------------------------------------------


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


class KVCache:
    """Keys/values of committed (clean) positions only; noisy positions are never cached.

    Buffers are allocated once, at the largest size one decode can reach, so an
    append writes only the new positions (concatenating would copy the whole cache
    every token in AR mode). past() returns views of the filled part: they are
    strided on the position axis; a runtime that needs contiguous inputs copies them.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self._layers: Optional[KV] = None

    def past(self) -> KV:
        if self._layers is None:
            return []
        n = self.length
        return [(k[:, :, :n], v[:, :, :n]) for k, v in self._layers]

    def append(self, kv: KV, count: int) -> None:
        """Cache the first `count` positions of a step's kv (clean rows always come first)."""
        if count == 0:
            return
        if self._layers is None:
            self._layers = [(self._buffer_like(k), self._buffer_like(v)) for k, v in kv]
        if len(kv) != len(self._layers):
            raise ValueError(
                f"step returned {len(kv)} layers of kv, the cache has {len(self._layers)}"
            )
        if self.length + count > self.capacity:
            raise RuntimeError(f"KV cache overflow: {self.length} + {count} > {self.capacity}")
        end = self.length + count
        for (keys, values), (k, v) in zip(self._layers, kv):
            keys[:, :, self.length : end] = k[:, :, :count]
            values[:, :, self.length : end] = v[:, :, :count]
        self.length = end

    def _buffer_like(self, x: np.ndarray) -> np.ndarray:
        batch, heads, _, head_dim = x.shape
        return np.empty((batch, heads, self.capacity, head_dim), dtype=x.dtype)


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


# --- the loop -------------------------------------------------------------------------------


def _check_step_output(logits: np.ndarray, kv: KV, q: int) -> None:
    """Fail loudly on a step function that breaks the contract, before it corrupts the cache."""
    if logits.ndim != 3 or logits.shape[:2] != (1, q):
        raise ValueError(f"step returned logits of shape {logits.shape}, expected (1, {q}, vocab)")
    for key, value in kv:
        if key.shape[2] != q or value.shape[2] != q:
            raise ValueError(
                f"step returned kv for {key.shape[2]} positions, expected {q} (the inputs only)"
            )


class _Decoder:
    """State of one decode: the cache, the committed tokens and the counters."""

    def __init__(
        self,
        step: StepFunction,
        context: np.ndarray,
        config: DecodeConfig,
        mask_id: int,
        eos_id: int,
        newline_tokens: Optional[np.ndarray],
        rng: Optional[np.random.Generator],
        should_stop: Optional[Callable[[list[int]], bool]],
        should_cancel: Optional[Callable[[], bool]],
        banned_ids: Sequence[int] = (),
    ):
        self.step = step
        self.banned = np.array(sorted({mask_id, *banned_ids}), dtype=np.int64)
        self.context = context
        self.config = config
        self.mask_id = mask_id
        self.eos_id = eos_id
        self.newline_tokens = newline_tokens if config.mode == "line" else None
        self.rng = rng
        self.should_stop = should_stop
        self.should_cancel = should_cancel
        # Upper bound on cached positions: the context plus every token we may return.
        self.cache = KVCache(len(context) + config.max_tokens)
        self.step_calls = 0
        self.tokens: list[int] = []
        self.confidences: list[float] = []
        self.steps_per_block: list[int] = []

    def run(self) -> DecodeResult:
        last_logits = self.prefill()
        if self.config.block_size == 1:
            stop_reason = self.run_autoregressive(last_logits)
        else:
            stop_reason = self.run_blocks(last_logits[-1:])
        return DecodeResult(
            tokens=self.tokens,
            confidences=self.confidences,
            stop_reason=stop_reason,
            prefill_tokens=len(self.context),
            forward_passes=self.step_calls - 1,
            steps_per_block=self.steps_per_block,
        )

    def forward(self, input_ids: np.ndarray, n_clean: int, n_block: int) -> np.ndarray:
        """One step call at the next free positions; caches its clean rows; returns logits [q, V]."""
        if self.should_cancel is not None and self.should_cancel():
            raise DecodeCancelled()
        past_len = self.cache.length
        q = n_clean + n_block
        # Every uncached committed token is in this call, so positions continue the cache.
        positions = np.arange(past_len, past_len + q, dtype=np.int64)[None]
        mask = build_attention_mask(past_len, n_clean, n_block)
        ids = np.asarray(input_ids, dtype=np.int64)[None]
        logits, kv = self.step(ids, positions, mask, self.cache.past())
        self.step_calls += 1
        _check_step_output(logits, kv, q)
        self.cache.append(kv, n_clean)
        return logits[0]

    def prefill(self) -> np.ndarray:
        """Forward the whole context causally and cache it; returns its logits [n, vocab]."""
        logits = self.forward(self.context, n_clean=len(self.context), n_block=0)
        self.check_vocab(logits.shape[-1])
        return logits

    def check_vocab(self, vocab: int) -> None:
        for name, token in (("mask_id", self.mask_id), ("eos_id", self.eos_id)):
            if token >= vocab:
                raise ValueError(f"{name}={token} is outside the model's vocabulary of {vocab}")
        if self.newline_tokens is not None and len(self.newline_tokens) != vocab:
            raise ValueError(
                f"newline_tokens has {len(self.newline_tokens)} entries, "
                f"the model's vocabulary {vocab}"
            )

    def choose(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and confidences for rows of logits; never the mask token nor a banned id.

        A committed mask token would be read back as "still noisy" by the model and
        is never meaningful text, so it is banned before choosing; callers ban the
        other special tokens (bos, fim markers, pad) the same way.
        """
        logits = np.array(logits, dtype=np.float64)
        logits[:, self.banned] = -np.inf
        return choose_tokens(logits, self.config.temperature, self.config.top_k, self.rng)

    def stop_kind(self, token: int) -> Optional[str]:
        if token == self.eos_id:
            return "eos"
        if self.newline_tokens is not None and self.newline_tokens[token]:
            return "newline"
        return None

    def accept(self, tokens: Sequence[int], confidences: Sequence[float]) -> Optional[str]:
        """Append a finished block to the output; return why decoding stops, or None to go on."""
        for token, confidence in zip(tokens, confidences):
            kind = self.stop_kind(token)
            if kind == "eos":
                return "eos"  # eos ends the text and is not part of it
            self.tokens.append(int(token))
            self.confidences.append(float(confidence))
            if kind == "newline":
                return "newline"  # kept: the caller cuts the text inside this token
        # The callback first: a content stop (e.g. a dedent) tells the caller more than the limit.
        if self.should_stop is not None and self.should_stop(list(self.tokens)):
            return "callback"
        if len(self.tokens) >= self.config.max_tokens:
            return "max_tokens"
        return None

    # AR mode

    def run_autoregressive(self, prefill_logits: np.ndarray) -> str:
        """Exact next-token decoding with the clean head: one committed token per pass."""
        next_logits = prefill_logits[-1:]
        while True:
            tokens, confidences = self.choose(next_logits)
            stop_reason = self.accept(tokens[:1], confidences[:1])
            if stop_reason is not None:
                return stop_reason
            next_logits = self.forward(tokens[:1], n_clean=1, n_block=0)

    # diffusion mode

    def run_blocks(self, prefill_logits: np.ndarray) -> str:
        pending: list[int] = []  # committed tokens of the previous block, not cached yet
        anchor_logits: Optional[np.ndarray] = prefill_logits  # AR logits for the first block's first token
        while True:
            # Never start past the limit: the last block shrinks so max_tokens is exact.
            block_len = min(self.config.block_size, self.config.max_tokens - len(self.tokens))
            tokens, confidences, steps = self.denoise_block(pending, block_len, anchor_logits)
            anchor_logits = None  # later blocks get theirs from their first (fused) step
            self.steps_per_block.append(steps)
            stop_reason = self.accept(tokens, confidences)
            if stop_reason is not None:
                return stop_reason
            pending = tokens

    def denoise_block(
        self, pending: list[int], block_len: int, anchor_logits: Optional[np.ndarray] = None
    ) -> tuple[list[int], list[float], int]:
        """Denoise one block from all-masked; returns its tokens (up to a stop), confidences, steps.

        The first step also carries `pending` as causal clean rows, which caches the
        previous block without a pass of its own.

        Anchoring (config.anchor): the block's first token is the AR head's choice at
        the clean token before it: from `anchor_logits` when the caller already has
        them (first block: the prefill's last row), else from the last pending row of
        the first step, which that step computes anyway. A weak diffusion head is often
        unsure *where* in the block a token goes (it predicts the next tokens shifted
        by one); the anchor pins the block's offset without an extra pass.
        """
        tokens = np.full(block_len, self.mask_id, dtype=np.int64)
        masked = np.ones(block_len, dtype=np.bool_)
        confidences = np.zeros(block_len, dtype=np.float64)
        anchor = self.config.anchor
        if anchor and anchor_logits is not None:
            self.commit_anchor(anchor_logits, tokens, masked, confidences)
            anchor = False
            end = self.block_end(tokens, masked)
            if end is not None:  # the anchor alone finished the block (a stop token, or one slot)
                return tokens[:end].tolist(), confidences[:end].tolist(), 0
        steps = 0
        while True:
            n_pending = len(pending)
            input_ids = np.concatenate([np.asarray(pending, dtype=np.int64), tokens])
            logits = self.forward(input_ids, n_clean=n_pending, n_block=block_len)
            pending = []  # cached by that call
            steps += 1

            progressed = False
            if anchor and n_pending:
                self.commit_anchor(logits[n_pending - 1:n_pending], tokens, masked, confidences)
                anchor, progressed = False, True
            rows = np.flatnonzero(masked)
            if len(rows):
                chosen, confidence = self.choose(logits[-block_len:][rows])
                commit = confidence >= self.config.tau
                if not progressed:
                    commit[np.argmax(confidence)] = True  # progress is guaranteed: at least one per step
                tokens[rows[commit]] = chosen[commit]
                confidences[rows[commit]] = confidence[commit]
                masked[rows[commit]] = False

            end = self.block_end(tokens, masked)
            if end is not None:
                return tokens[:end].tolist(), confidences[:end].tolist(), steps

    def commit_anchor(self, ar_logits: np.ndarray, tokens: np.ndarray, masked: np.ndarray, confidences: np.ndarray) -> None:
        """Commit the block's first position from AR logits [1, vocab]."""
        chosen, confidence = self.choose(ar_logits)
        tokens[0], confidences[0], masked[0] = chosen[0], confidence[0], False

    def block_end(self, tokens: np.ndarray, masked: np.ndarray) -> Optional[int]:
        """Length of the finished block, or None while it still needs steps.

        Finished when nothing is masked, or earlier when a stop token is committed
        and every position before it is too: whatever follows it would be discarded,
        so denoising it is wasted passes.
        """
        settled = int(np.argmax(masked)) if masked.any() else len(tokens)
        for i in range(settled):
            if self.stop_kind(int(tokens[i])) is not None:
                return i + 1
        return None if masked.any() else len(tokens)


def _validate_ids(
    context_ids: Sequence[int], mask_id: int, eos_id: int, newline_tokens, mode: str
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    for name, token in (("mask_id", mask_id), ("eos_id", eos_id)):
        if not _is_int(token) or token < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {token!r}")
    context = np.asarray(context_ids, dtype=np.int64)
    if context.ndim != 1 or len(context) == 0:
        raise ValueError("context_ids must be a non-empty 1-D sequence of token ids")
    if (context < 0).any():
        raise ValueError("context_ids must be >= 0")
    if (context == mask_id).any():
        # The context is prefilled as clean text and cached; a mask token there has no meaning.
        raise ValueError("context_ids must not contain the mask token")
    if mode == "line":
        if newline_tokens is None:
            raise ValueError('mode "line" needs newline_tokens (bool array over the vocabulary)')
        newline_tokens = np.asarray(newline_tokens)
        if newline_tokens.dtype != np.bool_ or newline_tokens.ndim != 1:
            raise ValueError("newline_tokens must be a 1-D boolean array over the vocabulary")
    return context, newline_tokens


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
    context, newline_tokens = _validate_ids(
        context_ids, mask_id, eos_id, newline_tokens, config.mode
    )
    if config.temperature > 0.0 and rng is None:
        rng = np.random.default_rng()
    decoder = _Decoder(
        step, context, config, mask_id, eos_id, newline_tokens, rng, should_stop, should_cancel, banned_ids
    )
    return decoder.run()
