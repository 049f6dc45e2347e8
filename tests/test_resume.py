"""Training survives interruption: a run killed with SIGKILL resumes from its last
checkpoint at the saved step (weights and optimizer moments restored), and a
later stage starts from the previous stage's weights with a fresh schedule."""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

from engine.tokenizer import TextCodec
from model import checkpoint as ckpt
from model.corpus import SourceFile, build_corpus
from model.tokenizer import DEFAULT_TOKENIZER

STDLIB = Path(sysconfig.get_paths()["stdlib"])
REPO = Path(__file__).resolve().parents[1]


def tiny_corpus(root: Path) -> Path:
    codec = TextCodec.from_file(DEFAULT_TOKENIZER)
    sources = [SourceFile("sample", "1", STDLIB / f, f) for f in ("bisect.py", "colorsys.py")]
    build_corpus(root / "corpus", codec.tokenizer, sources=sources, val_permille=0)
    return root / "corpus"


def train_command(corpus: Path, out: Path, stage: str = "ar", *extra: str) -> list[str]:
    return [sys.executable, "-m", "seed_lsp", "train", "--stage", stage, "--corpus", str(corpus), "--out", str(out),
            "--tokens", "1e6", "--seq-len", "64", "--batch-size", "2", "--d-model", "32", "--n-layers", "1",
            "--n-heads", "2", "--save-minutes", "0", "--eval-every", "100000", "--eval-batches", "1",
            "--samples", "0", "--no-progress", "--warmup-steps", "5", *extra]


def saved_step(out: Path) -> int:
    try:
        return json.loads((out / ckpt.STATE).read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def test_killed_run_resumes_from_saved_step(tmp_path):
    corpus, out = tiny_corpus(tmp_path), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(train_command(corpus, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while saved_step(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to save: a real crash
    proc.wait()
    step = saved_step(out)
    assert step >= 3, f"no checkpoint before the kill: {proc.stderr.read().decode()[-2000:]}"
    weights_at_kill = ckpt.load_model(out).state_dict()

    from model.train import train
    from seed_lsp.cli import build_parser

    args = build_parser().parse_args(train_command(corpus, out, "ar", "--max-steps", str(step + 2))[3:])
    state = train(args)
    assert state["step"] == step + 2, "the resumed run did not continue from the saved step"
    log = (out / "train.log").read_text()
    assert f"step={step}/" in log and "resumed=yes optimizer_restored=True" in log
    assert (out / ckpt.OPTIMIZER).is_file()
    changed = any(not torch.equal(weights_at_kill[k], v) for k, v in ckpt.load_model(out).state_dict().items())
    assert changed, "resumed training did not update the weights"

    # A new stage starts from these weights, with its own step counter, and keeps the token total.
    args = build_parser().parse_args(train_command(corpus, out, "diffusion", "--max-steps", "1")[3:])
    before = state["tokens_total"]
    state = train(args)
    assert state["stage"] == "diffusion" and state["step"] == 1
    assert state["tokens_total"] > before
    assert "ar" in state["stages"] and "diffusion" in state["stages"]

    # A stage run again records its compute beside the first run's instead of over it.
    first_ar = dict(state["stages"]["ar"])
    args = build_parser().parse_args(train_command(corpus, out, "ar", "--max-steps", "1")[3:])
    state = train(args)
    assert state["stages"]["ar"] == first_ar
    assert state["stages"]["ar-2"]["steps"] == 1 and "diffusion" in state["stages"]
