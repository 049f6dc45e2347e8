"""`seed-lsp complete FILE:LINE:COL`: the main job from the command line.

Reads the file, splits it at the position (1-based line and column, columns in
characters), runs the engine on the bundled (or given) model, and prints the
completion, or one JSON object with the completions and the job's counters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_FILE_BYTES = 20 * 2**20  # larger files are refused: nobody edits them by hand


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def add_complete_arguments(p: argparse.ArgumentParser) -> None:
    from engine.decode import DRAFTS, LOOKUP_NGRAM, DecodeConfig  # numpy only: the defaults live there

    p.add_argument("location", help="FILE:LINE:COL, 1-based; COL counts characters, COL = len(line)+1 is the end")
    p.add_argument("--mode", choices=("auto", "line", "block"), default="auto",
                   help="line: the rest of the line; block: several lines; auto: block where a body is expected")
    p.add_argument("--n", type=int, default=1, help="candidates, decoded in one batch")
    p.add_argument("--decoder", choices=("verify", "diffusion"), default=None,
                   help="verify: drafts (--draft) checked by the AR head, exactly the text of "
                        "--block-size 1 in fewer forward passes; diffusion: block diffusion with --block-size and "
                        "--tau (default: verify, or diffusion when --block-size, --tau or --temperature is given)")
    p.add_argument("--draft", choices=DRAFTS, default=DecodeConfig.draft,
                   help="verify: where drafts come from (lookup = text that followed the same tokens earlier; "
                        "both = lookup, else the diffusion head)")
    p.add_argument("--min-match", type=int, default=DecodeConfig.min_match,
                   help=f"verify: a lookup draft needs an earlier occurrence of this many last tokens (1-{LOOKUP_NGRAM})")
    p.add_argument("--draft-tokens", type=int, default=4, help="verify: tokens guessed per forward pass")
    p.add_argument("--block-size", type=int, default=None, help="diffusion block; 1 = autoregressive (default: the bundle's)")
    p.add_argument("--tau", type=float, default=None, help="diffusion commit threshold (default: the bundle's)")
    p.add_argument("--max-tokens", type=int, default=None, help="token limit (default 24 in line mode, 64 in block mode)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the bundled model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--variant", choices=("fp32", "int8", "fp16"), default=None, help="default: int8 on CPU, fp16 on CUDA")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_location(location: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL -> (path, line, col); FILE may itself contain colons."""
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise UsageError(f"location {location!r} is not FILE:LINE:COL")
    try:
        line, col = int(parts[1]), int(parts[2])
    except ValueError:
        raise UsageError(f"location {location!r}: LINE and COL must be integers") from None
    if line < 1 or col < 1:
        raise UsageError(f"location {location!r}: LINE and COL start at 1")
    return Path(parts[0]), line, col


def read_document(path: Path) -> str:
    """The file's text; undecodable bytes become U+FFFD with a warning (never a crash)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: {size / 2**20:.1f} MB is larger than the {MAX_FILE_BYTES // 2**20} MB limit")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        print(f"warning: {path} is not valid UTF-8 (byte {exc.start}); bad bytes read as U+FFFD", file=sys.stderr)
        return data.decode("utf-8", errors="replace")


def split_at(text: str, line: int, col: int, name: str = "file") -> tuple[str, str]:
    """(prefix, suffix) of text at a 1-based line and character column; clear error past the end."""
    lines = text.split("\n")
    if line > len(lines):
        raise UsageError(f"{name}: line {line} is past the end (the file has {len(lines)} lines)")
    current = lines[line - 1].rstrip("\r")
    if col > len(current) + 1:
        raise UsageError(f"{name}:{line}: column {col} is past the end of the line ({len(current)} characters)")
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def choose_decoder(args: argparse.Namespace) -> str:
    """--decoder, else verify unless diffusion-only options (or sampling) were asked for."""
    diffusion_options = args.block_size is not None or args.tau is not None or args.temperature > 0
    decoder = args.decoder or ("diffusion" if diffusion_options else "verify")
    if decoder == "verify" and args.temperature > 0:
        raise UsageError("--decoder verify is greedy (it keeps what the AR head would choose): "
                         "drop --temperature or use --decoder diffusion")
    if decoder == "verify" and args.block_size == 1:
        return "diffusion"  # --block-size 1 is the autoregressive baseline either way
    return decoder


def run(args: argparse.Namespace) -> dict:
    from engine.decode import DecodeConfig
    from engine.engine import Engine, Job
    from engine.jobs import choose_mode

    path, line, col = parse_location(args.location)
    prefix, suffix = split_at(read_document(path), line, col, str(path))
    engine = Engine.from_bundle(args.bundle, device=args.device, variant=args.variant, threads=args.threads)
    mode = choose_mode(prefix, suffix) if args.mode == "auto" else args.mode
    defaults = engine.info.get("decode_defaults", {})
    decoder = choose_decoder(args)
    verify = decoder == "verify"
    try:
        config = DecodeConfig(
            block_size=args.draft_tokens if verify else args.block_size or defaults.get("block_size", 8),
            tau=args.tau if args.tau is not None else defaults.get("tau", 0.9),
            max_tokens=args.max_tokens or (24 if mode == "line" else 64),
            mode=mode,
            temperature=args.temperature,
            verify=verify,
            draft=args.draft,
            min_match=args.min_match,
        )
        job = Job(prefix, suffix, config, n=args.n, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = engine.complete(job)[0]
    s = result.stats
    return {
        "completions": [c.text for c in result.completions],
        "stop_reasons": [c.stop_reason for c in result.completions],
        "mode": mode,
        "decoder": "autoregressive" if config.block_size == 1 else decoder,
        "prefill_tokens": s.prefill_tokens,
        "cached_tokens": s.cached_tokens,
        "forward_passes": s.forward_passes,
        "tokens": s.tokens,
        "ms": s.ms,
        "provider": engine.info.get("provider"),
        "variant": engine.info.get("variant"),
    }


def main(args: argparse.Namespace) -> int:
    from engine.bundle import BundleError

    try:
        out = run(args)
    except (UsageError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        for i, text in enumerate(out["completions"]):
            if len(out["completions"]) > 1:
                print(f"--- candidate {i + 1}")
            print(text)
    return 0
