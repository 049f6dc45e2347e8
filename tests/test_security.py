"""Security: no network, no processes, no workspace code, no pickles, no document text in the logs.

- A whole session (completions, code actions and their edits, diagnostics,
  changes, bad requests) runs the server under an audit hook
  (tests/audited_server.py): no socket other than the event loop's AF_UNIX
  self-pipe, no connect / bind / lookup, no process started, nothing unpickled,
  no code compiled from a document executed. /proc confirms it for native code:
  no inet socket among the server's file descriptors, no child process.
- The same session's log (stderr and window/logMessage) at the default level,
  and at debug level without logDocumentText, never holds the document's text
  (a marker string); with logDocumentText on it does (the grep works).
- The bundle loader refuses everything but declared files in their roles:
  bundle.json or a folder symlinked outside, pickles and torch zips in place of
  a model, declared files without a role, ONNX external data the manifest does
  not list, FIFOs, control characters in names; and never unpickles.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.bundle import BundleError, file_sha256, load_bundle
from tests.raw_lsp import ROOT, RawServer
from tests.tiny_bundle import copy_bundle, tiny_bundle

MARKER = "zq_SECRET_MARKER_7f3a"
URI = "file:///security/secret.py"
TEXT = (f"import os\n\n{MARKER}_TOKEN = '{MARKER} in a string'  # {MARKER} in a comment\n\n\n"
        f"def {MARKER}_function(x):\n    ...\n\n\ndef broken({MARKER}:\n    return {MARKER}\n")
RESOLVE = {"textDocument": {"codeAction": {"resolveSupport": {"properties": ["edit"]}}}}
INET_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6")


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def inet_inodes(pid: int) -> set[str]:
    """Inodes of the IPv4/IPv6 sockets in the server's network namespace."""
    inodes = set()
    for table in INET_TABLES:
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9:
                inodes.add(fields[9])
    return inodes


def children(pid: int) -> list[str]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            pass
    return found


def exercise(srv: RawServer, uri: str, text: str) -> None:
    """Everything that touches the document: completions, edits, actions, diagnostics, errors."""
    srv.open(uri, text)
    lines = text.split("\n")
    for line in (2, 6, 10, len(lines) - 1):
        srv.result("textDocument/inlineCompletion", srv.inline_params(uri, line, len(lines[line])))
        srv.result("textDocument/completion", {"textDocument": {"uri": uri},
                                               "position": {"line": line, "character": len(lines[line])}})
    srv.change(uri, 2, [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                         "text": f"# {MARKER} typed\n"}])
    srv.change(uri, 3, [{"range": {"start": {"line": 999, "character": 0}, "end": {"line": 999, "character": 1}},
                         "text": MARKER}])  # an invalid change: rejected, reported
    here = {"start": {"line": 8, "character": 4}, "end": {"line": 8, "character": 7}}
    diagnostic = {"range": here, "message": f"problem near {MARKER}", "source": "other"}
    actions = srv.result("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": here,
                                                     "context": {"diagnostics": [diagnostic]}})
    for action in actions[:2]:
        srv.result("codeAction/resolve", action, timeout=120)
    srv.request("textDocument/inlineCompletion", srv.inline_params(uri, -1, 0))  # invalid params
    srv.send({"jsonrpc": "2.0", "id": "bad", "method": "textDocument/completion",
              "params": {"textDocument": {"uri": uri}, "position": {"line": MARKER}}})
    srv.write(b'Content-Length: 30\r\n\r\n{"' + MARKER.encode() + b'": [1, 2')  # invalid JSON
    srv.wait_for(lambda: uri in [n["params"]["uri"] for n in srv.notifications
                                 if n["method"] == "textDocument/publishDiagnostics"], 20, "diagnostics")
    srv.close_document(uri)


def test_a_session_opens_no_network_socket_starts_no_process_and_logs_no_document_text(tmp_path):
    audit = tmp_path / "audit.jsonl"
    command = [sys.executable, str(ROOT / "tests" / "audited_server.py")]
    srv = RawServer(tmp_path / "server.log", command=command,
                    env={"SEED_LSP_AUDIT_LOG": str(audit)})
    try:
        srv.initialize({"bundle": str(tiny_bundle()), "threads": 1, "maxTokensLine": 6, "maxTokensBlock": 8,
                        "debounceMs": 10}, capabilities=RESOLVE)
        assert srv.wait_ready()["state"] == "ready"
        exercise(srv, URI, TEXT)
        inet = socket_inodes(srv.pid) & inet_inodes(srv.pid)
        assert not inet, f"the server holds inet sockets: {inet}"
        assert children(srv.pid) == [], "the server started a process"
        default_log, default_client_log = srv.log_text(), list(srv.logged())

        # Debug level without logDocumentText: still no document text.
        srv.notify("workspace/didChangeConfiguration", {"settings": {"logLevel": "debug"}})
        exercise(srv, URI + "2", TEXT)
        debug_log = srv.log_text()[len(default_log):]
        debug_client_log = srv.logged()[len(default_client_log):]
        # Control: with logDocumentText the text does reach the log, so the grep above can see it.
        srv.notify("workspace/didChangeConfiguration", {"settings": {"logDocumentText": True}})
        srv.open(URI + "3", TEXT)
        srv.result("textDocument/inlineCompletion", srv.inline_params(URI + "3", 2, len(TEXT.split("\n")[2])))
        control_log = srv.log_text()[len(default_log) + len(debug_log):]
        assert srv.alive()
    finally:
        srv.close()

    events = [json.loads(line) for line in audit.read_text().splitlines()]
    names = {e["event"] for e in events}
    assert "compile" in names, "the audit hook saw no document being parsed: is it installed?"
    sockets = [e for e in events if e["event"].startswith("socket.")]
    assert all(e["event"] == "socket.__new__" and e.get("family") == 1 for e in sockets), sockets  # AF_UNIX only
    forbidden = names & {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                         "os.forkpty", "pty.spawn", "pickle.find_class", "exec of document code"}
    assert not forbidden, forbidden
    assert MARKER not in audit.read_text()

    for where, text in (("stderr", default_log), ("window/logMessage", "\n".join(default_client_log)),
                        ("stderr at debug", debug_log), ("window/logMessage at debug", "\n".join(debug_client_log))):
        assert MARKER not in text, f"document text in the {where} log"
    assert "completion" in default_log, "the default log should carry the counters"
    assert MARKER in control_log, "with logDocumentText the text reaches the log (or this grep proves nothing)"


# --- the bundle loader ----------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path) -> Path:
    return copy_bundle(tiny_bundle(), tmp_path / "bundle")


def manifest(root: Path) -> dict:
    return json.loads((root / "bundle.json").read_text())


def declare(root: Path, name: str, variant: str | None = None) -> None:
    data = manifest(root)
    data["files"][name] = file_sha256(root / name)
    if variant:
        data["variants"][variant] = name
    (root / "bundle.json").write_text(json.dumps(data))


def refused(root: Path, *fragments: str) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


class Payload:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, proof: Path):
        self.proof = proof

    def __reduce__(self):
        return (Path.touch, (self.proof,))


def test_manifest_symlinked_outside_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle / "bundle.json", outside)
    (bundle / "bundle.json").symlink_to(outside)
    refused(bundle, "bundle.json", "symlink points outside")


def test_file_in_a_folder_symlinked_outside_is_refused(bundle, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(bundle / "tokenizer.json", outside / "tokenizer.json")
    (bundle / "sub").symlink_to(outside)
    data = manifest(bundle)
    data["files"]["sub/tokenizer.json"] = file_sha256(outside / "tokenizer.json")
    (bundle / "bundle.json").write_text(json.dumps(data))
    refused(bundle, "sub/tokenizer.json", "symlink points outside")


def test_a_declared_pickle_is_refused_and_never_unpickled(bundle, tmp_path):
    proof = tmp_path / "unpickled"
    (bundle / "weights.pkl").write_bytes(pickle.dumps(Payload(proof)))
    declare(bundle, "weights.pkl")
    refused(bundle, "weights.pkl", "neither a model variant, the tokenizer, nor external data")
    assert not proof.exists()


@pytest.mark.parametrize("kind,data", [("a pickle", None), ("a zip archive", b"PK\x03\x04torch archive")])
def test_a_model_variant_that_is_a_pickle_or_a_torch_zip_is_refused(bundle, tmp_path, kind, data):
    proof = tmp_path / "unpickled"
    (bundle / "model.int8.onnx").write_bytes(data or pickle.dumps(Payload(proof), protocol=4))
    declare(bundle, "model.int8.onnx")
    refused(bundle, "model.int8.onnx", f"is {kind}", "never hold pickles")
    assert not proof.exists()


def external_data_model(path: Path, location: str) -> None:
    """A small valid ONNX model whose weight lives in an external file."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location=location)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    path.write_bytes(model.SerializeToString())
    (path.parent / location).write_bytes(np.ones((4, 4), np.float32).tobytes())


def test_onnx_external_data_must_be_a_declared_file(bundle):
    external_data_model(bundle / "ext.onnx", "weights.bin")
    declare(bundle, "ext.onnx", variant="fp32")
    refused(bundle, "ext.onnx", "external data 'weights.bin'", "does not list")
    declare(bundle, "weights.bin")  # declared (with its checksum): allowed, and checked like any file
    assert load_bundle(bundle).variants["fp32"].name == "ext.onnx"
    (bundle / "weights.bin").write_bytes(b"\0" * 64)
    refused(bundle, "weights.bin", "checksum mismatch")


def test_a_fifo_is_refused_without_blocking(bundle):
    os.mkfifo(bundle / "pipe.onnx")
    data = manifest(bundle)
    data["files"]["pipe.onnx"] = "0" * 64
    (bundle / "bundle.json").write_text(json.dumps(data))
    started = time.monotonic()
    refused(bundle, "pipe.onnx", "not a regular file")
    assert time.monotonic() - started < 5


def test_control_characters_in_a_file_name_are_refused(bundle):
    data = manifest(bundle)
    data["files"]["model\x00.onnx"] = "0" * 64
    (bundle / "bundle.json").write_text(json.dumps(data))
    refused(bundle, "control characters")


def test_loading_a_bundle_unpickles_nothing(bundle):
    """load_bundle + an onnxruntime session under an audit hook: no pickle.find_class, no process."""
    code = (
        "import sys, json\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append(e) if e in ('pickle.find_class', 'subprocess.Popen',"
        " 'os.system', 'os.posix_spawn', 'os.exec') or e.startswith('socket.') else None)\n"
        "from engine.engine import Engine\n"
        f"engine = Engine.from_bundle({str(bundle)!r}, device='cpu', threads=1)\n"
        "print(json.dumps(seen))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
