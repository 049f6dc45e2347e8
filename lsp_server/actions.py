"""Code actions: model quick fixes for diagnostics, and model rewrites at the cursor.

textDocument/codeAction answers at once with the list of actions (no model
call); the edit of the one the user picks is computed in codeAction/resolve.
For clients without resolve support the edits are computed up front and
actions without a verified edit are left out. The edits come from
lsp_server.repair (re-mask a span, infill it, keep it only if it verifies).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Optional

from lsprotocol import types

from engine.decode import DecodeCancelled
from lsp_server import repair
from lsp_server.documents import Document, model_text
from lsp_server.service import ModelUnavailable, worker_error

FIX, BLOCK, REWRITE, FILL = "fix", "block", "rewrite", "fill"
KINDS = {FIX: types.CodeActionKind.QuickFix, BLOCK: types.CodeActionKind.RefactorRewrite,
         REWRITE: types.CodeActionKind.RefactorRewrite, FILL: types.CodeActionKind.RefactorRewrite}


def offer(doc: Document, start: int, end: int, diagnostics: list[types.Diagnostic],
          offsets_of) -> list[tuple[str, str, int, int, Optional[types.Diagnostic]]]:
    """(action, title, start, end, diagnostic) for everything the model could do here."""
    offers = []
    for diagnostic in diagnostics:
        try:
            d_start, d_end = offsets_of(diagnostic.range)
        except Exception:
            continue  # a diagnostic range outside the document: nothing to fix
        offers.append((FIX, f"Fix with model: {diagnostic.message.splitlines()[0][:60]}", d_start, d_end, diagnostic))
    if end > start:
        offers.append((REWRITE, "Rewrite selection with model", start, end, None))
    else:
        offers.append((BLOCK, "Complete block here with model", start, start, None))
    stub = repair.find_stub_body(doc.text, start)
    if stub is not None:
        offers.append((FILL, "Fill in body with model", stub.start, stub.end, None))
    return offers


def wanted(kind: str, only: Optional[list[str]]) -> bool:
    return not only or any(kind == k or kind.startswith(k + ".") for k in only)


def compute_edit(engine, action: str, text: str, start: int, end: int, language: str, settings,
                 should_cancel, deadline) -> Optional[repair.Edit]:
    """The verified edit of one action (runs on the model worker), or None."""
    common = dict(block_size=settings.block_size, tau=settings.tau, should_cancel=should_cancel, deadline=deadline)
    span = repair.Span(start, end)
    if action == FIX:
        return repair.propose_fix(engine, text, span, language, n=max(settings.n, 3), **common)
    if action == REWRITE:
        return repair.rewrite_selection_edit(engine, text, span, language=language, **common)
    if action == FILL:
        return repair.fill_body_edit(engine, text, start, language, **common)
    return repair.complete_block_edit(engine, text, start, language=language, **common)


def register(server) -> None:
    resolve_kinds = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite]

    async def resolve_edit(ls, uri: str, version, action: str, start: int, end: int) -> Optional[types.WorkspaceEdit]:
        doc = ls.documents.get(uri)
        if doc is None or doc.version != version:
            return None  # the document changed since the list was made: offsets are stale
        if not 0 <= start <= end <= len(doc.text):
            return None  # offsets that cannot come from this version's action list
        # The model sees lone surrogates as U+FFFD (one character each: offsets hold).
        text, language = model_text(doc.text), doc.language_id
        engine = await ls.model.wait_ready(60.0)
        flag = threading.Event()
        deadline = time.monotonic() + max(ls.settings.request_timeout_ms, 10_000) / 1000
        try:
            edit = await ls.model.run(lambda cancel: compute_edit(engine, action, text, start, end, language,
                                                                  ls.settings, cancel, deadline), flag)
        except (DecodeCancelled, ModelUnavailable, asyncio.CancelledError):
            raise
        except Exception as exc:  # the worker raised: this request fails, the next one is served
            raise worker_error("code action", exc) from None
        if edit is None or ls.documents.get(uri) is not doc or doc.version != version:
            return None
        rng = types.Range(start=doc.position_at(edit.span.start, ls.codec), end=doc.position_at(edit.span.end, ls.codec))
        return types.WorkspaceEdit(changes={uri: [types.TextEdit(range=rng, new_text=edit.new_text)]})

    def client_resolves(ls) -> bool:
        caps = getattr(getattr(ls.client_capabilities, "text_document", None), "code_action", None)
        support = getattr(caps, "resolve_support", None)
        return bool(support and "edit" in (support.properties or []))

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=resolve_kinds, resolve_provider=True))
    async def code_action(ls, params: types.CodeActionParams):
        doc = ls.document(params.text_document.uri)
        if not ls.serves(doc, ls.settings.code_actions):
            return None
        start, end = ls.offset(doc, params.range.start), ls.offset(doc, params.range.end)
        start, end = min(start, end), max(start, end)
        only = params.context.only
        result = []
        # Off the event loop: finding a stub body parses the file (seconds for a huge one).
        offers = await asyncio.get_running_loop().run_in_executor(
            None, offer, doc, start, end, params.context.diagnostics, lambda r: doc.range_offsets(r, ls.codec))
        for action, title, a_start, a_end, diagnostic in offers:
            kind = KINDS[action]
            if not wanted(kind, only):
                continue
            data = {"uri": doc.uri, "version": doc.version, "action": action, "start": a_start, "end": a_end}
            code_action = types.CodeAction(title=title, kind=kind, data=data,
                                           diagnostics=[diagnostic] if diagnostic else None,
                                           is_preferred=action == FIX or None)
            result.append(code_action)
        if client_resolves(ls):
            return result
        eager = []
        for code_action in result:  # no resolve support: only actions whose edit verifies
            try:
                code_action.edit = await resolve_edit(ls, **_edit_args(code_action.data))
            except (DecodeCancelled, ModelUnavailable):
                code_action.edit = None
            if code_action.edit is not None:
                eager.append(code_action)
        return eager

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls, code_action: types.CodeAction):
        try:
            code_action.edit = await resolve_edit(ls, **_edit_args(code_action.data))
        except DecodeCancelled:
            return code_action
        except ModelUnavailable as exc:
            ls.message(types.MessageType.Warning, f"no edit: {exc}")
            return code_action
        if code_action.edit is None:
            ls.message(types.MessageType.Info, f"{code_action.title}: the model found no edit that verifies")
        return code_action


def _edit_args(data) -> dict:
    """The resolve arguments from a code action's data; InvalidParams unless they are what we sent."""
    from pygls.exceptions import JsonRpcInvalidParams

    if not isinstance(data, dict) or not {"uri", "version", "action", "start", "end"} <= set(data):
        raise JsonRpcInvalidParams("code action data missing or malformed")
    args = {k: data[k] for k in ("uri", "version", "action", "start", "end")}
    ints = [args["start"], args["end"]] + ([] if args["version"] is None else [args["version"]])
    if not isinstance(args["uri"], str) or args["action"] not in KINDS \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise JsonRpcInvalidParams("code action data malformed")
    return args
