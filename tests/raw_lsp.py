"""A raw JSON-RPC client for the language server: a real server process over stdio, no validation.

tests/lsp_client.py (pygls's client) checks what it sends, so it cannot send a
negative position, a wrong Content-Length or invalid JSON; this one sends any
dict or any bytes. Synchronous (a reader thread resolves futures), so hypothesis
state machines and plain loops can drive it. Also used by bench/soak.py.

Every response, notification and server request is kept; responses without a
pending request (e.g. parse errors, whose id is null) go to `orphans`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]

REQUEST_CANCELLED, INVALID_PARAMS, INTERNAL_ERROR = -32800, -32602, -32603


class ServerDied(AssertionError):
    pass


def frame(message: Any) -> bytes:
    # ensure_ascii: lone surrogates travel as \\udXXX escapes, as a JavaScript client sends them.
    body = json.dumps(message, ensure_ascii=True).encode("ascii")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class RawServer:
    def __init__(self, log_path: Path, *, args: tuple = (), env: Optional[dict] = None,
                 command: Optional[list] = None):
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(command or [sys.executable, "-m", "lsp_server", *args], cwd=ROOT,
                                     env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self.pid = self.proc.pid
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.pending: dict[Any, concurrent.futures.Future] = {}
        self.notifications: list[dict] = []
        self.orphans: list[dict] = []  # responses nobody waits for (id null: parse errors, invalid requests)
        self.server_requests: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # --- wire ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def send(self, message: dict) -> None:
        self.write(frame(message))

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self._fail_pending()
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = out.read(length or 0)
            if len(body) < (length or 0):
                self._fail_pending()
                return
            self._dispatch(json.loads(body))

    def _dispatch(self, message: dict) -> None:
        if "method" in message and "id" in message:  # a server request: answer it
            self.server_requests.append(message)
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif "method" in message:
            with self._lock:
                self.notifications.append(message)
        else:
            with self._lock:
                future = self.pending.pop(message.get("id"), None)
            if future is None:
                self.orphans.append(message)
            else:
                future.set_result(message)

    def _fail_pending(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, {}
        for future in pending.values():
            future.set_exception(ServerDied(f"server closed stdout; log: {self.log_text()[-1500:]}"))

    # --- JSON-RPC ------------------------------------------------------------------------

    def request_async(self, method: str, params: Any = None, msg_id: Any = None) -> tuple[Any, concurrent.futures.Future]:
        msg_id = next(self._ids) if msg_id is None else msg_id
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self.pending[msg_id] = future
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return msg_id, future

    def expect(self, msg_id: Any) -> concurrent.futures.Future:
        """A future for the response to msg_id, for a request sent as raw bytes or a hand-made dict."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self.pending[msg_id] = future
        return future

    def request(self, method: str, params: Any = None, timeout: float = 60.0) -> dict:
        """The response message (with "result" or "error"); AssertionError if none comes in time."""
        msg_id, future = self.request_async(method, params)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise AssertionError(f"no answer to {method} within {timeout} s (alive: {self.alive()})") from None

    def result(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        response = self.request(method, params, timeout)
        assert "error" not in response, response
        return response.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def cancel(self, msg_id: Any) -> None:
        self.notify("$/cancelRequest", {"id": msg_id})

    # --- LSP -----------------------------------------------------------------------------

    def initialize(self, options: Optional[dict] = None, capabilities: Optional[dict] = None) -> dict:
        result = self.result("initialize", {"processId": os.getpid(), "rootUri": None,
                                            "capabilities": capabilities or {},
                                            "initializationOptions": options or {}})
        self.notify("initialized", {})
        return result

    def statuses(self) -> list[dict]:
        with self._lock:
            return [n["params"] for n in self.notifications if n["method"] == "seedLsp/status"]

    def shown(self) -> list[str]:
        """window/showMessage texts so far."""
        with self._lock:
            return [n["params"]["message"] for n in self.notifications if n["method"] == "window/showMessage"]

    def logged(self) -> list[str]:
        """window/logMessage texts so far."""
        with self._lock:
            return [n["params"]["message"] for n in self.notifications if n["method"] == "window/logMessage"]

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = self.statuses()
            if statuses and statuses[-1].get("state") in ("ready", "error", "disabled"):
                return statuses[-1]
            if not self.alive():
                raise ServerDied(self.log_text()[-2000:])
            time.sleep(0.05)
        raise AssertionError(f"server not ready; log: {self.log_text()[-2000:]}")

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def open(self, uri: str, text: str, version: int = 1, language: str = "python") -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": language,
                                                              "version": version, "text": text}})

    def change(self, uri: str, version: int, changes: list[dict]) -> None:
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                               "contentChanges": changes})

    def close_document(self, uri: str) -> None:
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def inline_params(self, uri: str, line: int, character: int) -> dict:
        return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
                "context": {"triggerKind": 2}}

    def document_hash(self, uri: str) -> Optional[str]:
        return self.result("workspace/executeCommand", {"command": "seedLsp.documentHash", "arguments": [uri]})

    def command(self, name: str, *arguments) -> dict:
        return self.request("workspace/executeCommand", {"command": name, "arguments": list(arguments)})

    # --- process -------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self, timeout: float = 10.0) -> Optional[int]:
        """shutdown + exit; the exit code (None if it had to be killed)."""
        try:
            if self.alive():
                self.request("shutdown", None, timeout=timeout)
                self.notify("exit")
            return self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            self.proc.wait(5)
            return None
        finally:
            self._log.close()

    def __enter__(self) -> "RawServer":
        return self

    def __exit__(self, *exc) -> None:
        if self.alive():
            self.close()
        else:
            self._log.close()
