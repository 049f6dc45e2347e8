"""The model behind the server: loading it, running jobs on one worker thread, cancellation.

Everything that touches the engine goes through one single-thread executor: a
CPU model call is fastest alone, and the engine's caches stay consistent. Async
handlers await the worker; when pygls cancels a handler ($/cancelRequest, or a
newer request for the same document), the job's cancel flag is set and the
decode loop stops before its next model call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from engine.decode import DecodeCancelled
from engine.engine import Engine
from engine.jobs import Budget
from lsp_server.config import Settings

log = logging.getLogger("seed_lsp.server")


class ModelUnavailable(Exception):
    """No model is loaded (still loading, or loading failed); the message says which."""


@dataclass
class Loaded:
    engine: Engine
    settings_key: tuple  # the settings it was loaded with (reload when they change)
    seconds: float


def model_key(settings: Settings) -> tuple:
    return settings.bundle, settings.device, settings.threads, settings.cache_mb


class ModelService:
    def __init__(self):
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-model")
        self.loaded: Optional[Loaded] = None
        self.load_error: Optional[str] = None
        self._ready = threading.Event()
        self._loading: Optional[concurrent.futures.Future] = None

    # --- loading -------------------------------------------------------------------------

    def start_loading(self, settings: Settings, on_done: Callable[[Optional[str]], None]) -> concurrent.futures.Future:
        """Load (or reload) the model on the worker; on_done(error or None) runs when finished.

        A failed reload keeps the previous model (if any) serving.
        """
        self._ready.clear()
        self._loading = self.executor.submit(self._load, settings, on_done)
        return self._loading

    def _load(self, settings: Settings, on_done) -> None:
        started = time.perf_counter()
        try:
            engine = Engine.from_bundle(settings.bundle, device=settings.device, threads=settings.threads,
                                        cache_mb=settings.cache_mb)
            apply_budget(engine, settings)
            self.loaded = Loaded(engine, model_key(settings), time.perf_counter() - started)
            self.load_error = None
        except Exception as exc:  # a broken bundle must never take the server down
            self.load_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("model not loaded: %s", self.load_error)
        finally:
            self._ready.set()
        on_done(self.load_error)

    async def wait_ready(self, timeout: float) -> Engine:
        """The engine once loading has finished (waiting at most timeout s), else ModelUnavailable."""
        if not self._ready.is_set():
            loop = asyncio.get_running_loop()
            finished = await loop.run_in_executor(None, self._ready.wait, timeout)
            if not finished:
                raise ModelUnavailable("the model is still loading")
        if self.loaded is None:
            raise ModelUnavailable(f"no model: {self.load_error or 'not loaded'}")
        return self.loaded.engine

    # --- jobs ----------------------------------------------------------------------------

    async def run(self, fn: Callable[[Callable[[], bool]], Any], cancel: threading.Event) -> Any:
        """Run fn(should_cancel) on the worker; cancelling the awaiting task sets `cancel`."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, fn, cancel.is_set)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops before its next model call
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def apply_budget(engine: Engine, settings: Settings) -> None:
    """Context budgets from the settings, never beyond what the bundle allows."""
    default = engine.default_budget if hasattr(engine, "default_budget") else engine.budget
    engine.default_budget = default
    prefix = min(settings.prefix_tokens or default.prefix_tokens, default.prefix_tokens)
    suffix = min(settings.suffix_tokens or default.suffix_tokens, default.suffix_tokens)
    engine.budget = Budget(prefix_tokens=max(prefix, 1), suffix_tokens=suffix)


__all__ = ["ModelService", "ModelUnavailable", "DecodeCancelled", "apply_budget", "model_key"]
