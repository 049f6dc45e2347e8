"""The transformer: RoPE, RMSNorm, SwiGLU, no biases, tied embeddings, no time input.

One readable file in the spirit of nanoGPT. The forward pass takes an explicit
boolean attention mask (the caller decides causal vs. block-bidirectional and
padding) and an optional cache of past keys/values, and returns the logits and
the keys/values of the *input* positions only: the caller owns the cache. This is
exactly the ONNX contract of DESIGN.md, so the exporter traces this module as is.

Logits mean two things, by input: at a clean token they predict the next token
(autoregressive head), at a mask token they predict the token at that position
(diffusion head). The same weights therefore serve as the AR baseline.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import ChunkedMask

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ModelConfig:
    vocab_size: int = 12_288   # tokenizer entries, special tokens included
    d_model: int = 384         # residual stream width
    n_layers: int = 6          # transformer blocks
    n_heads: int = 6           # query heads; head_dim = d_model // n_heads
    n_kv_heads: int = 6        # key/value heads (< n_heads means grouped-query attention, a smaller cache)
    ffn_hidden: int = 1_024    # SwiGLU inner width (about 8/3 d_model, rounded to 64)
    rope_theta: float = 10_000.0  # RoPE base; positions are token indices
    norm_eps: float = 1e-6     # RMSNorm epsilon
    max_context: int = 2_048   # longest context (past + query) the engine will build
    init_std: float = 0.02     # weight init scale; residual outputs are scaled by 1/sqrt(2 n_layers)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> "ModelConfig":
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"bad head layout: d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError("RoPE needs an even head_dim")
        return self

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        return cls(**json.loads(Path(path).read_text())).validate()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out (not F.rms_norm) so the ONNX graph needs no opset-23 operator.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


def rope_tables(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [batch, 1, q, head_dim] for the given absolute positions."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, mask, past: KV | None) -> tuple[torch.Tensor, KV]:
        b, q, _ = x.shape
        queries = self.wq(x).view(b, q, self.n_heads, self.head_dim).transpose(1, 2)
        keys = self.wk(x).view(b, q, self.n_kv_heads, self.head_dim).transpose(1, 2)
        values = self.wv(x).view(b, q, self.n_kv_heads, self.head_dim).transpose(1, 2)
        queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)
        new_kv = (keys, values)
        if past is not None:
            out = attend_with_past(queries, keys, values, past[0].to(keys.dtype), past[1].to(values.dtype), mask)
        elif isinstance(mask, ChunkedMask):
            out = chunked_attention(queries, self._repeat(keys), self._repeat(values), mask)
        else:
            out = F.scaled_dot_product_attention(queries, self._repeat(keys), self._repeat(values), attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(b, q, -1)), new_kv

    def _repeat(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped-query attention: each key/value head serves n_heads / n_kv_heads query heads."""
        if self.n_kv_heads == self.n_heads:
            return x
        return x.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)


def chunked_attention(queries, keys, values, mask: ChunkedMask) -> torch.Tensor:
    """Training attention chunk by chunk: each query chunk against only the keys it may see."""
    outs = []
    for chunk in mask.chunks:
        keys_c = torch.cat([keys[:, :, a:b] for a, b in chunk.key_ranges], dim=2)
        values_c = torch.cat([values[:, :, a:b] for a, b in chunk.key_ranges], dim=2)
        outs.append(F.scaled_dot_product_attention(queries[:, :, chunk.start:chunk.end], keys_c, values_c,
                                                   attn_mask=chunk.mask))
    return torch.cat(outs, dim=2)


def attend_with_past(queries, keys, values, past_keys, past_values, mask) -> torch.Tensor:
    """Attention over [past ++ new] without concatenating the past: the inference path.

    The engine passes its whole preallocated cache as the past at every step;
    concatenating it with the new keys/values copies all of it, per layer and step
    (a sixth of a decode step on a CPU). Scoring the past and the new positions
    separately and concatenating only the scores (q columns wide, not the cache)
    gives the same result. Masked scores become the dtype's lowest value, not -inf:
    no NaN even for a row that sees nothing, and 0 x garbage never meets a NaN.
    Grouped-query attention without repeating keys/values either: the query heads
    that share a key/value head are stacked along the query axis, so one matmul
    serves the group.
    """
    b, n_heads, q, head_dim = queries.shape
    n_kv = keys.shape[1]
    group = n_heads // n_kv
    stacked = queries.reshape(b, n_kv, group * q, head_dim)  # head h uses key/value head h // group
    scale = head_dim ** -0.5
    scores = torch.cat([stacked @ past_keys.transpose(-1, -2), stacked @ keys.transpose(-1, -2)], dim=-1) * scale
    scores = scores.reshape(b, n_kv, group, q, scores.shape[-1])
    scores = torch.where(mask[:, :, None], scores, torch.finfo(scores.dtype).min)  # mask: [b, 1, 1, q, past + q]
    probs = torch.softmax(scores.float(), dim=-1).to(queries.dtype).reshape(b, n_kv, group * q, -1)
    n_past = past_keys.shape[2]
    out = probs[..., :n_past] @ past_values + probs[..., n_past:] @ values
    return out.reshape(b, n_heads, q, head_dim)


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg)

    def forward(self, x, cos, sin, mask, past):
        h, new_kv = self.attn(self.attn_norm(x), cos, sin, mask, past)
        x = x + h
        return x + self.ffn(self.ffn_norm(x)), new_kv


class DiffusionLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.apply(self._init_weights)
        residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.wo.weight, std=residual_std)
            nn.init.normal_(block.ffn.down.weight, std=residual_std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,           # int64 [batch, q]
        position_ids: torch.Tensor,        # int64 [batch, q]
        attention_mask: torch.Tensor,      # bool  [batch, 1, q, past + q]
        past_key_values: list[KV] | None = None,  # per layer, [batch, kv_heads, past, head_dim]
    ) -> tuple[torch.Tensor, list[KV]]:
        hidden, new_kvs = self.hidden_states(input_ids, position_ids, attention_mask, past_key_values)
        return self.head(hidden), new_kvs

    def hidden_states(self, input_ids, position_ids, attention_mask, past_key_values=None) -> tuple[torch.Tensor, list[KV]]:
        """Final normalised hidden states; training applies `head` only where a loss needs it."""
        x = self.embed(input_ids)
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        new_kvs = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, attention_mask, past_key_values[i] if past_key_values else None)
            new_kvs.append(kv)
        return self.norm(x), new_kvs

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from hidden states; the output matrix is the embedding (tied)."""
        return F.linear(hidden, self.embed.weight)
