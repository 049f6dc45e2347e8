"""The language server: pygls wiring, thin handlers, status and configuration.

Each handler converts LSP positions to text offsets (lsp_server.documents), calls
pure functions (inline, filters, diagnostics, repair) and the model service, and
converts the result back. Documents are kept by the server itself (see
documents.py); the model runs on one worker thread (service.py).

Reliability rules (issue 6): every request gets a result or a JSON-RPC error,
whatever the client sends (transport.py answers what pygls would drop); the
server never exits on bad input; a broken model or bundle is reported once and
the last good model keeps serving; no document text goes to the logs unless
logDocumentText is on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any, Optional

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcInvalidRequest, JsonRpcServerNotInitialized
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.workspace.position_codec import PositionCodec

from engine.decode import DecodeCancelled
from lsp_server import inline, transport, watch
from lsp_server.completion_cache import CompletionCache, Shown
from lsp_server.config import Settings, merge_settings
from lsp_server.documents import Document, DocumentStore, PositionError, count_units, model_text
from lsp_server.service import ModelService, ModelUnavailable, apply_budget, kv_problem, model_key, worker_error

NAME = "seed-diffusion-lsp"
VERSION = "0.1.0"
STATUS_NOTIFICATION = "seedLsp/status"
CMD_STATUS, CMD_TOGGLE, CMD_CLEAR_CACHE, CMD_DOCUMENT_HASH = (
    "seedLsp.status", "seedLsp.toggle", "seedLsp.clearCache", "seedLsp.documentHash")
# Test hooks (fault injection) exist only in a server started with this variable set to 1:
# an editor never sets it, so no client can make a user's server fail on purpose.
TEST_HOOKS_ENV = "SEED_LSP_TEST_HOOKS"
CMD_INJECT_FAULT = "seedLsp.test.injectFault"
# Requests that arrive while the model loads wait this long for it before giving up.
LOAD_WAIT_S = 60.0
log = logging.getLogger("seed_lsp.server")


class SeedProtocol(LanguageServerProtocol):
    """pygls's protocol, except that open documents are kept by SeedServer.documents,
    and the LSP lifecycle is enforced: before `initialize` a request gets ServerNotInitialized
    (-32002) and a notification is dropped (except `exit`); after `shutdown` a request gets
    InvalidRequest (pygls would leave both unanswered or run them)."""

    seen_initialize = False

    def handle_message(self, message):
        method = getattr(message, "method", None)
        request = method is not None and getattr(message, "id", None) is not None
        if method is not None and method != types.EXIT:
            if not self.seen_initialize and method != types.INITIALIZE:
                if request:
                    self._send_response(message.id, error=JsonRpcServerNotInitialized(
                        f"{method}: the server is not initialized yet").to_response_error())
                return
            if self._shutdown and request:
                self._send_response(message.id, error=JsonRpcInvalidRequest(
                    f"{method}: the server is shutting down").to_response_error())
                return
            if method == types.INITIALIZE:
                self.seen_initialize = True
        super().handle_message(message)

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


class SeedServer(LanguageServer):
    def __init__(self):
        super().__init__(NAME, VERSION, protocol_cls=SeedProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = Settings()
        self.documents = DocumentStore()
        self.model = ModelService()
        self.completions = CompletionCache()
        self.running: dict[str, threading.Event] = {}  # uri -> cancel flag of its inline request
        self.diagnostic_tasks: dict[str, asyncio.Task] = {}
        self.pending_messages: list[tuple[types.MessageType, str]] = []
        self.initialized = False
        self.last_latency_ms: Optional[float] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._codec: Optional[PositionCodec] = None
        self.watch_task: Optional[asyncio.Task] = None
        self.bundle_seen: Optional[tuple] = None  # fingerprint of the bundle folder last looked at
        self.bundle_fault: Optional[str] = None  # the bundle's problem on disk, once reported
        self.loads_pending = 0  # model loads started whose result the event loop has not seen yet

    # --- transport -----------------------------------------------------------------------

    def start_io(self, stdin=None, stdout=None) -> None:
        """stdio with lsp_server.transport's reader (answers what pygls's reader drops)."""
        from pygls.io_ import StdoutWriter

        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        read = transport.stdin_reader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(transport.serve(self._stop_event, read, self.protocol))
        except BrokenPipeError:
            log.error("the client closed the connection")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        """TCP (one client at a time, for debugging) with the same reader as stdio."""
        self._stop_event = stop = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)
            await transport.serve(stop, lambda: reader.read(transport.READ_CHUNK), self.protocol)
            self.shutdown()

        async def listen() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            log.info("listening on %s:%s", host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(listen())
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            pass

    def report_server_error(self, error: Exception, source) -> None:
        """Errors outside a request (a notification handler failed): logged by type, never with text."""
        log.error("internal error (%s): %s", getattr(source, "__name__", source), type(error).__name__)

    # --- helpers -------------------------------------------------------------------------

    @property
    def codec(self) -> PositionCodec:
        if self._codec is None:
            self._codec = PositionCodec(encoding=self.workspace.position_encoding)
        return self._codec

    def message(self, kind: types.MessageType, text: str) -> None:
        """window/showMessage, queued until the client has seen the initialize result."""
        if not self.initialized:
            self.pending_messages.append((kind, text))
            return
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"{NAME}: {text}"))

    def status(self) -> dict:
        loaded = self.model.loaded
        if loaded is not None and self.model._ready.is_set():
            state = "ready" if self.settings.enabled else "disabled"
        elif not self.model._ready.is_set():
            state = "loading"
        else:
            state = "error"
        return {
            "state": state,
            "enabled": self.settings.enabled,
            "model": loaded.engine.info.get("bundle") if loaded else None,
            "device": loaded.engine.info.get("provider") if loaded else None,
            "variant": loaded.engine.info.get("variant") if loaded else None,
            "error": self.model.load_error,
            "lastLatencyMs": self.last_latency_ms,
            "cacheHitRate": round(self.completions.hit_rate, 3),
            "bundleProblem": self.bundle_fault,
            # Sizes of what the server holds, so a soak run can show they stay bounded.
            "documents": len(self.documents),
            "completionCacheEntries": len(self.completions),
            "kvCacheMb": round(loaded.engine.prefix_cache.nbytes / 2**20, 2) if loaded else 0.0,
        }

    def send_status(self) -> None:
        if self.initialized:
            self.protocol.notify(STATUS_NOTIFICATION, self.status())

    def from_worker(self, fn, *args) -> None:
        """Run fn(*args) on the event loop (pygls's transport is not thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn, *args)

    def document(self, uri: str) -> Document:
        doc = self.documents.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"unknown document {uri} (not opened with didOpen)")
        return doc

    def offset(self, doc: Document, position: types.Position) -> int:
        try:
            return doc.offset_at(position, self.codec)
        except PositionError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None

    def serves(self, doc: Document, feature: bool) -> bool:
        return self.settings.enabled and feature and self.settings.serves(doc.language_id)

    def take_over(self, uri: str) -> threading.Event:
        """A cancel flag for a new request on uri; the older request's flag is set."""
        previous = self.running.get(uri)
        if previous is not None:
            previous.set()
        flag = threading.Event()
        self.running[uri] = flag
        return flag

    def release(self, uri: str, flag: threading.Event) -> None:
        if self.running.get(uri) is flag:
            del self.running[uri]

    # --- model ---------------------------------------------------------------------------

    def load_model(self) -> None:
        token = str(uuid.uuid4()) if self.supports_progress() else None
        if token is not None:
            self.work_done_progress.create(token)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="Loading the completion model"))

        root = watch.bundle_root(self.settings.bundle)
        seen = watch.fingerprint(root)
        self.loads_pending += 1

        def done(error: Optional[str]) -> None:
            self.loads_pending -= 1
            if token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=error or "ready"))
            # The folder as it was when loading began: a change during the load is looked at next.
            self.bundle_seen = seen
            if error:
                keep = " (the previous model keeps serving)" if self.model.loaded else ""
                self.message(types.MessageType.Error, f"model not loaded: {error}{keep}")
                self.bundle_fault = error  # reported: the watcher does not say it again
            else:
                self.bundle_fault = None
            self.send_status()

        self.model.start_loading(self.settings, lambda error: self.from_worker(done, error))

    async def watch_bundle(self) -> None:
        """Poll the configured bundle folder; verify it when it changed; report a fault once."""
        loop = asyncio.get_running_loop()
        while True:
            interval = self.settings.bundle_check_ms
            await asyncio.sleep(interval / 1000 if interval else 1.0)
            if not interval or self.loads_pending:
                continue
            try:
                await self.check_bundle(loop)
            except Exception as exc:  # the watcher must not die (nor take anything with it)
                log.error("bundle check failed: %s", type(exc).__name__)

    async def check_bundle(self, loop: asyncio.AbstractEventLoop) -> None:
        root = watch.bundle_root(self.settings.bundle)
        seen = await loop.run_in_executor(None, watch.fingerprint, root)
        if seen == self.bundle_seen:
            return
        verdict = await loop.run_in_executor(None, watch.verify, root)
        if self.loads_pending or root != watch.bundle_root(self.settings.bundle):
            return  # a (re)load started meanwhile: it reports on the folder itself
        self.bundle_seen = seen
        loaded = self.model.loaded
        if not verdict.ok:
            if self.bundle_fault is None:
                keep = "the loaded model keeps serving" if loaded else "no model is loaded"
                self.message(types.MessageType.Error,
                             f"model bundle changed on disk and cannot be used: {verdict.error} ({keep})")
                log.warning("bundle on disk unusable: %s", verdict.error)
            self.bundle_fault = verdict.error
            self.send_status()
            return
        self.bundle_fault = None
        if loaded is None or loaded.settings_key != model_key(self.settings) or loaded.files != verdict.files:
            log.info("bundle on disk changed and verifies: reloading the model")
            self.load_model()
        else:
            self.send_status()

    def supports_progress(self) -> bool:
        window = getattr(self.client_capabilities, "window", None)
        return bool(window and window.work_done_progress)

    def apply_settings(self, raw: Any, *, initial: bool = False) -> None:
        before = self.settings
        after, errors = merge_settings(before, raw)
        for error in errors:
            self.message(types.MessageType.Warning, f"setting ignored: {error}")
        loaded = self.model.loaded
        # The same bundle has the same dimensions: check now (another bundle is checked as it loads).
        if not initial and loaded is not None and before.bundle == after.bundle:
            refused = kv_problem(loaded.engine, after)
            if refused:  # the out-of-memory guard: keep every previous setting
                self.message(types.MessageType.Error, refused)
                log.warning("settings refused by the KV-cache guard")
                return
        self.settings = after
        configure_logging(self.settings.log_level, self.settings.log_document_text)
        if initial:
            return
        if model_key(before) != model_key(self.settings):
            self.load_model()
        elif self.model.loaded is not None:
            apply_budget(self.model.loaded.engine, self.settings)
        self.send_status()

    # --- completions ---------------------------------------------------------------------

    async def complete_at(self, uri: str, position: types.Position, *, mode: Optional[str] = None,
                          n: Optional[int] = None) -> tuple[Document, int, list[str]]:
        """Filtered completion texts at position (possibly from the cache), [] when there are none."""
        doc = self.document(uri)
        offset = self.offset(doc, position)
        prefix, suffix = doc.text[:offset], doc.text[offset:]
        version = doc.version
        cached = self.completions.lookup(uri, prefix, suffix) if mode is None else None
        if cached is not None:
            return doc, offset, list(cached.texts)
        # The model sees lone surrogates as U+FFFD (one character each: offsets hold).
        model_prefix, model_suffix = model_text(prefix), model_text(suffix)
        if self.settings.log_document_text:  # opted in (debug only): what the model is asked
            log.debug("completion context: %r|%r", prefix[-120:], suffix[:60])
        flag = self.take_over(uri)
        try:
            engine = await self.model.wait_ready(LOAD_WAIT_S)
            deadline = time.monotonic() + self.settings.request_timeout_ms / 1000
            settings = self.settings
            candidates, stats = await self.model.run(
                lambda should_cancel: inline.complete(engine, uri, model_prefix, model_suffix, settings, mode=mode,
                                                      n=n, should_cancel=should_cancel, deadline=deadline), flag)
        except DecodeCancelled:
            return doc, offset, []  # a newer request for this document took over
        except ModelUnavailable as exc:
            log.warning("no completion: %s", exc)
            return doc, offset, []
        except Exception as exc:  # the worker raised: this request fails, the next one is served
            raise worker_error("completion", exc) from None
        finally:
            self.release(uri, flag)
        if self.documents.get(uri) is not doc or doc.version != version or len(doc.text) < offset \
                or doc.text[:offset] != prefix:
            return doc, offset, []  # computed for an outdated document: never show it
        self.last_latency_ms = stats["ms"]
        log.info("completion %s: %s ms, %s tokens, %s passes, %s cached", stats["mode"], stats["ms"],
                 stats["tokens"], stats["forward_passes"], stats["cached_tokens"])
        texts = [c.text for c in candidates]
        if mode is None:
            self.completions.put(uri, prefix, suffix, Shown(tuple(texts), tuple(c.confidences for c in candidates)))
        self.send_status()
        return doc, offset, texts

    # --- diagnostics ---------------------------------------------------------------------

    def schedule_diagnostics(self, uri: str) -> None:
        task = self.diagnostic_tasks.pop(uri, None)
        if task is not None:
            task.cancel()
        doc = self.documents.get(uri)
        if doc is None or not self.settings.diagnostics or doc.language_id != "python":
            return
        self.diagnostic_tasks[uri] = asyncio.ensure_future(self.publish_diagnostics(uri))

    async def publish_diagnostics(self, uri: str) -> None:
        from lsp_server.diagnostics import SOURCE, python_syntax_errors

        await asyncio.sleep(self.settings.debounce_ms / 1000)
        doc = self.documents.get(uri)
        if doc is None:
            return
        text, version = doc.text, doc.version
        problems = await asyncio.get_running_loop().run_in_executor(None, python_syntax_errors, text)
        if self.documents.get(uri) is not doc or doc.version != version:
            return  # a newer change schedules its own run
        diagnostics = [
            types.Diagnostic(range=self.problem_range(doc, p), message=p.message, source=SOURCE,
                             severity=types.DiagnosticSeverity.Error)
            for p in problems
        ]
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=version))

    def problem_range(self, doc: Document, problem) -> types.Range:
        def position(line: int, character: int) -> types.Position:
            line = min(line, len(doc.line_starts) - 1)
            text = doc.line_text(line)
            return types.Position(line=line, character=count_units(text[:character], self.codec))

        return types.Range(start=position(*problem.start), end=position(*problem.end))


class ClientLogHandler(logging.Handler):
    """Forwards the server's log records to the client as window/logMessage (any thread)."""

    LEVELS = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
              logging.INFO: types.MessageType.Info}

    def __init__(self, server: "SeedServer"):
        super().__init__()
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        if not self.server.initialized:
            return
        kind = self.LEVELS.get(record.levelno, types.MessageType.Log)
        params = types.LogMessageParams(type=kind, message=self.format(record))
        self.server.from_worker(self.server.window_log_message, params)


def configure_logging(level: str, document_text: bool = False) -> None:
    """Our log at the configured level on stderr. pygls's own log quotes every message it
    sends or receives (document text), so it stays silent unless debug with logDocumentText."""
    logging.getLogger("seed_lsp").setLevel(level.upper())
    logging.getLogger("pygls").setLevel(logging.DEBUG if level == "debug" and document_text else logging.CRITICAL)


def create_server() -> SeedServer:
    server = SeedServer()
    register_handlers(server)
    logging.getLogger("seed_lsp").addHandler(ClientLogHandler(server))
    return server


def register_handlers(server: SeedServer) -> None:
    from lsp_server import actions

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: SeedServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options, initial=True)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: SeedServer, params: types.InitializedParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.initialized = True
        for kind, text in ls.pending_messages:
            ls.message(kind, text)
        ls.pending_messages.clear()
        ls.load_model()
        ls.send_status()
        ls.watch_task = asyncio.ensure_future(ls.watch_bundle())

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: SeedServer, *args) -> None:
        for flag in ls.running.values():
            flag.set()
        if ls.watch_task is not None:
            ls.watch_task.cancel()
        ls.model.shutdown()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: SeedServer, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        ls.documents.open(item.uri, item.text, item.version, item.language_id)
        ls.schedule_diagnostics(item.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: SeedServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        doc = ls.documents.get(uri)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", uri)
            return
        try:
            doc.apply_changes(params.content_changes, ls.codec)
        except PositionError as exc:
            # None of the changes is applied (all or nothing): the document stays as it was.
            ls.message(types.MessageType.Warning,
                       f"bad change ignored ({exc}): none of its edits applied; reopen the file if it looks out of sync")
            return
        doc.version = params.text_document.version
        ls.model.document_changed()  # (a job paused by the test hook goes on)
        ls.schedule_diagnostics(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: SeedServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.documents.close(uri)
        ls.completions.forget(uri)
        if ls.model.loaded is not None:
            ls.model.loaded.engine.forget(uri)
        task = ls.diagnostic_tasks.pop(uri, None)
        if task is not None:
            task.cancel()
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: SeedServer, params: types.InlineCompletionParams):
        doc = ls.document(params.text_document.uri)
        if not ls.serves(doc, ls.settings.inline_completion):
            return None
        doc, offset, texts = await ls.complete_at(doc.uri, params.position)
        if not texts:
            return types.InlineCompletionList(items=[])
        at = doc.position_at(offset, ls.codec)
        return types.InlineCompletionList(items=[
            types.InlineCompletionItem(insert_text=text, range=types.Range(start=at, end=at)) for text in texts])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: SeedServer, params: types.CompletionParams):
        doc = ls.document(params.text_document.uri)
        if not ls.serves(doc, ls.settings.completion_items):
            return None
        doc, offset, texts = await ls.complete_at(doc.uri, params.position, mode="line", n=1)
        at = doc.position_at(offset, ls.codec)
        items = [
            types.CompletionItem(
                label=text.strip()[:80] or text, kind=types.CompletionItemKind.Text, detail=NAME,
                sort_text="0", filter_text=text.strip(), insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=types.Range(start=at, end=at), new_text=text),
            )
            for text in texts
        ]
        return types.CompletionList(is_incomplete=True, items=items)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: SeedServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.command(CMD_STATUS)
    def cmd_status(ls: SeedServer, *args) -> dict:
        return ls.status()

    @server.command(CMD_TOGGLE)
    def cmd_toggle(ls: SeedServer, *args) -> dict:
        ls.apply_settings({"enabled": not ls.settings.enabled})
        return ls.status()

    @server.command(CMD_CLEAR_CACHE)
    def cmd_clear_cache(ls: SeedServer, *args) -> dict:
        ls.completions.clear()
        if ls.model.loaded is not None:
            ls.model.loaded.engine.prefix_cache.clear()
        return ls.status()

    @server.command(CMD_DOCUMENT_HASH)
    def cmd_document_hash(ls: SeedServer, *args) -> Optional[str]:
        uri = args[0][0] if args and isinstance(args[0], list) and args[0] else (args[0] if args else None)
        doc = ls.documents.get(uri) if isinstance(uri, str) else None
        return doc.sha256() if doc is not None else None

    if os.environ.get(TEST_HOOKS_ENV) == "1":
        @server.command(CMD_INJECT_FAULT)
        def cmd_inject_fault(ls: SeedServer, *args) -> dict:
            """Test hook. Arguments [N] (default 1): the next N model jobs raise on the worker.
            ["pause", N]: the next N model jobs pause inside the engine until the next
            didChange (see ModelService.inject_pauses)."""
            values = args[0] if args and isinstance(args[0], list) else list(args)
            kind = values.pop(0) if values and isinstance(values[0], str) else "raise"
            count = values[0] if values and isinstance(values[0], int) else 1
            if kind == "pause":
                ls.model.inject_pauses(count)
                log.warning("test hook: the next %d model jobs will pause until a document changes", count)
                return {"pauses": count}
            if kind != "raise":
                raise JsonRpcInvalidParams(f"unknown fault {kind!r} (raise, pause)")
            ls.model.inject_faults(count)
            log.warning("test hook: the next %d model jobs will fail", count)
            return {"faults": count}

    actions.register(server)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="seed-lsp serve", description="the seed-diffusion language server")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_logging(args.log_level)
    # asyncio's "exception was never retrieved" reports carry the exception's text.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL if args.log_level != "debug" else logging.DEBUG)
    server = create_server()
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    return 0
