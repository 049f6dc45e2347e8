"""The model behind the server: loading it, running jobs on one worker thread, cancellation.

Everything that touches the engine goes through one single-thread executor: a
CPU model call is fastest alone, and the engine's caches stay consistent. Async
handlers await the worker; when pygls cancels a handler ($/cancelRequest, or a
newer request for the same document), the job's cancel flag is set and the
decode loop stops before its next model call.

A job that raises on the worker fails only its own request: the worker thread
lives on. Tests can make the next jobs raise (`inject_faults`) or pause inside
the engine until the next document change (`inject_pauses`), but only when the
server was started with the test-hook environment variable (server.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pygls.exceptions import JsonRpcInternalError

from engine.decode import DecodeCancelled
from engine.engine import Engine
from engine.jobs import Budget
from lsp_server import memory
from lsp_server.config import Settings
from lsp_server.watch import bundle_root, manifest_files

log = logging.getLogger("seed_lsp.server")


class ModelUnavailable(Exception):
    """No model is loaded (still loading, or loading failed); the message says which."""


class InjectedFault(RuntimeError):
    """Raised on the worker instead of running a job (test hook only)."""


# A paused job (test hook) waits at most this long for a document change, then goes on.
PAUSE_TIMEOUT_S = 60.0


@dataclass
class Loaded:
    engine: Engine
    settings_key: tuple  # the settings it was loaded with (reload when they change)
    seconds: float
    files: Optional[dict] = None  # bundle.json's name -> sha256 at load (to tell a replaced bundle)


def model_key(settings: Settings) -> tuple:
    return settings.bundle, settings.device, settings.threads, settings.cache_mb


class ModelService:
    def __init__(self):
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-model")
        self.loaded: Optional[Loaded] = None
        self.load_error: Optional[str] = None
        self._ready = threading.Event()
        self._loading: Optional[concurrent.futures.Future] = None
        self._faults = 0  # jobs left to fail (test hook)
        self._pauses = 0  # jobs left to pause until a document changes (test hook)
        self._resume = threading.Event()  # set by a document change: paused jobs go on
        self._faults_lock = threading.Lock()

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
            files = manifest_files(bundle_root(settings.bundle))
            engine = Engine.from_bundle(settings.bundle, device=settings.device, threads=settings.threads,
                                        cache_mb=settings.cache_mb)
            apply_budget(engine, settings)
            refused = kv_problem(engine, settings)
            if refused:
                raise MemoryError(refused)
            self.loaded = Loaded(engine, model_key(settings), time.perf_counter() - started, files)
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

    def inject_faults(self, count: int) -> None:
        """Make the next `count` jobs raise InjectedFault on the worker (test hook)."""
        with self._faults_lock:
            self._faults = max(0, int(count))

    def inject_pauses(self, count: int) -> None:
        """Make the next `count` jobs pause inside the engine until a document changes (test hook).

        The job pauses at its first cancellation check (before its first model
        call), says so in the log ("test hook: a model job is paused"), and goes on
        when `document_changed` is called after this (or after PAUSE_TIMEOUT_S). A
        test can thus change the document while a decode is running, every time.
        """
        with self._faults_lock:
            self._pauses = max(0, int(count))
            self._resume.clear()

    def document_changed(self) -> None:
        """A document changed: jobs paused by the test hook go on (cheap no-op otherwise)."""
        self._resume.set()

    def _job(self, fn: Callable[[Callable[[], bool]], Any], should_cancel: Callable[[], bool]) -> Any:
        with self._faults_lock:
            fail, self._faults = self._faults > 0, max(0, self._faults - 1)
            pause, self._pauses = self._pauses > 0, max(0, self._pauses - 1)
        if fail:
            raise InjectedFault("injected fault: the model worker raised (test hook)")
        if pause:
            should_cancel = self._paused(should_cancel)
        return fn(should_cancel)

    def _paused(self, should_cancel: Callable[[], bool]) -> Callable[[], bool]:
        """should_cancel that, the first time the engine asks, waits for a document change."""
        waiting = [True]

        def check() -> bool:
            if waiting[0]:
                waiting[0] = False
                log.warning("test hook: a model job is paused until the next document change")
                if not self._resume.wait(PAUSE_TIMEOUT_S):
                    log.warning("test hook: no document change came; the paused job goes on")
            return should_cancel()

        return check

    async def run(self, fn: Callable[[Callable[[], bool]], Any], cancel: threading.Event) -> Any:
        """Run fn(should_cancel) on the worker; cancelling the awaiting task sets `cancel`."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self._job, fn, cancel.is_set)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops before its next model call
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def worker_error(what: str, exc: BaseException) -> JsonRpcInternalError:
    """The JSON-RPC error for a job that raised on the model worker (logged by type, not text).

    Exception messages can quote the document (a tokenizer error, say), so the log
    and the reply name the exception's type only; its frames (without the message)
    go to the log at debug level.
    """
    log.error("%s failed on the model worker: %s", what, type(exc).__name__)
    log.debug("%s: where the worker raised %s:\n%s", what, type(exc).__name__,
              "".join(traceback.format_tb(exc.__traceback__)))
    return JsonRpcInternalError(f"{what} failed: the model worker raised {type(exc).__name__}")


def budget_for(default: Budget, settings: Settings) -> Budget:
    """Context budgets from the settings, never beyond what the bundle allows (default)."""
    prefix = min(settings.prefix_tokens or default.prefix_tokens, default.prefix_tokens)
    suffix = min(settings.suffix_tokens or default.suffix_tokens, default.suffix_tokens)
    return Budget(prefix_tokens=max(prefix, 1), suffix_tokens=suffix)


def apply_budget(engine: Engine, settings: Settings) -> None:
    """Context budgets from the settings, never beyond what the bundle allows."""
    default = engine.default_budget if hasattr(engine, "default_budget") else engine.budget
    engine.default_budget = default
    engine.budget = budget_for(default, settings)


def kv_problem(engine: Engine, settings: Settings) -> Optional[str]:
    """The out-of-memory guard's refusal for these settings on this engine, or None."""
    default = engine.default_budget if hasattr(engine, "default_budget") else engine.budget
    budget = budget_for(default, settings)
    return memory.check(memory.dims_of(engine), budget.prefix_tokens + budget.suffix_tokens, settings)


__all__ = ["ModelService", "ModelUnavailable", "InjectedFault", "DecodeCancelled", "apply_budget", "kv_problem",
           "model_key", "worker_error"]
