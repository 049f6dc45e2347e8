"""`seed-lsp ship`: the default model is replaced only by a checkpoint that is better
on validation, and with --corpus "better" is decided on the same held-out batches
(the numbers recorded in two checkpoints may come from different machines' corpora)."""

import json
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from engine.bundle import load_bundle
from engine.tokenizer import TextCodec
from model import checkpoint as ckpt
from model.corpus import SourceFile, build_corpus
from model.network import DiffusionLM, ModelConfig
from model.ship import losses_on_same_batches, ship
from model.tokenizer import DEFAULT_TOKENIZER

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def save_tiny(folder: Path, recorded_val_diff: float, scale_embeddings: float = 1.0) -> Path:
    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(vocab_size=12_288, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_hidden=64))
    with torch.no_grad():  # a scaled embedding makes confident, wrong predictions: a clearly worse model
        model.embed.weight.mul_(scale_embeddings)
    history = [{"stage": "diffusion", "step": 1, "val_diff": recorded_val_diff}]
    ckpt.save_checkpoint(folder, model, DEFAULT_TOKENIZER, {"stage": "diffusion", "step": 1, "tokens_total": 1,
                                                           "history": history, "trained_context": 512})
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ship-corpus")
    codec = TextCodec.from_file(DEFAULT_TOKENIZER)
    sources = [SourceFile("sample", "1", STDLIB / f, f) for f in ("bisect.py", "colorsys.py", "keyword.py")]
    build_corpus(root / "corpus", codec.tokenizer, sources=sources, val_permille=0)
    return root / "corpus"


def test_same_batches_give_the_same_loss_twice(corpus, tmp_path):
    plain = save_tiny(tmp_path / "plain", 5.0)
    first, second = losses_on_same_batches(corpus, [plain, plain], batches=2)
    assert first == second and 0 < first < 100


def test_a_worse_model_is_refused_even_when_its_recorded_loss_is_lower(corpus, tmp_path):
    shipped = save_tiny(tmp_path / "shipped", recorded_val_diff=5.0)
    worse = save_tiny(tmp_path / "worse", recorded_val_diff=0.1, scale_embeddings=400.0)
    old, new = losses_on_same_batches(corpus, [shipped, worse], batches=2)
    assert new > old, "the scaled-embedding model should be worse on the same batches"
    with pytest.raises(SystemExit, match="not better"):
        ship(worse, shipped, verify_jobs=0, corpus=corpus)
    assert json.loads((shipped / ckpt.STATE).read_text())["history"][-1]["val_diff"] == 5.0  # left alone


def test_a_better_model_is_shipped_with_an_int8_bundle(corpus, tmp_path):
    shipped = save_tiny(tmp_path / "shipped", recorded_val_diff=0.1, scale_embeddings=400.0)
    better = save_tiny(tmp_path / "better", recorded_val_diff=5.0)
    summary = ship(better, shipped, verify_jobs=0, corpus=corpus)
    assert summary["val_diff"] < summary["previous_val_diff"] and summary["compared_on"] == str(corpus)
    assert load_bundle(shipped / "bundle").variants.keys() == {"int8"}
    assert not (shipped / ckpt.OPTIMIZER).exists()
    # A margin larger than the gap refuses the same checkpoint.
    shutil.rmtree(shipped)
    save_tiny(shipped, recorded_val_diff=0.1, scale_embeddings=400.0)
    with pytest.raises(SystemExit, match="margin"):
        ship(better, shipped, verify_jobs=0, corpus=corpus, margin=1e6)
