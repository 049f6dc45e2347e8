"""The server's copy of open documents, and LSP positions <-> character offsets.

Own implementation (rather than pygls's workspace) because the two must agree
with every client exactly: LSP lines end only at "\\n", "\\r\\n" or "\\r" (Python's
str.splitlines also splits at form feeds and other separators, which real Python
files contain); a character past the end of a line means the line's end (LSP
spec); and a change with an invalid range must be reported, not guessed. Code
units are counted by encoding (UTF-16 / UTF-8 / UTF-32 as negotiated, the
codec's `encoding`), in C rather than a loop per character, so a position on a
5 MB line costs milliseconds.

The text is kept canonical: a high and a low surrogate that end up side by side
(an edit inserted one next to the other) are stored as the one character they
form, as every UTF-16 client sees them; a lone surrogate stays as it is (it is
one UTF-16 code unit). A didChange is applied all or nothing: one invalid range
leaves the document as it was.
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
SURROGATE = re.compile("[\ud800-\udfff]")
# Python codec and bytes per code unit of each LSP position encoding.
UNIT_CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}


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
        column = column_from_units(text, units, codec)
        return self.line_starts[line] + column

    def position_at(self, offset: int, codec: PositionCodec) -> types.Position:
        """LSP position of a character offset (clamped into the document)."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[line]
        line_text = self.line_text(line)
        column = min(offset - start, len(line_text))
        return types.Position(line=line, character=count_units(line_text[:column], codec))

    def range_offsets(self, rng: types.Range, codec: PositionCodec) -> tuple[int, int]:
        start, end = self.offset_at(rng.start, codec), self.offset_at(rng.end, codec)
        if end < start:
            raise PositionError(f"range end {rng.end.line}:{rng.end.character} is before its start")
        return start, end

    # --- changes -------------------------------------------------------------------------

    def apply_change(self, change, codec: PositionCodec) -> None:
        """Apply one didChange content change (incremental with a range, or full)."""
        self.apply_changes([change], codec)

    def apply_changes(self, changes, codec: PositionCodec) -> None:
        """Apply a didChange's content changes in order, all or none.

        Raises PositionError (and leaves the document unchanged) if any range is invalid;
        each range refers to the text as the changes before it left it (LSP).
        """
        work = Document(self.uri, self.text, _line_starts=self._line_starts)
        for change in changes:
            rng = getattr(change, "range", None)
            if rng is None:
                work.text = canonical(change.text)
            else:
                start, end = work.range_offsets(rng, codec)
                text = work.text[:start] + change.text + work.text[end:]
                # Only a splice that puts a surrogate next to another can form a pair.
                if SURROGATE.search(change.text) or SURROGATE.match(text, max(start - 1, 0)) \
                        or SURROGATE.match(text, start + len(change.text)):
                    text = canonical(text)
                work.text = text
            work._line_starts = None
        self.text = work.text
        self._line_starts = work._line_starts

    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()


def canonical(text: str) -> str:
    """text with each adjacent high + low surrogate joined into the character they encode."""
    if not SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def model_text(text: str) -> str:
    """text as the tokenizer accepts it: each lone surrogate (no UTF-8 form) becomes U+FFFD.

    One character for one, so offsets into the text stay valid.
    """
    return SURROGATE.sub("\ufffd", text) if SURROGATE.search(text) else text


def _unit_codec(codec: PositionCodec) -> tuple[str, int]:
    encoding = codec.encoding if isinstance(codec, PositionCodec) else codec
    return UNIT_CODECS.get(str(getattr(encoding, "value", encoding)), UNIT_CODECS["utf-16"])


def count_units(text: str, codec: PositionCodec) -> int:
    """Code units of text in the negotiated encoding (a lone surrogate is one UTF-16 unit)."""
    if text.isascii():
        return len(text)
    name, width = _unit_codec(codec)
    return len(text.encode(name, "surrogatepass")) // width


def column_from_units(line: str, units: int, codec: PositionCodec) -> int:
    """Characters of `line` covered by `units` client code units.

    A unit count inside a character (e.g. between the two halves of a surrogate
    pair) rounds down to the character's start; past the end means the end.
    """
    if line.isascii() or _unit_codec(codec)[1] == 4:
        return min(units, len(line))
    if units >= count_units(line, codec):
        return len(line)
    # count_units(line[:c]) grows with c and is >= c: binary search for the largest
    # c with count <= units, in O(log n) encodes instead of a Python loop per character.
    low, high = 0, min(units, len(line))
    while low < high:
        middle = (low + high + 1) // 2
        if count_units(line[:middle], codec) <= units:
            low = middle
        else:
            high = middle - 1
    return low


class DocumentStore:
    """Open documents by URI."""

    def __init__(self):
        self._docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, version: Optional[int], language_id: str) -> Document:
        doc = Document(uri, canonical(text), version, language_id)
        self._docs[uri] = doc
        return doc

    def get(self, uri: str) -> Optional[Document]:
        return self._docs.get(uri)

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def __len__(self) -> int:
        return len(self._docs)
