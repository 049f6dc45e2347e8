"""`seed-lsp` subcommands. Each imports its implementation lazily, so serving
completions never imports torch and `--help` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from model.corpus import CorpusLimits, build_corpus
    from model.tokenizer import DEFAULT_TOKENIZER, load_tokenizer

    tokenizer = None
    if not args.no_tokenize:
        path = Path(args.tokenizer or DEFAULT_TOKENIZER)
        if not path.exists():
            print(f"error: tokenizer {path} not found (train one with `seed-lsp tokenizer train`, or pass --no-tokenize)", file=sys.stderr)
            return 2
        tokenizer = load_tokenizer(path)
    limits = CorpusLimits(max_bytes=args.max_bytes)
    summary = build_corpus(Path(args.out), tokenizer, args.site, args.exclude, limits, args.val_permille, max_mb=args.max_mb)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from model.corpus import manifest_rows
    from model.tokenizer import iter_texts, train_tokenizer

    rows = manifest_rows(Path(args.corpus), "train")
    tok = train_tokenizer(iter_texts(r["path"] for r in rows), vocab_size=args.vocab_size)
    tok.save(args.out)
    print(f"tokenizer with {tok.get_vocab_size()} entries written to {args.out} (trained on {len(rows)} files)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from model.train import main as train_main

    return train_main(args)


def cmd_sample(args: argparse.Namespace) -> int:
    from model.sample import main as sample_main

    return sample_main(args)


def cmd_export(args: argparse.Namespace) -> int:
    from export.bundle_writer import main as export_main

    return export_main(args)


def cmd_complete(args: argparse.Namespace) -> int:
    from seed_lsp.complete import main as complete_main

    return complete_main(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from lsp_server.server import main as serve_main

    return serve_main(args.server_args)


def cmd_ship(args: argparse.Namespace) -> int:
    from model.ship import main as ship_main

    return ship_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seed-lsp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="build the training corpus from local Python source")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True)
    build = corpus_sub.add_parser("build", help="collect, filter, split and tokenize")
    build.add_argument("--out", required=True, help="output folder (manifest.json and token shards)")
    build.add_argument("--tokenizer", help="tokenizer.json (default: the one committed in model/)")
    build.add_argument("--no-tokenize", action="store_true", help="write only the manifest")
    build.add_argument("--site", action="append", default=[], help="extra site-packages folder to scan (repeatable)")
    build.add_argument("--exclude", action="append", default=[], help="distribution to leave out (repeatable)")
    build.add_argument("--max-bytes", type=int, default=500_000, help="drop files larger than this")
    build.add_argument("--max-mb", type=float, default=0, help="keep at most this many MB of training source (0 = all)")
    build.add_argument("--val-permille", type=int, default=50, help="share of distributions held out, per mille")
    build.set_defaults(func=cmd_corpus_build)

    tokenizer = sub.add_parser("tokenizer", help="train the BPE tokenizer")
    tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    tok_train = tok_sub.add_parser("train", help="train on a corpus's train split")
    tok_train.add_argument("--corpus", required=True, help="folder written by `corpus build`")
    tok_train.add_argument("--vocab-size", type=int, default=12_288)
    tok_train.add_argument("--out", default="model/tokenizer.json")
    tok_train.set_defaults(func=cmd_tokenizer_train)

    from model.options import add_sample_arguments, add_train_arguments

    train = sub.add_parser("train", help="train the model (stages ar, diffusion, edit)")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    sample = sub.add_parser("sample", help="print an infill from a checkpoint")
    add_sample_arguments(sample)
    sample.set_defaults(func=cmd_sample)

    serve = sub.add_parser("serve", help="run the language server over stdio (same as python -m lsp_server)",
                           add_help=False)
    serve.add_argument("server_args", nargs=argparse.REMAINDER, help="--tcp HOST:PORT, --log-level LEVEL")
    serve.set_defaults(func=cmd_serve)

    ship = sub.add_parser("ship", help="make a checkpoint the bundled default model (model/default), if better")
    from model.ship import add_ship_arguments

    add_ship_arguments(ship)
    ship.set_defaults(func=cmd_ship)

    from seed_lsp.complete import add_complete_arguments

    complete = sub.add_parser("complete", help="complete code at FILE:LINE:COL with the bundled model (no torch)")
    add_complete_arguments(complete)
    complete.set_defaults(func=cmd_complete)

    from export.options import add_export_arguments

    export = sub.add_parser("export", help="write an ONNX bundle (fp32, int8, fp16) from a checkpoint, verified against torch")
    add_export_arguments(export)
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
