"""`seed-lsp export`: a checkpoint folder in, a verified bundle folder out.

The bundle (see engine/bundle.py for the reader):

    model.onnx        fp32 step graph (the reference)
    model.int8.onnx   dynamic int8 (CPU default)
    model.fp16.onnx   fp16 with float32 I/O (CUDA default)
    tokenizer.json    copied from the checkpoint
    bundle.json       architecture, special token ids, decode defaults, context
                      limit, variants, sha256 of every other file, source
                      checkpoint, verification table

Everything is written into a temporary sibling folder and renamed into place
after verification passes, so a failed or interrupted export never leaves a
half-written folder that looks like a bundle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import onnx
import onnxruntime
import torch

from engine.bundle import FORMAT, MANIFEST, TOKENIZER, expected_special_tokens, file_sha256
from engine.tokenizer import TextCodec
from export.onnx_graph import export_onnx
from export.variants import write_fp16, write_int8
from model import checkpoint as ckpt
from model.network import DiffusionLM

VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
DECODE_DEFAULTS = {"block_size": 8, "tau": 0.9}
# fp32 must reproduce torch: identical decodes, logits equal up to float reassociation.
FP32_MAX_LOGIT_DIFFERENCE = 1e-3


class ExportError(RuntimeError):
    """The export cannot proceed or its verification failed; one line for the user."""
# Sequence length of the training runs before train_state recorded it (session 1: 512).
DEFAULT_TRAINED_CONTEXT = 512


def parse_variants(text: str) -> list[str]:
    """"fp32,int8" -> ["fp32", "int8"]; fp32 is always included (the others derive from it)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANT_FILES]
    if unknown:
        raise ExportError(f"unknown variant {unknown[0]!r} (choose from {', '.join(VARIANT_FILES)})")
    return [v for v in VARIANT_FILES if v == "fp32" or v in names]


def source_info(checkpoint: Path) -> dict:
    """What the bundle was made from: training progress and tool versions."""
    state = ckpt.load_state(checkpoint)
    last = (state.get("history") or [{}])[-1]
    info = {key: state[key] for key in ("tokens_total", "stage", "step", "trained_context") if key in state}
    info.update({key: value for key, value in last.items() if key.startswith("val_")})
    info.update(checkpoint=checkpoint.resolve().name, exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                torch=torch.__version__, onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return info


def write_model_files(model: DiffusionLM, folder: Path, variants: list[str], log: Callable[[str], None]) -> None:
    fp32 = folder / VARIANT_FILES["fp32"]
    started = time.perf_counter()
    export_onnx(model, fp32)
    log(f"fp32 graph exported in {time.perf_counter() - started:.1f} s")
    writers = {"int8": write_int8, "fp16": write_fp16}
    for variant in variants:
        if variant in writers:
            writers[variant](fp32, folder / VARIANT_FILES[variant])
            log(f"{variant} variant written")


def build_manifest(model: DiffusionLM, folder: Path, variants: list[str], source: dict) -> dict:
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    return {
        "format": FORMAT,
        "architecture": asdict(model.cfg),
        "special_tokens": expected_special_tokens(),
        "decode_defaults": dict(DECODE_DEFAULTS),
        "context": {"max_context": model.cfg.max_context,
                    "trained_context": int(source.get("trained_context") or DEFAULT_TRAINED_CONTEXT)},
        "variants": {v: VARIANT_FILES[v] for v in variants},
        "files": {name: file_sha256(folder / name) for name in files},
        "source": source,
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def check_fp32(reports) -> None:
    fp32 = next(r for r in reports if r.variant == "fp32")
    worst = max(fp32.prefill, fp32.step, fp32.batch)
    if fp32.agreement != 1.0 or worst > FP32_MAX_LOGIT_DIFFERENCE:
        raise ExportError(f"verification failed: fp32 decode agreement {fp32.agreement:.0%}, max |dlogit| {worst:.3g}")


def refuse_to_clobber(out: Path) -> None:
    """Only an empty folder or an earlier bundle may be replaced."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out} exists and is not a bundle; not overwriting it")


def install(staging: Path, out: Path) -> None:
    """Replace `out` by the finished staging folder."""
    refuse_to_clobber(out)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def verify_staging(staging: Path, model: DiffusionLM, manifest: dict, jobs: int, snippets: Optional[Path],
                   log: Callable[[str], None]) -> None:
    """Run the verification, store its table in bundle.json, fail unless fp32 reproduces torch."""
    from export.verify import as_json, format_table, verify_bundle

    started = time.perf_counter()
    reports = verify_bundle(staging, model, TextCodec.from_file(staging / TOKENIZER), jobs, snippets)
    log(format_table(reports))
    log(f"verified in {time.perf_counter() - started:.1f} s")
    manifest["verification"] = as_json(reports)
    write_manifest(staging, manifest)
    try:
        check_fp32(reports)
    except ExportError as exc:
        raise ExportError(f"{exc}; the unverified bundle is left in {staging}") from None


def drop_reference(staging: Path, manifest: dict) -> None:
    """Remove the fp32 graph after verification: a shipped CPU bundle needs only int8.

    The verification table stays in bundle.json as the record of the fp32 check.
    """
    (staging / VARIANT_FILES["fp32"]).unlink()
    del manifest["variants"]["fp32"]
    del manifest["files"][VARIANT_FILES["fp32"]]
    write_manifest(staging, manifest)


def write_bundle(checkpoint: Path, out: Path, variants: list[str], verify_jobs: int = 20,
                 snippets: Optional[Path] = None, log: Callable[[str], None] = print,
                 keep_fp32: bool = True) -> dict:
    """Export, verify and install the bundle for `checkpoint` at `out`; returns bundle.json's content."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not ckpt.has_checkpoint(checkpoint):
        raise ExportError(f"{checkpoint} holds no checkpoint (model.safetensors + config.json)")
    refuse_to_clobber(out)
    model = ckpt.load_model(checkpoint).float().eval()
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_model_files(model, staging, variants, log)
    shutil.copyfile(checkpoint / ckpt.TOKENIZER, staging / TOKENIZER)
    manifest = build_manifest(model, staging, variants, source_info(checkpoint))
    write_manifest(staging, manifest)
    if verify_jobs > 0:
        verify_staging(staging, model, manifest, verify_jobs, snippets, log)
    if not keep_fp32 and len(variants) > 1:
        drop_reference(staging, manifest)
    install(staging, out)
    return manifest


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        write_bundle(Path(args.checkpoint), Path(args.out), parse_variants(args.variants),
                     0 if args.no_verify else args.verify_jobs, Path(args.snippets) if args.snippets else None,
                     keep_fp32=not args.drop_fp32)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"bundle written to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0
