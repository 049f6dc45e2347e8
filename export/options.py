"""Command-line options of `seed-lsp export`, kept torch-free so `seed-lsp --help` stays fast."""

from __future__ import annotations

import argparse


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder (model.safetensors, config.json, tokenizer.json)")
    parser.add_argument("--out", required=True, help="bundle folder to write (replaced if it is a bundle)")
    parser.add_argument("--variants", default="fp32,int8,fp16", help="comma-separated; fp32 is always written")
    parser.add_argument("--verify-jobs", type=int, default=20, help="infill jobs decoded per variant in the verification")
    parser.add_argument("--snippets", help="folder of .py files for verification jobs (default: the standard library)")
    parser.add_argument("--drop-fp32", action="store_true",
                        help="leave the fp32 graph out of the bundle after verifying (the shipped bundle is int8 only)")
    parser.add_argument("--no-verify", action="store_true", help="skip the verification against torch")
