"""The client's copy of a document, written the way a UTF-16 editor sees it, for protocol tests.

An independent re-implementation of what the server must hold (lsp_server/documents.py
is the one under test): text travels as JSON (lone surrogates as escapes, an escaped
pair becomes one character), positions count UTF-16 code units, a position inside a
surrogate pair means the pair's start, a character past a line's end means the end,
lines break at \\r\\n, \\r and \\n only, and one invalid change rejects the whole
didChange. The server's documentHash is sha256 of the text's UTF-8 (surrogatepass).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from typing import Optional

BREAK = re.compile(r"\r\n|\r|\n")


def wire(text: str) -> str:
    """text as the server receives it over JSON."""
    return json.loads(json.dumps(text, ensure_ascii=True))


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def canonical(text: str) -> str:
    """Adjacent surrogate halves joined: what a UTF-16 editor's buffer holds."""
    return utf16(text).decode("utf-16-le", "surrogatepass")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Invalid(Exception):
    pass


class RefDoc:
    def __init__(self, text: str, version: int = 1, language: str = "python"):
        self.text = canonical(wire(text))
        self.version = version
        self.language = language

    def starts(self) -> list[int]:
        return [0, *(m.end() for m in BREAK.finditer(self.text))]

    def line(self, i: int) -> str:
        starts = self.starts()
        end = starts[i + 1] if i + 1 < len(starts) else len(self.text)
        return BREAK.sub("", self.text[starts[i]:end])

    def line_units(self, i: int) -> int:
        return len(utf16(self.line(i))) // 2

    def offset(self, line: int, character: int) -> int:
        """Character offset of a UTF-16 position; Invalid where the server must refuse it."""
        starts = self.starts()
        if line < 0 or character < 0:
            raise Invalid("negative")
        if line >= len(starts):
            if line == len(starts) and character == 0:
                return len(self.text)
            raise Invalid("past the last line")
        units = utf16(self.line(line))
        k = min(character, len(units) // 2)
        if 0 < k < len(units) // 2:
            before = int.from_bytes(units[2 * k - 2:2 * k], "little")
            after = int.from_bytes(units[2 * k:2 * k + 2], "little")
            if 0xD800 <= before < 0xDC00 and 0xDC00 <= after < 0xE000:
                k -= 1  # inside a surrogate pair: the pair's start
        return starts[line] + len(units[:2 * k].decode("utf-16-le", "surrogatepass"))

    def position(self, offset: int) -> tuple[int, int]:
        starts = self.starts()
        line = bisect.bisect_right(starts, offset) - 1
        return line, len(utf16(self.text[starts[line]:offset])) // 2

    def changed(self, changes: list[dict]) -> Optional[str]:
        """The text after a didChange, or None if the server must reject it (and keep the old text)."""
        work = RefDoc.__new__(RefDoc)
        work.text = self.text
        try:
            for change in changes:
                new = canonical(wire(change["text"]))
                if "range" not in change:
                    work.text = new
                    continue
                rng = change["range"]
                start = work.offset(rng["start"]["line"], rng["start"]["character"])
                end = work.offset(rng["end"]["line"], rng["end"]["character"])
                if end < start:
                    raise Invalid("reversed")
                work.text = canonical(work.text[:start] + new + work.text[end:])
        except Invalid:
            return None
        return work.text

    def sha256(self) -> str:
        return sha256(self.text)
