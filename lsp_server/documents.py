"""The server's copy of open documents, and LSP positions <-> character offsets.

Own implementation (rather than pygls's workspace) because the two must agree
with every client exactly: LSP lines end only at "\\n", "\\r\\n" or "\\r" (Python's
str.splitlines also splits at form feeds and other separators, which real Python
files contain); a character past the end of a line means the line's end (LSP
spec); and a change with an invalid range must be reported, not guessed. Code
unit counting (UTF-16 / UTF-8 / UTF-32) is pygls's position codec.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from typing import Optional

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

LINE_BREAK = re.compile(r"\r\n|\r|\n")


class PositionError(ValueError):
    """A position or range outside the document (the message says where)."""


@dataclass
class Document:
    uri: str
    text: str
    version: Optional[int] = None
    language_id: str = ""
    _line_starts: Optional[list[int]] = field(default=None, repr=False)

    # --- lines ---------------------------------------------------------------------------

    @property
    def line_starts(self) -> list[int]:
        """Offset where each line begins (line 0 at 0), computed once per version."""
        if self._line_starts is None:
            self._line_starts = [0, *(m.end() for m in LINE_BREAK.finditer(self.text))]
        return self._line_starts

    def line_text(self, line: int) -> str:
        """Line `line` without its line break."""
        starts = self.line_starts
        end = starts[line + 1] if line + 1 < len(starts) else len(self.text)
        return self.text[starts[line] : end].rstrip("\r\n")

    # --- positions -----------------------------------------------------------------------

    def offset_at(self, position: types.Position, codec: PositionCodec) -> int:
        """Character offset of an LSP position; a character past the line's end means its end.

        Raises PositionError for a negative position or a line past the last one.
        """
        line, units = position.line, position.character
        if line < 0 or units < 0:
            raise PositionError(f"negative position {line}:{units}")
        if line >= len(self.line_starts):
            if line == len(self.line_starts) and units == 0:
                return len(self.text)  # just after a final line break: the end of the document
            raise PositionError(f"line {line} is past the end of {self.uri} ({len(self.line_starts)} lines)")
        text = self.line_text(line)
        column = _column_from_units(text, units, codec)
        return self.line_starts[line] + column

    def position_at(self, offset: int, codec: PositionCodec) -> types.Position:
        """LSP position of a character offset (clamped into the document)."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[line]
        line_text = self.line_text(line)
        column = min(offset - start, len(line_text))
        return types.Position(line=line, character=codec.client_num_units(line_text[:column]))

    def range_offsets(self, rng: types.Range, codec: PositionCodec) -> tuple[int, int]:
        start, end = self.offset_at(rng.start, codec), self.offset_at(rng.end, codec)
        if end < start:
            raise PositionError(f"range end {rng.end.line}:{rng.end.character} is before its start")
        return start, end

    # --- changes -------------------------------------------------------------------------

    def apply_change(self, change, codec: PositionCodec) -> None:
        """Apply one didChange content change (incremental with a range, or full)."""
        rng = getattr(change, "range", None)
        if rng is None:
            self.text = change.text
        else:
            start, end = self.range_offsets(rng, codec)
            self.text = self.text[:start] + change.text + self.text[end:]
        self._line_starts = None

    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()


def _column_from_units(line: str, units: int, codec: PositionCodec) -> int:
    """Characters of `line` covered by `units` client code units (a unit inside a character rounds down)."""
    counter = codec.impl
    column = 0
    used = 0
    for ch in line:
        width = counter.code_units_for_char(ch)
        if used + width > units:
            break
        used += width
        column += 1
    return column


class DocumentStore:
    """Open documents by URI."""

    def __init__(self):
        self._docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, version: Optional[int], language_id: str) -> Document:
        doc = Document(uri, text, version, language_id)
        self._docs[uri] = doc
        return doc

    def get(self, uri: str) -> Optional[Document]:
        return self._docs.get(uri)

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def __len__(self) -> int:
        return len(self._docs)
