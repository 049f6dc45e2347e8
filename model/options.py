"""Command-line options of `seed-lsp train` and `seed-lsp sample` (torch-free, so `--help` is fast)."""

from __future__ import annotations

import argparse


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=("ar", "diffusion", "edit"), required=True,
                   help="curriculum stage: ar (next token), diffusion (block diffusion + next token), edit (adds edit corruption)")
    p.add_argument("--corpus", required=True, help="folder written by `seed-lsp corpus build`")
    p.add_argument("--out", required=True, help="checkpoint folder; resumed when it holds a checkpoint")
    p.add_argument("--init", help="checkpoint to start from when --out holds none (e.g. the committed one)")
    p.add_argument("--tokenizer", help="tokenizer.json (default: model/tokenizer.json)")
    p.add_argument("--tokens", type=float, default=20e6, help="token budget of this stage (sets the LR schedule)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this much wall-clock; 0 = no limit")
    p.add_argument("--max-steps", type=int, default=0, help="stop (and save) after this step; 0 = no limit")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per packed row")
    p.add_argument("--batch-size", type=int, default=8, help="rows per step")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a share of the peak")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--block-sizes", default="4,8,16", help="diffusion block sizes, one drawn per step")
    p.add_argument("--edit-rate", type=float, default=0.1, help="edit stage: most tokens edited per row (share)")
    p.add_argument("--fim-rate", type=float, default=0.9, help="share of samples in suffix-prefix-middle layout")
    p.add_argument("--eval-every", type=int, default=200, help="steps between validations")
    p.add_argument("--eval-batches", type=int, default=8, help="held-out batches per validation")
    p.add_argument("--samples", type=int, default=3, help="held-out infills printed per validation")
    p.add_argument("--save-minutes", type=float, default=5, help="minutes between checkpoints")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="autocast dtype; auto = bf16 where the hardware computes it natively (CUDA, "
                        "AMX or AVX512-BF16 CPUs), else fp32")
    p.add_argument("--no-bf16", dest="precision", action="store_const", const="fp32", help="same as --precision fp32")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--workers", type=int, default=0, help="data loader processes (0 = in the training process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=384, help="new model only: width")
    p.add_argument("--n-layers", type=int, default=6, help="new model only: blocks")
    p.add_argument("--n-heads", type=int, default=6, help="new model only: query heads")
    p.add_argument("--n-kv-heads", type=int, default=0, help="new model only: key/value heads (0 = n-heads)")
    p.add_argument("--ffn-hidden", type=int, default=0, help="new model only: SwiGLU width (0 = 8/3 d-model rounded to 64)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs still written)")
    p.add_argument("--log-every", type=int, default=50, help="steps between training-loss log lines")


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--prefix", default="", help="code before the cursor")
    p.add_argument("--suffix", default="", help="code after the cursor")
    p.add_argument("--mode", choices=("line", "block"), default="line")
    p.add_argument("--block-size", type=int, default=8, help="1 = autoregressive on the same weights")
    p.add_argument("--tau", type=float, default=0.9, help="commit threshold on token probability")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats", action="store_true", help="also print decoding counters")
