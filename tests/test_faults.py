"""Faults while the server runs: a broken bundle, a failing model worker, a configuration too big for memory.

- The bundle is deleted, truncated, or its checksum changed under a running
  server, or the configured path is changed to a broken bundle: reported once
  (window/showMessage), the last good model keeps serving, the server lives.
- The model worker raises (fault injection, available only when the server
  is started with SEED_LSP_TEST_HOOKS=1): that request gets a JSON-RPC error,
  the next one is served.
- The out-of-memory guard: settings whose worst request needs more KV cache
  than kvLimitMb are refused with the arithmetic in the message.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lsp_server import memory
from lsp_server.config import Settings
from tests.raw_lsp import INTERNAL_ERROR, RawServer
from tests.tiny_bundle import copy_bundle, tiny_bundle

URI = "file:///faults/demo.py"
TEXT = "import os\n\n\ndef area(width, height):\n    return width * height\n"
OPTIONS = {"threads": 1, "maxTokensLine": 6, "maxTokensBlock": 8, "bundleCheckMs": 100}
HOOKS = {"SEED_LSP_TEST_HOOKS": "1"}


RESOLVE = {"textDocument": {"codeAction": {"resolveSupport": {"properties": ["edit"]}}}}


def start(tmp_path: Path, bundle: Path, env: dict | None = None, **options) -> RawServer:
    srv = RawServer(tmp_path / "server.log", env=env)
    srv.initialize({"bundle": str(bundle), **OPTIONS, **options}, capabilities=RESOLVE)
    return srv


def inline(srv: RawServer, line: int = 4, character: int = 10) -> dict:
    return srv.request("textDocument/inlineCompletion", srv.inline_params(URI, line, character))


def served(srv: RawServer) -> None:
    """The server answers a completion request with a result (the model is still there)."""
    response = inline(srv)
    assert "result" in response and response["result"] is not None, response
    status = srv.result("workspace/executeCommand", {"command": "seedLsp.status"})
    assert status["state"] == "ready" and status["model"] is not None, status


def bundle_reports(srv: RawServer) -> list[str]:
    return [m for m in srv.shown() if "bundle" in m and ("changed on disk" in m or "model not loaded" in m)]


def break_bundle(root: Path, how: str) -> None:
    if how == "deleted":
        shutil.rmtree(root)
    elif how == "truncated":
        model = root / "model.int8.onnx"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif how == "checksum":
        manifest = json.loads((root / "bundle.json").read_text())
        manifest["files"]["tokenizer.json"] = "0" * 64
        (root / "bundle.json").write_text(json.dumps(manifest))
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["deleted", "truncated", "checksum"])
def test_bundle_broken_on_disk_is_reported_once_and_the_model_keeps_serving(tmp_path, how):
    root = copy_bundle(tiny_bundle(), tmp_path / "bundle")
    with start(tmp_path, root) as srv:
        assert srv.wait_ready()["state"] == "ready"
        srv.open(URI, TEXT)
        served(srv)
        break_bundle(root, how)
        srv.wait_for(lambda: bundle_reports(srv), 20, "the bundle fault to be reported")
        time.sleep(0.5)  # five more checks of the folder
        if how != "deleted":
            (root / "tokenizer.json").write_text("{}")  # broken differently: still the same episode
            time.sleep(0.5)
        reports = bundle_reports(srv)
        assert len(reports) == 1, reports
        assert "keeps serving" in reports[0]
        served(srv)
        status = srv.result("workspace/executeCommand", {"command": "seedLsp.status"})
        assert status["bundleProblem"] and status["error"] is None
        assert srv.alive()
    assert "Traceback" not in srv.log_text()


def test_a_repaired_bundle_clears_the_problem_and_a_new_fault_is_reported_again(tmp_path):
    root = copy_bundle(tiny_bundle(), tmp_path / "bundle")
    good = (root / "bundle.json").read_text()
    with start(tmp_path, root) as srv:
        srv.wait_ready()
        srv.open(URI, TEXT)
        break_bundle(root, "checksum")
        srv.wait_for(lambda: bundle_reports(srv), 20, "the first report")
        (root / "bundle.json").write_text(good)
        srv.wait_for(lambda: srv.result("workspace/executeCommand", {"command": "seedLsp.status"})
                     ["bundleProblem"] is None, 20, "the problem to clear")
        break_bundle(root, "truncated")
        srv.wait_for(lambda: len(bundle_reports(srv)) == 2, 20, "the second report")
        served(srv)


def test_configured_bundle_changed_to_a_broken_one_keeps_the_last_good_model(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{")
    with start(tmp_path, tiny_bundle()) as srv:
        srv.wait_ready()
        srv.open(URI, TEXT)
        srv.notify("workspace/didChangeConfiguration", {"settings": {"seedLsp": {"bundle": str(broken)}}})
        srv.wait_for(lambda: bundle_reports(srv), 30, "the load failure to be reported")
        time.sleep(0.5)
        reports = bundle_reports(srv)
        assert len(reports) == 1 and "bundle.json" in reports[0] and "previous model keeps serving" in reports[0]
        served(srv)
        status = srv.result("workspace/executeCommand", {"command": "seedLsp.status"})
        assert status["model"] == str(tiny_bundle()) and "bundle.json" in status["error"]
        # Another broken path is another fault: reported once more, and still the same model.
        srv.notify("workspace/didChangeConfiguration", {"settings": {"bundle": str(tmp_path / "nowhere")}})
        srv.wait_for(lambda: len(bundle_reports(srv)) == 2, 30, "the second load failure")
        served(srv)
        # Back to a good bundle: it loads again.
        srv.notify("workspace/didChangeConfiguration", {"settings": {"bundle": str(tiny_bundle())}})
        srv.wait_for(lambda: srv.result("workspace/executeCommand", {"command": "seedLsp.status"})["error"] is None,
                     30, "the good bundle to load")
        assert len(bundle_reports(srv)) == 2
    assert "Traceback" not in srv.log_text()


def test_a_failing_model_worker_fails_one_request_and_the_next_is_served(tmp_path):
    with start(tmp_path, tiny_bundle(), env=HOOKS) as srv:
        srv.wait_ready()
        srv.open(URI, TEXT)
        assert srv.command("seedLsp.test.injectFault", 1)["result"] == {"faults": 1}
        failed = inline(srv)
        assert failed["error"]["code"] == INTERNAL_ERROR
        assert "model worker raised InjectedFault" in failed["error"]["message"]
        served(srv)
        # The same for a code action's edit (computed on the worker in codeAction/resolve).
        here = {"start": {"line": 4, "character": 4}, "end": {"line": 4, "character": 4}}
        actions = srv.result("textDocument/codeAction", {"textDocument": {"uri": URI}, "range": here,
                                                         "context": {"diagnostics": []}})
        srv.command("seedLsp.test.injectFault", 1)
        assert srv.request("codeAction/resolve", actions[0])["error"]["code"] == INTERNAL_ERROR
        assert "result" in srv.request("codeAction/resolve", actions[0], timeout=120)
        served(srv)
    log = srv.log_text()
    assert "failed on the model worker: InjectedFault" in log and "Traceback" not in log


def test_a_paused_job_waits_inside_the_engine_for_a_document_change():
    import asyncio
    import threading

    from lsp_server.service import ModelService

    service = ModelService()
    calls = []

    def job(should_cancel):  # stands for the engine: it checks should_cancel before each model call
        calls.append(should_cancel())
        calls.append(should_cancel())
        return "done"

    async def main():
        service.inject_pauses(1)
        running = asyncio.ensure_future(service.run(job, threading.Event()))
        await asyncio.sleep(0.3)
        assert not running.done() and calls == [], "the job waits at its first cancellation check"
        service.document_changed()
        assert await asyncio.wait_for(running, 10) == "done"
        # Only the next job pauses.
        assert await asyncio.wait_for(service.run(job, threading.Event()), 10) == "done"

    try:
        asyncio.run(main())
    finally:
        service.shutdown()
    assert calls == [False] * 4


def test_fault_injection_does_not_exist_without_the_test_flag(tmp_path):
    with start(tmp_path, tiny_bundle()) as srv:
        srv.wait_ready()
        srv.open(URI, TEXT)
        response = srv.command("seedLsp.test.injectFault", 5)
        assert "error" in response and "not defined" in response["error"]["message"]
        served(srv)
        served(srv)


def test_fault_hook_is_not_advertised_without_the_flag(tmp_path):
    for env, expected in ((None, False), (HOOKS, True)):
        with RawServer(tmp_path / f"server-{expected}.log", env=env) as srv:
            caps = srv.initialize({"bundle": str(tiny_bundle()), **OPTIONS})["capabilities"]
            assert ("seedLsp.test.injectFault" in caps["executeCommandProvider"]["commands"]) is expected


# --- the out-of-memory guard ----------------------------------------------------------------------


def tiny_dims() -> memory.Dims:
    arch = json.loads((tiny_bundle() / "bundle.json").read_text())["architecture"]
    return memory.Dims(arch["n_layers"], arch["n_kv_heads"], arch["d_model"] // arch["n_heads"])


def test_kv_need_is_layers_heads_head_dim_context_and_candidates():
    dims = memory.Dims(n_layers=6, n_kv_heads=6, head_dim=64)  # the default model
    assert dims.bytes_per_token == 2 * 6 * 6 * 64 * 4
    one = memory.request_need(dims, 444, Settings(n=1, code_actions=False))
    assert (one.rows, one.positions) == (1, 444 + 4 + 64)
    many = memory.request_need(dims, 444, Settings(n=8))
    assert many.rows == 9 and many.bytes == 9 * 512 * dims.bytes_per_token
    assert memory.request_need(dims, 444, Settings(n=1)).rows == 4, "quick fixes decode 3 candidates"
    assert memory.check(dims, 444, Settings(n=8, kv_limit_mb=1024)) is None
    message = memory.check(dims, 444, Settings(n=8, kv_limit_mb=50))
    assert "81.0 MB" in message and "kvLimitMb=50" in message and "9 rows x 512 positions x 6 layers" in message


def test_settings_above_the_kv_limit_are_refused_and_the_previous_ones_kept(tmp_path):
    dims = tiny_dims()
    with start(tmp_path, tiny_bundle()) as srv:
        srv.wait_ready()
        srv.open(URI, TEXT)
        srv.notify("workspace/didChangeConfiguration", {"settings": {"seedLsp": {"n": 8, "kvLimitMb": 2}}})
        refused = srv.wait_for(lambda: [m for m in srv.shown() if "configuration refused" in m], 20, "the refusal")
        assert len(refused) == 1
        message = refused[0]
        assert "above kvLimitMb=2" in message and "lower n" in message
        assert f"x {dims.n_layers} layers x {dims.n_kv_heads} KV heads x {dims.head_dim} head dims" in message
        # The previous settings stay: one candidate (n=1) however often we ask.
        for _ in range(3):
            items = inline(srv)["result"]["items"]
            assert len(items) <= 1
        # A configuration within the limit is taken.
        srv.notify("workspace/didChangeConfiguration", {"settings": {"seedLsp": {"n": 2, "kvLimitMb": 2}}})
        served(srv)
        assert len([m for m in srv.shown() if "configuration refused" in m]) == 1


def test_initial_settings_above_the_kv_limit_refuse_the_model_with_a_clear_message(tmp_path):
    with start(tmp_path, tiny_bundle(), n=8, kvLimitMb=1) as srv:
        status = srv.wait_ready()
        assert status["state"] == "error" and status["error"].startswith("configuration refused")
        assert sum("configuration refused" in m for m in srv.shown()) == 1
        srv.open(URI, TEXT)
        assert inline(srv)["result"]["items"] == []
        assert srv.alive()
