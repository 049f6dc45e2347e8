"""Per-document cache of prefilled contexts, bounded in bytes (LRU across documents).

While a user types, each request's context is the previous one plus a few
characters, so almost all of its keys/values are already computed. The engine
keeps the last Prefix of every document here; a new job for the document takes
it out (exclusive use: the prefill may extend it in place), prefills only the
tokens after the longest common prefix, and puts the new Prefix back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional

from engine.decode import Prefix


class PrefixCache:
    """LRU map document id -> Prefix, evicting the least recently used above max_bytes."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Prefix] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(p.nbytes for p in self._entries.values())

    def take(self, doc_id: Optional[str]) -> Optional[Prefix]:
        """Remove and return the document's Prefix (None if absent or doc_id is None)."""
        if doc_id is None:
            return None
        with self._lock:
            return self._entries.pop(doc_id, None)

    def put(self, doc_id: Optional[str], prefix: Prefix) -> None:
        """Store the document's newest Prefix, then evict old ones until under the limit.

        A Prefix larger than the whole limit is not stored at all.
        """
        if doc_id is None or prefix.nbytes > self.max_bytes:
            return
        with self._lock:
            self._entries.pop(doc_id, None)
            self._entries[doc_id] = prefix
            total = sum(p.nbytes for p in self._entries.values())
            while total > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                total -= evicted.nbytes

    def forget(self, doc_id: str) -> None:
        """Drop a document's entry (e.g. the document was closed)."""
        with self._lock:
            self._entries.pop(doc_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
