"""Inline completion as pure steps: mode, decode settings, engine call, filters.

Runs on the model worker thread (engine calls block). The handler in server.py
only converts LSP positions to text and the result back to LSP items.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from engine.decode import DecodeConfig
from engine.engine import Engine, Job
from engine.jobs import choose_mode
from lsp_server.config import Settings
from lsp_server.filters import Candidate, FilterContext, apply_filters


def completion_mode(settings: Settings, prefix: str, suffix: str) -> str:
    return choose_mode(prefix, suffix) if settings.mode == "auto" else settings.mode


def decode_config(settings: Settings, mode: str) -> DecodeConfig:
    # Verify compares greedy choices, so sampling (temperature > 0) decodes by plain diffusion.
    verify = settings.verify and settings.temperature == 0.0
    return DecodeConfig(
        block_size=settings.draft_tokens if verify else settings.block_size,
        tau=settings.tau,
        max_tokens=settings.max_tokens_line if mode == "line" else settings.max_tokens_block,
        mode=mode,
        temperature=settings.temperature,
        verify=verify,
        draft=settings.draft,
        min_match=settings.draft_min_match,
    )


def complete(engine: Engine, uri: str, prefix: str, suffix: str, settings: Settings, *, mode: Optional[str] = None,
             n: Optional[int] = None, should_cancel: Optional[Callable[[], bool]] = None,
             deadline: Optional[float] = None) -> tuple[list[Candidate], dict]:
    """Filtered candidates for the cursor between prefix and suffix, and the job's stats."""
    mode = mode or completion_mode(settings, prefix, suffix)
    job = Job(prefix, suffix, decode_config(settings, mode), n=n or settings.n, doc_id=uri)
    started = time.perf_counter()
    result = engine.complete(job, should_cancel=should_cancel, deadline=deadline)[0]
    candidates = [Candidate(c.text, tuple(c.confidences)) for c in result.completions]
    kept = apply_filters(candidates, FilterContext(prefix, suffix, mode, settings.min_confidence))
    stats = {"mode": mode, "ms": round((time.perf_counter() - started) * 1000, 1),
             "prefill_tokens": result.stats.prefill_tokens, "cached_tokens": result.stats.cached_tokens,
             "forward_passes": result.stats.forward_passes, "tokens": result.stats.tokens,
             "stop_reasons": [c.stop_reason for c in result.completions]}
    return kept, stats
