"""A tiny random-weight model bundle for tests that need a model but not a good one.

Protocol, fault and security tests only need the server to run a real engine
over a real ONNX graph; what the model writes does not matter. Exporting costs
a few seconds (torch import + ONNX export), so the bundle is built once per test
process and each test copies it when it wants to break it.

`tiny_bundle()` has the int8 variant only (as shipped); `tiny_fp32_bundle()` the
fp32 variant only (exact: a test can recompute a completion in-process and expect
the server's text).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "model" / "tokenizer.json"


@lru_cache(maxsize=None)
def _exported() -> Path:
    import torch

    from export.bundle_writer import write_bundle
    from model.checkpoint import save_checkpoint
    from model.network import DiffusionLM, ModelConfig

    root = Path(tempfile.mkdtemp(prefix="seed-tiny-bundle-"))
    torch.manual_seed(0)
    # As many key/value heads as query heads, like the shipped model (no grouped-query attention).
    model = DiffusionLM(ModelConfig(vocab_size=12_288, d_model=48, n_layers=2, n_heads=4, n_kv_heads=4,
                                    ffn_hidden=96))
    save_checkpoint(root / "ckpt", model, TOKENIZER, {"tokens_total": 1, "stage": "diffusion", "step": 1,
                                                      "trained_context": 512})
    write_bundle(root / "ckpt", root / "both", ["fp32", "int8"], verify_jobs=0, log=lambda _: None)
    return root


def _only(variant: str) -> Path:
    """A copy of the exported bundle that declares one variant (the other file is not there)."""
    both = _exported() / "both"
    out = _exported() / variant
    if not out.exists():
        staging = _exported() / f"{variant}.tmp"
        staging.mkdir()
        manifest = json.loads((both / "bundle.json").read_text())
        keep = manifest["variants"][variant]
        manifest["variants"] = {variant: keep}
        manifest["files"] = {name: digest for name, digest in manifest["files"].items()
                             if name in (keep, "tokenizer.json")}
        for name in manifest["files"]:
            shutil.copyfile(both / name, staging / name)
        (staging / "bundle.json").write_text(json.dumps(manifest, indent=1))
        staging.rename(out)
    return out


def tiny_bundle() -> Path:
    """int8 only, like the shipped default bundle. Do not modify: copy_bundle() first."""
    return _only("int8")


def tiny_fp32_bundle() -> Path:
    return _only("fp32")


def copy_bundle(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest
