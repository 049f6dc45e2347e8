"""The engine: completion jobs in, completions out, with caching, batching and deadlines.

Ties the pieces together for the server, the CLI and the benchmarks: the bundle
(engine.bundle), the onnxruntime step (engine.runtime), the context window
(engine.jobs), the per-document prefix cache (engine.prefix_cache) and the decode
loop (engine.decode). Torch-free. One model call at a time (a lock): on a CPU,
concurrent jobs go faster batched together (`complete` with several jobs) than
interleaved.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from engine.decode import DecodeConfig, DecodeResult, Prefix, Row, StepFunction, decode_rows, prefill
from engine.healing import HealPlan, TokenHealer
from engine.jobs import (Budget, block_floor, block_stop_rule, build_context, cut_block, cut_line, either,
                         text_stop_rule)
from engine.prefix_cache import PrefixCache
from engine.tokenizer import TextCodec


@dataclass(frozen=True)
class Job:
    """One completion request: text around the cursor and how to decode it."""

    prefix: str  # document text before the cursor
    suffix: str = ""  # document text after the cursor
    config: DecodeConfig = DecodeConfig()
    n: int = 1  # candidates, decoded together in one batch
    doc_id: Optional[str] = None  # key of the prefix cache (e.g. the document URI); None = no cache
    seed: Optional[int] = None  # sampling seed (temperature > 0); candidates use seed, seed+1, ...
    heal: bool = True  # token healing: the cursor may sit inside a token (engine.healing)
    # Stop a candidate once its text contains this (repair: the suffix's first line, which an
    # infill that has reached its span's end writes next). "" = no such stop.
    stop_at: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or not 1 <= self.n <= 16:
            raise ValueError(f"n must be an integer in 1..16, got {self.n!r}")


@dataclass
class Completion:
    """One candidate: the text to insert at the cursor and how the model felt about it."""

    text: str
    tokens: list[int]
    confidences: list[float]  # per token, when it was committed
    stop_reason: str
    healed: str = ""  # decoded text before `text`: the tail token healing took back (tokens spell healed + text...)

    @property
    def min_confidence(self) -> float:
        return min(self.confidences) if self.confidences else 0.0


@dataclass
class JobStats:
    """What a job cost: tokens, forward passes and milliseconds per phase."""

    context_tokens: int = 0
    prefill_tokens: int = 0  # context tokens forwarded
    cached_tokens: int = 0  # context tokens served by the prefix cache
    healed_tokens: int = 0  # prefix tokens taken back by token healing
    healing_passes: int = 0  # extra one-token passes that healed part of the tail
    forward_passes: int = 0  # batched decode steps (after the prefill)
    tokens: int = 0  # tokens committed, all candidates together
    ms: dict[str, float] = field(default_factory=dict)  # tokenize, prefill, decode, total


@dataclass
class JobResult:
    completions: list[Completion]
    stats: JobStats


class Engine:
    """A loaded model ready to complete code. Thread-safe; one model call at a time."""

    def __init__(self, step: StepFunction, codec: TextCodec, *, budget: Budget = Budget(),
                 cache_mb: float = 256.0, info: Optional[dict] = None):
        self.step = step
        self.codec = codec
        self.budget = budget
        self.prefix_cache = PrefixCache(int(cache_mb * 2**20))
        self.healer = TokenHealer(codec)
        self.info = dict(info or {})  # what the server shows: bundle, provider, variant
        self._lock = threading.Lock()

    @classmethod
    def from_bundle(cls, path: Optional[str | Path] = None, *, device: str = "auto",
                    variant: Optional[str] = None, threads: int = 0, cache_mb: float = 256.0,
                    budget: Optional[Budget] = None, io_binding: Optional[bool] = None) -> "Engine":
        """Load a bundle (default: the one shipped in the package) on the best device.

        io_binding: keep the KV cache on the device (engine.runtime.open_step; None = on for CUDA).
        """
        from engine.bundle import default_bundle_path, load_bundle
        from engine.runtime import IoBindingStep, open_step

        bundle = load_bundle(path if path is not None else default_bundle_path())
        step = open_step(bundle, device=device, variant=variant, threads=threads, io_binding=io_binding)
        codec = TextCodec.from_file(bundle.tokenizer_path)
        info = {"bundle": str(bundle.root), "provider": step.provider, "variant": step.variant,
                "io_binding": isinstance(step, IoBindingStep),
                "decode_defaults": {"block_size": bundle.block_size, "tau": bundle.tau}}
        return cls(step, codec, budget=budget or bundle_budget(bundle), cache_mb=cache_mb, info=info)

    def complete(self, jobs: Sequence[Job] | Job, *, should_cancel: Optional[Callable[[], bool]] = None,
                 deadline: Optional[float] = None) -> list[JobResult]:
        """Complete every job; all their candidates decode in one batch.

        should_cancel: checked before every model call (True raises DecodeCancelled).
        deadline: time.monotonic() value; candidates still running then return what
        their finished blocks hold (stop_reason "deadline").
        """
        if isinstance(jobs, Job):
            jobs = [jobs]
        with self._lock:
            return self._complete(list(jobs), should_cancel, deadline)

    def _complete(self, jobs: list[Job], should_cancel, deadline) -> list[JobResult]:
        started = time.perf_counter()
        contexts = [build_context(self.codec, job.prefix, job.suffix, self.budget) for job in jobs]
        tokenized = time.perf_counter()
        single_row = len(jobs) == 1 and jobs[0].n == 1
        plans = [self.healer.plan(c.ids, c.prefix_tokens) if job.heal else HealPlan(c.ids, "", 0)
                 for job, c in zip(jobs, contexts)]
        prefixes, tails, first_prefills, healing_passes = [], [], [], []
        for job, plan in zip(jobs, plans):
            cached = self.prefix_cache.take(job.doc_id)
            # Room to decode in place after the context when the batch is this one row.
            extra = job.config.max_tokens + len(plan.tail) if single_row else 0
            prefix = prefill(self.step, plan.context_ids, mask_id=self.codec.mask, reuse=cached,
                             extra_capacity=extra, should_cancel=should_cancel)
            first_prefills.append(prefix)
            prefix, tail, passes = self._heal(prefix, plan.tail, extra, should_cancel)
            prefixes.append(prefix)
            tails.append(tail)
            healing_passes.append(passes)
        prefilled = time.perf_counter()
        rows = [self._row(job, prefix, tail, i) for job, prefix, tail in zip(jobs, prefixes, tails)
                for i in range(job.n)]
        try:
            results = decode_rows(self.step, rows, mask_id=self.codec.mask, eos_id=self.codec.eos,
                                  newline_tokens=self.codec.newline_tokens, banned_ids=self.codec.banned_ids,
                                  should_cancel=should_cancel, deadline=deadline)
        finally:
            for job, prefix in zip(jobs, prefixes):
                self.prefix_cache.put(job.doc_id, prefix)
        decoded = time.perf_counter()
        out, at = [], 0
        for job, prefix, first, tail, plan, passes in zip(jobs, prefixes, first_prefills, tails, plans,
                                                          healing_passes):
            mine = results[at : at + job.n]
            at += job.n
            completions = [self._completion(job, r, tail) for r in mine]
            stats = JobStats(
                context_tokens=len(prefix.ids),  # as prefilled: without the healed tail, with its parts
                prefill_tokens=first.prefill_tokens + passes,
                cached_tokens=first.cached_tokens,
                healed_tokens=plan.backed_off,
                healing_passes=passes,
                forward_passes=max(r.forward_passes for r in mine) + passes,
                tokens=sum(len(r.tokens) for r in mine),
                ms={"tokenize": _ms(started, tokenized), "prefill": _ms(tokenized, prefilled),
                    "decode": _ms(prefilled, decoded), "total": _ms(started, time.perf_counter())},
            )
            out.append(JobResult(completions, stats))
        return out

    def _heal(self, prefix: Prefix, tail: str, extra: int, should_cancel) -> tuple[Prefix, str, int]:
        """Commit the tokens that spell a leading part of the tail (rare: e.g. the longest
        indentation token is taken back, and the model writes a shorter one and then a word).

        Returns the prefix extended by them, the tail still to cover, and the passes spent.
        """
        passes = 0
        while tail:
            part = self.healer.step_toward(tail, prefix.last_logits)
            if part is None:
                break
            token, tail = part
            prefix = prefill(self.step, [*prefix.ids.tolist(), token], mask_id=self.codec.mask, reuse=prefix,
                             extra_capacity=extra, should_cancel=should_cancel)
            passes += 1
        return prefix, tail, passes

    def _row(self, job: Job, prefix: Prefix, tail: str, candidate: int) -> Row:
        """One candidate's decode row; with a tail, its first token must cover it."""
        stop = block_stop_rule(self.codec, job.prefix, len(tail)) if job.config.mode == "block" else None
        if job.stop_at:
            stop = either(stop, text_stop_rule(self.codec, job.stop_at, len(tail)))
        first = self.healer.first_token(tail) if tail else None
        return Row(prefix, job.config, rng=_rng(job, candidate), should_stop=stop, first_rank=candidate,
                   first_allowed=first.covering if first else None,
                   first_newline=first.newline_after if first else None)

    def _completion(self, job: Job, result: DecodeResult, tail: str = "") -> Completion:
        """Decoded text after the healed tail, cut by the mode's rule (tokens and confidences as decoded)."""
        text = self.codec.decode(result.tokens)
        # The first token covers the tail; without it (stopped before any token) there is nothing to show.
        text = text[len(tail):] if text.startswith(tail) else ""
        if job.config.mode == "line":
            text = cut_line(text)
        elif job.config.mode == "block":
            text, _ = cut_block(text, block_floor(job.prefix))
        return Completion(text, result.tokens, result.confidences, result.stop_reason, healed=tail)

    def forget(self, doc_id: str) -> None:
        """Drop what the engine caches for a document (it was closed)."""
        self.prefix_cache.forget(doc_id)


def bundle_budget(bundle) -> Budget:
    """Context budgets that keep a job inside the positions the model was trained on."""
    context = min(bundle.trained_context, bundle.max_context)
    room = max(64, context - 64 - 4)  # leave room for 64 generated tokens and the 4 markers
    suffix = room // 4
    return Budget(prefix_tokens=room - suffix, suffix_tokens=suffix)


def _rng(job: Job, candidate: int) -> Optional[np.random.Generator]:
    if job.config.temperature == 0.0:
        return None
    return np.random.default_rng(None if job.seed is None else job.seed + candidate)


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 2)
