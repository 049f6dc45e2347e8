"""The whole training path learns: a tiny model memorizes real source files, and
the engine's decode loop then reproduces a memorized line from its prefix and
suffix, exactly, in block-diffusion mode and in B=1 (autoregressive) mode.

Deterministic: fixed seeds, a fixed standard-library file, CPU, and one thread
(float reductions differ with the thread count, and memorization at this budget
is exact only for the trajectory it was checked on).
"""

import sysconfig
from pathlib import Path

import pytest
import torch

from engine.tokenizer import TextCodec
from model import checkpoint as ckpt
from model.corpus import SourceFile, build_corpus
from model.sample import infill
from model.tokenizer import DEFAULT_TOKENIZER
from model.train import train
from seed_lsp.cli import build_parser

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = ["asyncio/exceptions.py"]
STEPS = 600


@pytest.fixture(scope="module")
def memorized(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield train_memorizer(tmp_path_factory.mktemp("learn"))
    finally:
        torch.set_num_threads(threads)


def train_memorizer(root: Path):
    codec = TextCodec.from_file(DEFAULT_TOKENIZER)
    sources = [SourceFile("stdlib-sample", "1", STDLIB / f, f) for f in FILES]
    # val_permille=0: everything in train; validation falls back to it (memorisation is the point).
    build_corpus(root / "corpus", codec.tokenizer, sources=sources, val_permille=0)
    args = build_parser().parse_args([
        "train", "--stage", "diffusion", "--corpus", str(root / "corpus"), "--out", str(root / "ckpt"),
        "--tokens", str(STEPS * 2 * 512), "--seq-len", "512", "--batch-size", "2", "--lr", "5e-3",
        "--warmup-steps", "30", "--min-lr-ratio", "0.05", "--d-model", "128", "--n-layers", "2", "--n-heads", "4",
        "--block-sizes", "4,8", "--eval-every", "100000", "--eval-batches", "1", "--samples", "0",
        "--no-progress", "--seed", "0", "--weight-decay", "0",
    ])
    state = train(args)
    return ckpt.load_model(root / "ckpt"), codec, state


def line_job(text: str, line_no: int, cut: int) -> tuple[str, str, str]:
    lines = text.splitlines(keepends=True)
    line = lines[line_no]
    prefix = "".join(lines[:line_no]) + line[:cut]
    return prefix, line[cut:].rstrip("\n"), "".join(lines[line_no + 1:])


@pytest.mark.parametrize("block_size", [4, 1])
def test_decode_reproduces_memorized_line(memorized, block_size):
    model, codec, state = memorized
    text = (STDLIB / FILES[0]).read_text()
    lines = text.splitlines()
    line_no = next(i for i, l in enumerate(lines) if l.strip().startswith("r_expected = "))
    # Cursor after a token boundary (a cursor after a space needs token healing: the engine's job).
    prefix, want, suffix = line_job(text, line_no, lines[line_no].index(" if expected"))
    got, result = infill(model, codec, prefix, suffix, mode="line", block_size=block_size, tau=0.9, max_tokens=32)
    assert got == want, f"B={block_size}: got {got!r}, want {want!r} (train loss {state['history'][-1]})"
    assert result.stop_reason == "newline"
    if block_size > 1:
        assert result.forward_passes <= len(result.tokens), "diffusion should not need more passes than tokens"
