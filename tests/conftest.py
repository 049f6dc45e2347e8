"""Fixtures shared by the test modules.

`memorized`: a tiny model trained once per session to memorize a few files of
this repository, exported to an fp32 + int8 bundle (see tests/memorized.py).
End-to-end tests (engine, server) drive it and expect exact completions: use
`memorized.line_cases(name)` and `memorized.block_cases(name)` for cursors and
expected text, `memorized.bundle` for the engine or the server.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def memorized(tmp_path_factory):
    # Imported here: torch and the exporter load only in sessions that ask for the model.
    from memorized import cached_memorized

    # SEED_LSP_MEMORIZED_CACHE=DIR (development only): reuse the model trained by an earlier
    # session when its inputs are the same (see cached_memorized); CI always trains afresh.
    return cached_memorized(tmp_path_factory.mktemp("memorized"), os.environ.get("SEED_LSP_MEMORIZED_CACHE"))
