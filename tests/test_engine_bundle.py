"""The engine on a real exported bundle (onnxruntime), and `seed-lsp complete` end to end.

A tiny random model is exported once per module (int8 shipped alone, the way the
default bundle is, plus a full fp32 bundle for exact parity with torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from engine.bundle import load_bundle
from engine.decode import DecodeConfig
from engine.engine import Engine, Job
from engine.jobs import Budget
from engine.runtime import open_step
from engine.tokenizer import TextCodec
from export.bundle_writer import write_bundle
from model.checkpoint import save_checkpoint
from model.network import DiffusionLM, ModelConfig
from model.step import TorchStep

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "model" / "tokenizer.json"
SOURCE_FILE = Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py"
SOURCE = SOURCE_FILE.read_text()
CURSOR = SOURCE.index("def raw_decode") + 200
CONFIG = ModelConfig(vocab_size=12_288, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96)
BLOCK = DecodeConfig(block_size=4, tau=0.5, max_tokens=12, mode="block")


@pytest.fixture(scope="module")
def model() -> DiffusionLM:
    torch.manual_seed(1)
    return DiffusionLM(CONFIG).eval()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    save_checkpoint(root / "ckpt", model, TOKENIZER, {"tokens_total": 1, "stage": "diffusion", "step": 1,
                                                       "trained_context": 256})
    quiet = lambda _: None  # noqa: E731
    write_bundle(root / "ckpt", root / "full", ["fp32", "int8"], verify_jobs=0, log=quiet)
    write_bundle(root / "ckpt", root / "shipped", ["fp32", "int8"], verify_jobs=2, log=quiet, keep_fp32=False)
    return {"full": root / "full", "shipped": root / "shipped"}


def test_shipped_bundle_holds_int8_only_and_keeps_the_verification(bundles):
    bundle = load_bundle(bundles["shipped"])
    assert set(bundle.variants) == {"int8"}
    assert not (bundles["shipped"] / "model.onnx").exists()
    assert [row["variant"] for row in bundle.manifest["verification"]] == ["fp32", "int8"]
    assert bundle.trained_context == 256


def test_engine_budget_stays_inside_the_trained_context(bundles):
    engine = Engine.from_bundle(bundles["shipped"], device="cpu", threads=1)
    assert engine.info["variant"] == "int8" and engine.info["provider"] == "CPUExecutionProvider"
    budget = engine.budget
    assert budget.prefix_tokens + budget.suffix_tokens + 4 + 64 <= 256
    result = engine.complete(Job(SOURCE[:CURSOR], SOURCE[CURSOR:], BLOCK))[0]
    assert result.stats.context_tokens <= 256 - 64


@pytest.mark.parametrize("config", [BLOCK, DecodeConfig(block_size=1, max_tokens=10, mode="block")])
def test_onnx_engine_equals_torch_engine(bundles, model, config):
    codec = TextCodec.from_file(TOKENIZER)
    budget = Budget(150, 50)
    onnx = Engine(open_step(bundles["full"], device="cpu", variant="fp32", threads=1), codec, budget=budget)
    reference = Engine(TorchStep(model), codec, budget=budget)
    jobs = [Job(SOURCE[:c], SOURCE[c:], config, doc_id=f"d{c}") for c in (CURSOR, 2000, 4000)]
    together = onnx.complete(jobs)
    for job, batched in zip(jobs, together):
        expected = reference.complete(job)[0].completions[0].tokens
        assert batched.completions[0].tokens == expected
        warm = onnx.complete(Job(job.prefix + "x", job.suffix, config, doc_id=job.doc_id))[0]
        cold = reference.complete(Job(job.prefix + "x", job.suffix, config))[0]
        assert warm.stats.cached_tokens > 0
        assert warm.completions[0].tokens == cold.completions[0].tokens


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seed_lsp", "complete", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)


def test_cli_complete_json(bundles):
    line = SOURCE[:CURSOR].count("\n") + 1
    col = CURSOR - SOURCE.rfind("\n", 0, CURSOR)
    done = run_cli(f"{SOURCE_FILE}:{line}:{col}", "--bundle", str(bundles["shipped"]), "--json", "--n", "2",
                   "--threads", "1")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["completions"]) == 2 and all(isinstance(c, str) for c in out["completions"])
    assert out["prefill_tokens"] > 0 and out["forward_passes"] >= 0 and out["tokens"] > 0
    assert set(out["ms"]) == {"tokenize", "prefill", "decode", "total"}
    assert out["variant"] == "int8"


def test_cli_complete_errors_are_one_line(bundles, tmp_path):
    past_end = run_cli(f"{SOURCE_FILE}:99999:1", "--bundle", str(bundles["shipped"]))
    assert past_end.returncode == 2 and "past the end" in past_end.stderr
    assert "Traceback" not in past_end.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json")
    bad_bundle = run_cli(f"{SOURCE_FILE}:1:1", "--bundle", str(broken))
    assert bad_bundle.returncode == 2 and "bundle.json" in bad_bundle.stderr
    assert "Traceback" not in bad_bundle.stderr and len(bad_bundle.stderr.strip().splitlines()) == 1
