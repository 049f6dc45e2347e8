"""Verification built into the export: each ONNX variant against the torch model it came from.

Two measures, on real code (Python files of a folder, by default the standard
library):

- logits: max |logit difference| vs torch fp32 for (a) a prefill of a real
  context (past length 0), (b) a block step with a past (clean rows then a
  masked block, the mask of engine.decode.build_attention_mask), (c) a batch of
  two such rows of different cache fill and input length, padded as the engine
  pads them (engine.decode.build_batch_mask; padding is not compared);
- decodes: the share of N infill jobs (a file cut at a random line/column into
  prefix and suffix) whose greedy line-mode decode gives exactly the torch tokens.

Every variant is reached through engine.bundle/engine.runtime, exactly as the
server reaches it, so this also checks the written bundle.
"""

from __future__ import annotations

import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from engine.bundle import load_bundle
from engine.decode import DecodeConfig, build_attention_mask, build_batch_mask, decode
from engine.runtime import VariantUnsupported, open_step
from engine.tokenizer import TextCodec
from model.network import DiffusionLM
from model.step import TorchStep

# Keeps contexts short enough for a quick CPU check (about 500 tokens), far below max_context.
MAX_PREFIX_CHARS, MAX_SUFFIX_CHARS = 1500, 500
DECODE = DecodeConfig(block_size=8, tau=0.9, max_tokens=32, mode="line")
BLOCK = 8        # masked positions in the step case
CLEAN_ROWS = 4   # clean positions before the block in the step case


@dataclass(frozen=True)
class InfillJob:
    source: str
    prefix: str
    suffix: str


@dataclass
class VariantReport:
    variant: str
    provider: str = ""
    prefill: Optional[float] = None   # max |dlogit|
    step: Optional[float] = None
    batch: Optional[float] = None
    agreement: Optional[float] = None  # share of decodes identical to torch
    jobs: int = 0
    note: str = ""


def python_files(folder: Path) -> list[Path]:
    """Sorted .py files under folder, leaving out installed third-party packages."""
    skip = {"site-packages", "dist-packages", "__pycache__"}
    return sorted(p for p in folder.rglob("*.py") if not skip & set(p.parts) and p.is_file())


def cut_at_random_point(text: str, rng: np.random.Generator) -> tuple[str, str]:
    """Split text at a random column of a random non-blank line: the editor's cursor."""
    lines = text.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    line_index = int(rng.choice(candidates))
    line_start = sum(len(line) for line in lines[:line_index])
    column = int(rng.integers(0, len(lines[line_index].rstrip("\n")) + 1))
    cut = line_start + column
    return text[:cut][-MAX_PREFIX_CHARS:], text[cut:][:MAX_SUFFIX_CHARS]


def infill_jobs(count: int, folder: Optional[Path] = None, seed: int = 0) -> list[InfillJob]:
    """`count` infill jobs from distinct files of `folder` (default: the standard library)."""
    folder = Path(folder or sysconfig.get_paths()["stdlib"])
    files = python_files(folder)
    if not files:
        raise ValueError(f"{folder}: no .py files to take verification snippets from")
    rng = np.random.default_rng(seed)
    jobs = []
    for index in rng.permutation(len(files)):
        try:
            text = files[index].read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(text.splitlines()) < 5:
            continue
        jobs.append(InfillJob(str(files[index]), *cut_at_random_point(text, rng)))
        if len(jobs) == count:
            break
    return jobs


def logit_cases(contexts: list[list[int]], reference: TorchStep, pad_id: int, mask_id: int) -> dict[str, tuple]:
    """name -> (input_ids, position_ids, attention_mask, past, compare [b, q] bool) on real contexts."""
    prefill_ids = np.array([contexts[0]])
    n = prefill_ids.shape[1]
    prefill = (prefill_ids, np.arange(n)[None], build_attention_mask(0, n, 0), [], np.ones((1, n), bool))
    past_len = n - CLEAN_ROWS
    past = prefill_past(reference, contexts[0][:past_len])
    step_ids = np.array([contexts[0][past_len:] + [mask_id] * BLOCK])
    q = step_ids.shape[1]
    step = (step_ids, np.arange(past_len, past_len + q)[None], build_attention_mask(past_len, CLEAN_ROWS, BLOCK), past, np.ones((1, q), bool))
    return {"prefill": prefill, "step": step, "batch": batch_case(contexts[1:3], reference, pad_id, mask_id)}


def prefill_past(reference: TorchStep, ids: list[int]):
    n = len(ids)
    return reference(np.array([ids]), np.arange(n)[None], build_attention_mask(0, n, 0), [])[1]


def batch_case(contexts: list[list[int]], reference: TorchStep, pad_id: int, mask_id: int) -> tuple:
    """Two rows as the engine batches them: caches of different fill, inputs padded to one q.

    Row r caches all but its last clean[r] context tokens, then steps over those plus
    a masked block; the shorter cache is zero-padded and its extra columns masked,
    padding inputs see only themselves (engine.decode.build_batch_mask).
    """
    clean = [CLEAN_ROWS, CLEAN_ROWS // 2]
    lengths = [len(ids) - k for ids, k in zip(contexts, clean)]
    width = max(lengths)
    used = [k + BLOCK for k in clean]
    q = max(used)
    pasts = [prefill_past(reference, ids[:length]) for ids, length in zip(contexts, lengths)]
    pad = lambda a: np.pad(a, ((0, 0), (0, 0), (0, width - a.shape[2]), (0, 0)))
    past = [tuple(np.concatenate([pad(p[layer][i]) for p in pasts]) for i in (0, 1)) for layer in range(len(pasts[0]))]
    ids = np.full((2, q), pad_id, dtype=np.int64)
    positions = np.zeros((2, q), dtype=np.int64)
    for r, (context, length) in enumerate(zip(contexts, lengths)):
        ids[r, : used[r]] = context[length:] + [mask_id] * BLOCK
        positions[r] = np.arange(length, length + q)
    mask = build_batch_mask(width, lengths, clean, [BLOCK, BLOCK], q)
    compare = np.arange(q)[None] < np.array(used)[:, None]
    return ids, positions, mask, past, compare


def max_logit_difference(step, reference_logits: np.ndarray, case: tuple) -> float:
    *inputs, compare = case
    logits, _ = step(*inputs)
    return float(np.abs(logits - reference_logits)[compare].max())


def decode_tokens(step, context: list[int], codec: TextCodec) -> list[int]:
    result = decode(step, context, DECODE, mask_id=codec.mask, eos_id=codec.eos,
                    newline_tokens=codec.newline_tokens, banned_ids=codec.banned_ids)
    return list(result.tokens)


def open_variant(bundle, variant: str):
    """fp32/int8 on the CPU (what they are checked for); fp16 on CUDA when there is one."""
    return open_step(bundle, device="auto" if variant == "fp16" else "cpu", variant=variant, threads=1)


def verify_variant(bundle, variant: str, cases: dict, reference_logits: dict, contexts, reference_tokens, codec) -> VariantReport:
    report = VariantReport(variant, jobs=len(contexts))
    try:
        step = open_variant(bundle, variant)
    except VariantUnsupported:
        report.note = "needs CUDA"
        return report
    report.provider = step.provider
    for name, case in cases.items():
        setattr(report, name, max_logit_difference(step, reference_logits[name], case))
    same = sum(decode_tokens(step, context, codec) == tokens for context, tokens in zip(contexts, reference_tokens))
    report.agreement = same / max(len(contexts), 1)
    return report


def verify_bundle(bundle_dir: Path, model: DiffusionLM, codec: TextCodec, jobs: int,
                  source_folder: Optional[Path] = None, variants: Optional[list[str]] = None) -> list[VariantReport]:
    """One report per variant of the bundle at bundle_dir, against `model` in fp32 on the CPU."""
    bundle = load_bundle(bundle_dir)
    reference = TorchStep(model.float().eval(), "cpu")
    # At least three snippets: the batch case needs two more contexts than the prefill.
    infill = infill_jobs(max(jobs, 3), source_folder)
    contexts = [codec.spm_context(job.prefix, job.suffix) for job in infill]
    cases = logit_cases(contexts, reference, codec.pad, codec.mask)
    reference_logits = {name: reference(*case[:-1])[0] for name, case in cases.items()}
    decode_contexts = contexts[:jobs]
    reference_tokens = [decode_tokens(reference, context, codec) for context in decode_contexts]
    return [verify_variant(bundle, name, cases, reference_logits, decode_contexts, reference_tokens, codec)
            for name in (variants or list(bundle.variants))]


def format_number(value: Optional[float], percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.0f} %" if percent else f"{value:.3g}"


def format_table(reports: list[VariantReport]) -> str:
    header = ("variant", "provider", "prefill max|dlogit|", "step max|dlogit|", "batch max|dlogit|", "decode agreement")
    rows = [header]
    for r in reports:
        agreement = r.note or f"{format_number(r.agreement, percent=True)} of {r.jobs}"
        rows.append((r.variant, r.provider or "-", format_number(r.prefill), format_number(r.step), format_number(r.batch), agreement))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def as_json(reports: list[VariantReport]) -> list[dict]:
    return [asdict(r) for r in reports]
