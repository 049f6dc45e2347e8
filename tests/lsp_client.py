"""A test client for the language server: a real server process over stdio, driven by pygls.

The server's stderr goes to a file (a pipe nobody reads would fill up and block
the server); notifications the tests care about are collected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

from lsprotocol import types
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("tests.lsp_client")


def as_dict(value: Any) -> Any:
    """pygls hands untyped notification params over as namedtuples: back to plain dicts."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    return value


class SeedClient(LanguageClient):
    def __init__(self):
        super().__init__("seed-lsp-tests", "0")
        self.statuses: list[dict] = []
        self.messages: list[types.ShowMessageParams] = []
        self.log_messages: list[str] = []
        self.diagnostics: dict[str, list[types.Diagnostic]] = {}
        self.stderr_path: Optional[Path] = None
        self.progress: list = []
        self.server_capabilities: Optional[types.ServerCapabilities] = None

        @self.feature("seedLsp/status")
        def on_status(params):
            self.statuses.append(as_dict(params))

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams):
            self.messages.append(params)

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def on_log_message(params: types.LogMessageParams):
            self.log_messages.append(params.message)

        @self.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: types.PublishDiagnosticsParams):
            self.diagnostics[params.uri] = params.diagnostics

        @self.feature(types.PROGRESS)
        def on_progress(params):
            self.progress.append(as_dict(params))

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def on_progress_create(params):
            return None

    async def start_server(self, stderr_path: Path, *args: str, env: Optional[dict] = None) -> None:
        self.stderr_path = stderr_path
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lsp_server", *args, cwd=ROOT, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=open(stderr_path, "wb"))
        self.protocol.set_writer(server.stdin)
        connection = asyncio.create_task(run_async(stop_event=self._stop_event, reader=server.stdout,
                                                   protocol=self.protocol, logger=log,
                                                   error_handler=self.report_server_error))
        self._server = server
        self._async_tasks.extend([connection, asyncio.create_task(self._server_exit())])

    @property
    def process(self):
        return self._server

    async def initialize_server(self, options: Optional[dict] = None, encodings=None,
                                resolve_support: bool = True, progress: bool = True) -> types.InitializeResult:
        capabilities = types.ClientCapabilities(
            general=types.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
            window=types.WindowClientCapabilities(work_done_progress=progress),
            text_document=types.TextDocumentClientCapabilities(
                code_action=types.CodeActionClientCapabilities(
                    resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]) if resolve_support else None,
                ),
            ),
        )
        result = await self.initialize_async(types.InitializeParams(
            process_id=os.getpid(), root_uri=None, capabilities=capabilities, initialization_options=options or {}))
        self.initialized(types.InitializedParams())
        self.server_capabilities = result.capabilities
        return result

    async def wait_ready(self, timeout: float = 120.0) -> dict:
        """Wait for a status notification saying the model finished loading (ready or error)."""
        for _ in range(int(timeout * 20)):
            if self.statuses and self.statuses[-1].get("state") in ("ready", "error", "disabled"):
                return self.statuses[-1]
            await asyncio.sleep(0.05)
        raise TimeoutError(f"server not ready; stderr: {self.stderr_text()[-2000:]}")

    async def wait_log(self, part: str, timeout: float = 120.0) -> str:
        """Wait for a window/logMessage containing part (the first one after those already seen counts too)."""
        for _ in range(int(timeout * 20)):
            found = next((m for m in self.log_messages if part in m), None)
            if found is not None:
                return found
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no log message with {part!r}; stderr: {self.stderr_text()[-2000:]}")

    def open(self, uri: str, text: str, version: int = 1, language: str = "python") -> None:
        self.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))

    def change(self, uri: str, version: int, changes: list) -> None:
        self.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version), content_changes=changes))

    async def inline(self, uri: str, line: int, character: int) -> Any:
        return await self.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))

    async def command(self, name: str, *arguments) -> Any:
        return as_dict(await self.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(arguments))))

    async def document_hash(self, uri: str) -> Optional[str]:
        return await self.command("seedLsp.documentHash", uri)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path and self.stderr_path.exists() else ""

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.shutdown_async(None), 10)
            self.exit(None)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.stop(), 10)
        except Exception:
            if self._server is not None and self._server.returncode is None:
                self._server.kill()
