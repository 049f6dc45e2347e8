"""`seed-lsp sample`: one infill from a torch checkpoint, through the engine's decode loop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from engine.decode import DecodeConfig, DecodeResult, decode
from engine.tokenizer import TextCodec
from model import checkpoint as ckpt
from model.network import DiffusionLM
from model.step import TorchStep


def infill(model: DiffusionLM, codec: TextCodec, prefix: str, suffix: str, mode: str = "line",
           block_size: int = 8, tau: float = 0.9, max_tokens: int = 64, device="cpu",
           temperature: float = 0.0, top_k: int = 0, seed: int = 0) -> tuple[str, DecodeResult]:
    """The middle text the model writes between `prefix` and `suffix`, and the decode counters.

    In line mode the text ends before the first newline (the rest of the line).
    """
    config = DecodeConfig(block_size=block_size, tau=tau, max_tokens=max_tokens, mode=mode,
                          temperature=temperature, top_k=top_k)
    was_training = model.training
    result = decode(TorchStep(model, device), codec.spm_context(prefix, suffix), config,
                    mask_id=codec.mask, eos_id=codec.eos, newline_tokens=codec.newline_tokens,
                    rng=np.random.default_rng(seed), banned_ids=codec.banned_ids)
    model.train(was_training)
    text = codec.decode(result.tokens)
    if mode == "line" and "\n" in text:
        text = text[: text.index("\n")]  # the newline token may carry the next line's indentation
    return text, result


def main(args: argparse.Namespace) -> int:
    folder = Path(args.checkpoint)
    if not ckpt.has_checkpoint(folder):
        raise SystemExit(f"error: {folder} holds no checkpoint (model.safetensors + config.json)")
    model = ckpt.load_model(folder)
    codec = TextCodec.from_file(folder / ckpt.TOKENIZER)
    text, result = infill(model, codec, args.prefix, args.suffix, args.mode, args.block_size, args.tau,
                          args.max_tokens, "cpu", args.temperature, args.top_k, args.seed)
    print(text)
    if args.stats:
        print(json.dumps({"tokens": len(result.tokens), "forward_passes": result.forward_passes,
                          "prefill_tokens": result.prefill_tokens, "stop_reason": result.stop_reason}))
    return 0
