"""The stdio transport: LSP base-protocol framing and JSON-RPC checks that never give up on the client.

pygls's own reader (pygls.io_.run_async) silently drops what it cannot parse:
a request whose params do not validate gets no answer at all (the editor waits
forever), invalid JSON gets no JSON-RPC error, and a wrong Content-Length
desynchronizes the stream for good. This module replaces it for stdio:

- `FrameParser` (pure, no I/O) turns bytes into message bodies and framing
  errors. Header names are case-insensitive; a header block without a valid
  Content-Length is an error; after junk it resynchronizes at the next
  "Content-Length:" header; a body that turns out to hold the start of the next
  message (the declared length was too long) is split there.
- `check_message` (pure) classifies a parsed JSON value the way the JSON-RPC 2.0
  spec asks: not an object -> Invalid Request (-32600, id null), invalid JSON
  -> Parse error (-32700, id null), a request whose params do not fit the
  method -> Invalid params (-32602) with its id.
- `serve` reads stdin in a worker thread and hands each message to the pygls
  protocol on the event loop.

Nothing here logs a message body: bodies carry document text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Optional, Union

log = logging.getLogger("seed_lsp.transport")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
# A 5 MB document with every character escaped (\uXXXX) is about 30 MB of JSON; beyond
# this a Content-Length is a corrupt header, not a message to wait for.
MAX_BODY = 256 * 2**20
MAX_HEADER_BLOCK = 8192
HEADER_START = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)
HEADER_LINE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:[^\r\n]*$")
BLANK_LINE = re.compile(rb"\r?\n\r?\n")
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class Frame:
    body: bytes


@dataclass(frozen=True)
class FramingError:
    message: str


Event = Union[Frame, FramingError]


@dataclass
class FrameParser:
    """Incremental LSP base-protocol parser: feed() bytes, then next() until it returns None."""

    buffer: bytearray = field(default_factory=bytearray)
    length: Optional[int] = None  # Content-Length of the body being read, None while in headers

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def push_back(self, data: bytes) -> None:
        """Parse data again before what is buffered (a body that held the next message's start)."""
        self.buffer[:0] = data

    def next(self) -> Optional[Event]:
        """The next complete Frame or FramingError, or None until more bytes arrive."""
        while True:
            if self.length is not None:
                if len(self.buffer) < self.length:
                    return None
                body = bytes(self.buffer[: self.length])
                del self.buffer[: self.length]
                self.length = None
                return Frame(body)
            event = self._headers()
            if event is not False:
                return event  # a FramingError, or None (need more bytes)
            # headers parsed: read the body

    def _headers(self):
        """False once a valid header block is consumed (self.length set); else an error or None."""
        blank = len(self.buffer) - len(self.buffer.lstrip(b" \t\r\n"))
        if blank:
            del self.buffer[:blank]  # stray line breaks between messages are harmless
        end = BLANK_LINE.search(self.buffer)
        if end is None:
            if len(self.buffer) <= MAX_HEADER_BLOCK:
                return None
            # No header block ends here: drop the junk, keeping a possible header start.
            start = HEADER_START.search(self.buffer, 1)
            cut = start.start() if start else len(self.buffer) - 32
            del self.buffer[:cut]
            return FramingError("header block too long or not terminated")
        block = bytes(self.buffer[: end.start()])
        lines = [line.rstrip(b"\r") for line in block.split(b"\n")]
        line_starts = {0, *(i + 1 for i, byte in enumerate(block) if byte == 0x0A)}
        glued = any(m.start() not in line_starts for m in HEADER_START.finditer(block))
        if glued or not all(HEADER_LINE.match(line) for line in lines):
            # Junk, maybe ending where a real header starts (the rest of a body whose
            # Content-Length was too short, glued to the next message): resync there.
            starts = [m.start() for m in HEADER_START.finditer(block)]
            cut = starts[-1] if starts and starts[-1] > 0 else end.end()
            del self.buffer[:cut]
            return FramingError(f"{cut} bytes that are not a header block skipped")
        del self.buffer[: end.end()]
        try:
            self.length = parse_headers(block)
        except ValueError as exc:
            return FramingError(str(exc))
        return False


def parse_headers(block: bytes) -> int:
    """The Content-Length of a header block; ValueError saying what is wrong."""
    length = None
    for raw in block.split(b"\n"):
        line = raw.strip(b"\r")
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("malformed header line (no ':')")
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                raise ValueError("Content-Length is not a number")
            length = int(text)
    if length is None:
        raise ValueError("no Content-Length header")
    if length > MAX_BODY:
        raise ValueError(f"Content-Length {length} is larger than {MAX_BODY}")
    return length


# --- JSON-RPC -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An error response to send instead of dispatching (id None = JSON null)."""

    id: Union[int, str, None]
    code: int
    message: str

    def as_json(self) -> dict:
        return {"jsonrpc": "2.0", "id": self.id, "error": {"code": self.code, "message": self.message}}


def valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_message(data: Any) -> Optional[Reply]:
    """None if data is a JSON-RPC 2.0 message we can dispatch, else the error to answer (JSON-RPC spec).

    A malformed notification (no id) has no one to answer: the Reply says so with
    id None and the caller only logs it... except that the spec wants Invalid Request
    answered with id null when the id cannot be determined, which is what we do for
    anything that is not an object or lacks a method and a result/error.
    """
    if not isinstance(data, dict):
        what = "a batch (LSP has no batches)" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        return Reply(None, INVALID_REQUEST, f"invalid request: {what}, expected an object")
    msg_id = data.get("id")
    reply_id = msg_id if valid_id(msg_id) else None
    if data.get("jsonrpc") != "2.0":
        return Reply(reply_id, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    if "id" in data and msg_id is not None and not valid_id(msg_id):
        return Reply(None, INVALID_REQUEST, "invalid request: id must be a string or an integer")
    if "method" in data:
        if not isinstance(data["method"], str):
            return Reply(reply_id, INVALID_REQUEST, "invalid request: method must be a string")
        params = data.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            return Reply(reply_id, INVALID_PARAMS, "invalid params: params must be an object or an array")
        return None
    if "id" in data and ("result" in data or "error" in data):
        return None  # a response to one of our requests
    return Reply(reply_id, INVALID_REQUEST, "invalid request: no method")


def has_handler(protocol, method: str) -> bool:
    features = getattr(protocol, "fm", None)
    if features is None:
        return True  # let the protocol decide
    return method in features.builtin_features or method in features.features


def is_request(data: dict) -> bool:
    return "method" in data and valid_id(data.get("id"))


def handle_body(protocol, body: bytes, parser: Optional[FrameParser] = None) -> None:
    """Parse one body and dispatch it to the pygls protocol, answering every request."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        send(protocol, Reply(None, PARSE_ERROR, f"parse error: {type(exc).__name__} at byte {getattr(exc, 'pos', '?')}"))
        if parser is not None:
            split_at = HEADER_START.search(body, 1)
            if split_at is not None:  # the declared length swallowed the next message
                parser.push_back(body[split_at.start():])
        return
    problem = check_message(data)
    if problem is not None:
        if problem.id is not None or not (isinstance(data, dict) and "method" in data and "id" not in data):
            send(protocol, problem)
        else:
            log.warning("malformed notification dropped: %s", problem.message)
        return
    if "method" in data:
        data.setdefault("params", None)  # optional in JSON-RPC; pygls's fallback types require it
        if is_request(data) and not has_handler(protocol, data["method"]):
            # Before its params are checked: a method we do not serve is "not found" however it is called.
            send(protocol, Reply(data["id"], METHOD_NOT_FOUND, f"method not found: {data['method'][:100]}"))
            return
    try:
        message = protocol.structure_message(data)
    except Exception as exc:  # pygls raises JsonRpcInvalidParams / InternalError with a traceback logged
        if is_request(data):
            send(protocol, Reply(data["id"], INVALID_PARAMS, f"invalid params for {data['method']}: {first_line(exc)}"))
        else:
            log.warning("%s dropped: its params do not validate", data.get("method", "a response"))
        return
    protocol.handle_message(message)


def first_line(exc: BaseException) -> str:
    """What is wrong with the params, in cattrs's words ("invalid value @ $.position"), one line."""
    cause = exc.__cause__ or exc
    try:
        from cattrs import transform_error

        where = transform_error(cause, path="$")
        if where:
            return "; ".join(where)[:300]
    except Exception:
        pass
    text = str(cause).strip().splitlines()
    return (text[0] if text else type(cause).__name__)[:300]


def send(protocol, reply: Reply) -> None:
    protocol._send_data(reply.as_json())


async def serve(stop: threading.Event, read, protocol) -> None:
    """Read chunks with `await read()` until EOF (b"") or stop, dispatching every message.

    Never raises for bad input; returns when the client closes the stream.
    """
    parser = FrameParser()
    while not stop.is_set():
        data = await read()
        if not data:
            break  # the client closed the stream: nobody is left to serve
        parser.feed(data)
        while (event := parser.next()) is not None:
            if isinstance(event, FramingError):
                log.warning("bad message framing: %s", event.message)
                send(protocol, Reply(None, PARSE_ERROR, f"parse error: {event.message}"))
                continue
            try:
                handle_body(protocol, event.body, parser)
            except (SystemExit, KeyboardInterrupt):
                raise  # the exit notification
            except Exception as exc:  # a bug in a handler must not end the session
                log.error("message not handled: %s", type(exc).__name__)


def stdin_reader(stdin: BinaryIO, executor=None):
    """`read` for serve(): chunks of stdin, read on a worker thread (the read blocks)."""
    read = getattr(stdin, "read1", stdin.read)

    async def chunk() -> bytes:
        return await asyncio.get_running_loop().run_in_executor(executor, read, READ_CHUNK)

    return chunk
