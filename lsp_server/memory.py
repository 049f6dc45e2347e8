"""The out-of-memory guard: how much KV cache one request can need, checked before it runs.

Keys and values are float32 [rows, kv_heads, positions, head_dim] per layer
(engine.decode.KVCache). A request's working cache holds, per candidate row, the
whole context plus the tokens it may generate; with several candidates the
prefilled context is one more row (it is copied into the batch). Code actions
decode at least 3 candidates (lsp_server.repair). A configuration whose worst
request needs more than `kvLimitMb` is refused before any request runs, with the
arithmetic in the message, rather than discovered as a MemoryError (or the OOM
killer) in the middle of the user's typing.

Pure functions: the model's dimensions come in as numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MARKERS = 4  # <bos> <fim_suffix> <fim_prefix> <fim_middle>
FLOAT32 = 4
REPAIR_MIN_CANDIDATES = 3  # lsp_server.repair decodes at least this many for a quick fix
MB = 2**20


@dataclass(frozen=True)
class Dims:
    """What a KV cache entry costs: from the bundle's architecture."""

    n_layers: int
    n_kv_heads: int
    head_dim: int

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * FLOAT32  # keys and values


@dataclass(frozen=True)
class KvNeed:
    """The worst request under a configuration."""

    rows: int
    positions: int
    bytes: int

    def explain(self, dims: Dims) -> str:
        return (f"{self.rows} rows x {self.positions} positions x {dims.n_layers} layers x {dims.n_kv_heads} KV heads "
                f"x {dims.head_dim} head dims x 2 (keys, values) x {FLOAT32} bytes = {self.bytes / MB:.1f} MB")


def dims_of(engine) -> Optional[Dims]:
    """The dimensions of a loaded engine's step function (None if it does not say)."""
    step = getattr(engine, "step", None)
    try:
        return Dims(int(step.n_layers), int(step.n_kv_heads), int(step.head_dim))
    except (AttributeError, TypeError, ValueError):
        return None


def request_need(dims: Dims, context_tokens: int, settings, batch: int = 1) -> KvNeed:
    """KV bytes of the largest request the settings allow (context_tokens: prefix + suffix budget)."""
    new_tokens = max(settings.max_tokens_line, settings.max_tokens_block)
    candidates = max(settings.n, REPAIR_MIN_CANDIDATES if settings.code_actions else 1)
    # One candidate decodes in its prefill buffer; several get a batch cache beside the prefix.
    rows = batch * (candidates + 1 if candidates > 1 else 1)
    positions = context_tokens + MARKERS + new_tokens
    return KvNeed(rows, positions, rows * positions * dims.bytes_per_token)


def check(dims: Optional[Dims], context_tokens: int, settings) -> Optional[str]:
    """None if the settings fit settings.kv_limit_mb, else the message refusing them."""
    if dims is None:
        return None
    need = request_need(dims, context_tokens, settings)
    limit = settings.kv_limit_mb * MB
    if need.bytes <= limit:
        return None
    return (f"configuration refused: one request would need {need.bytes / MB:.1f} MB of KV cache "
            f"({need.explain(dims)}), above kvLimitMb={settings.kv_limit_mb:g}; lower n, maxTokensBlock, "
            f"prefixTokens or suffixTokens, or raise kvLimitMb")
