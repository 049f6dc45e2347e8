"""Training-throughput benchmark (not a test): what one CPU training token costs, and where.

Runs the real training step of `seed-lsp train` (diffusion objective, fused AdamW,
the batch shape of the trainer's defaults) on real corpus batches, side by side
in one process for several variants, and prints tokens/s for each; `--profile`
adds a torch.profiler table of the most expensive ops of one variant. Stop any
background training first (kill -STOP) or the figures mean nothing.

    python bench/train_speed.py --corpus /work/data/corpus --variants compile,compile-fp32,eager --steps 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.tokenizer import load_tokenizer  # noqa: E402
from model import checkpoint as ckpt  # noqa: E402
from model.corpus import load_split  # noqa: E402
from model.data import SampleSource, make_batch  # noqa: E402
from model.ship import trainer_batch_shape  # noqa: E402
from model.tokenizer import DEFAULT_TOKENIZER  # noqa: E402
from model.train import ATTENTION_CHUNKS, diffusion_objective, head_cross_entropy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def variant_settings(name: str) -> dict:
    """'compile' or 'eager', with '-fp32' for no bf16 autocast, '-eagerce' for an eager head
    and loss under compile, '-cN' for N attention query chunks (1 = full mask) and '-bN' for
    block size N."""
    parts = name.split("-")
    settings = {"compile": parts[0] == "compile", "bf16": True, "ce": True, "block": 8,
                "chunks": ATTENTION_CHUNKS, "name": name}
    for part in parts[1:]:
        if part == "fp32":
            settings["bf16"] = False
        elif part == "eagerce":
            settings["ce"] = False
        elif part.startswith("c") and part[1:].isdigit():
            settings["chunks"] = int(part[1:])
        elif part.startswith("b") and part[1:].isdigit():
            settings["block"] = int(part[1:])
        else:
            raise SystemExit(f"error: unknown variant part {part!r} in {name!r}")
    return settings


def run_variant(settings: dict, checkpoint: Path, batches, steps: int, profile: bool) -> float:
    """Tokens/s of `steps` training steps after two warm-up steps (compilation happens there)."""
    model = ckpt.load_model(checkpoint, torch.device("cpu")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    hidden_fn = torch.compile(model.hidden_states) if settings["compile"] else model.hidden_states
    ce_fn = head_cross_entropy(model, settings["compile"] and settings["ce"])
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def one_step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings["bf16"]):
            loss, _ = diffusion_objective(model, hidden_fn, batch, settings["block"], 0.0, gen, rng, ce_fn,
                                          attention_chunks=settings["chunks"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[:2]:
        one_step(batch)
    timed = batches[2 : 2 + steps]
    started = time.perf_counter()
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for batch in timed:
                one_step(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    else:
        for batch in timed:
            one_step(batch)
    seconds = time.perf_counter() - started
    return sum(b.n_tokens for b in timed) / seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="folder written by `seed-lsp corpus build`")
    p.add_argument("--checkpoint", default=str(ROOT / "model" / "default"), help="weights to train from")
    p.add_argument("--variants", default="compile,compile-fp32", help="comma list, e.g. compile,eager,compile-fp32,compile-b16")
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    p.add_argument("--profile", default="", help="variant to profile (op table)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    shape = trainer_batch_shape(1)
    seq_len, batch_size, fim_rate = shape.seq_len, shape.batch_size, shape.fim_rate
    tokenizer = load_tokenizer(Path(DEFAULT_TOKENIZER))
    tokens, offsets = load_split(Path(args.corpus), "train")
    source = SampleSource(tokens, offsets, tokenizer, seq_len, fim_rate, seed=1)
    batches = [make_batch(source, batch_size, seq_len) for _ in range(args.steps + 2)]
    print(f"batch {batch_size} x {seq_len}, threads {torch.get_num_threads()}, torch {torch.__version__}")
    for name in args.variants.split(","):
        settings = variant_settings(name)
        rate = run_variant(settings, Path(args.checkpoint), batches, args.steps, args.profile == name)
        print(f"{name:>20}: {rate:,.0f} training tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
