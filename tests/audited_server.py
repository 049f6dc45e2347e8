"""Test-only entry point: the language server under an audit hook (PEP 578) that records what it must never do.

`python tests/audited_server.py` behaves like `python -m lsp_server`, and appends
one JSON line per watched event to the file named by SEED_LSP_AUDIT_LOG:
socket creation (with its address family), connect / bind / name lookups,
process creation of any kind, unpickling, and executing code compiled from a
document (the diagnostics parse documents under the filename "<document>";
running such a code object would be executing workspace code). Document text
is never written: only event names, families and file names.

Audit hooks see what Python code does; tests/test_security.py also inspects
/proc for what native code (onnxruntime, tokenizers) might do.
"""

from __future__ import annotations

import json
import os
import runpy
import sys

LOG_FD = os.open(os.environ["SEED_LSP_AUDIT_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "pty.spawn", "os.startfile")
PICKLE_EVENTS = ("pickle.find_class",)


def record(event: str, **details) -> None:
    # os.write: no "open" event, no buffering to lose if the process dies.
    os.write(LOG_FD, (json.dumps({"event": event, **details}) + "\n").encode())


def hook(event: str, args: tuple) -> None:
    if event.startswith("socket."):
        details = {}
        if event == "socket.__new__" and len(args) >= 2:
            details["family"] = int(args[1]) if isinstance(args[1], int) else str(args[1])
        record(event, **details)
    elif event in PROCESS_EVENTS or event in PICKLE_EVENTS:
        record(event)
    elif event == "exec" and args and getattr(args[0], "co_filename", None) == "<document>":
        record("exec of document code")
    elif event == "compile" and len(args) >= 2 and args[1] == "<document>":
        record("compile", filename="<document>")  # parsing (allowed); the source is not recorded


sys.addaudithook(hook)
sys.argv = ["lsp_server", *sys.argv[1:]]
runpy.run_module("lsp_server", run_name="__main__", alter_sys=True)
