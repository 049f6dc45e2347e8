"""Recently shown completions, so typing into ghost text costs no model call.

When the user types characters that match the start of a completion the
editor is showing, the next request's prefix is the old prefix plus those
characters and the suffix is unchanged: the answer is the rest of the same
completion. Bounded LRU over (document, prefix end) entries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

# Only the end of the prefix identifies the cursor's context well enough, and
# keys stay small for 5 MB documents.
PREFIX_TAIL = 2000
SUFFIX_HEAD = 2000


@dataclass(frozen=True)
class Shown:
    texts: tuple[str, ...]  # completions as shown (after the filters)
    confidences: tuple[tuple[float, ...], ...]


class CompletionCache:
    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], Shown] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(uri: str, prefix: str, suffix: str) -> tuple[str, str, str]:
        return uri, prefix[-PREFIX_TAIL:], suffix[:SUFFIX_HEAD]

    def put(self, uri: str, prefix: str, suffix: str, shown: Shown) -> None:
        if not shown.texts:
            return
        with self._lock:
            key = self.key(uri, prefix, suffix)
            self._entries.pop(key, None)
            self._entries[key] = shown
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def lookup(self, uri: str, prefix: str, suffix: str, max_typed: int = 64) -> Optional[Shown]:
        """A shown completion the user has typed into: the remaining texts (non-empty), or None.

        Looks for an entry whose prefix is this prefix minus the last k characters
        (k = 0..max_typed) with the same suffix, and keeps its completions that start
        with those k characters.
        """
        # Only the prefix's tail takes part in a key: work on that, not a copy of a 5 MB prefix per k.
        prefix = prefix[-(PREFIX_TAIL + max_typed):]
        with self._lock:
            for typed in range(0, min(max_typed, len(prefix)) + 1):
                old_prefix = prefix[: len(prefix) - typed] if typed else prefix
                shown = self._entries.get(self.key(uri, old_prefix, suffix))
                if shown is None:
                    continue
                chars = prefix[len(prefix) - typed :] if typed else ""
                rest = [(t[typed:], c) for t, c in zip(shown.texts, shown.confidences)
                        if t.startswith(chars) and len(t) > typed]
                if rest:
                    self.hits += 1
                    return Shown(tuple(t for t, _ in rest), tuple(c for _, c in rest))
            self.misses += 1
            return None

    def __len__(self) -> int:
        return len(self._entries)

    def forget(self, uri: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == uri]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
