"""Soak benchmark (not a test): thousands of requests over many real files, with edits in between.

One server process (`python -m lsp_server`) over stdio, driven like an editor
for a long session: the "user" works in one file for a while (types at the
cursor and asks for an inline completion after each keystroke, moves the
cursor, pastes and deletes lines, asks for completion items and code actions,
now and then replaces the whole text or closes and reopens the file), then
moves to another. Files are real code: the validation split of a corpus
(bench/heldout.py) or the Python standard library. Requests are sequential,
as from one editor.

Reports requests/s and completions/s (answers with at least one item),
p50/p95/max latency per request kind, the error count (JSON-RPC errors, and
documents whose hash differs from the client's copy), and the server's RSS
over time with the sizes of its caches: the KV prefix cache is bounded by
cacheMb and the completion cache by entry count, so RSS must level off.

    python bench/soak.py --requests 10000 --threads 1            # the real model, stdlib files
    python bench/soak.py --requests 200 --bundle /tmp/tiny       # a quick check

Writes bench/results/soak.json and soak.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.heldout import heldout_files  # noqa: E402
from tests.doc_model import RefDoc  # noqa: E402
from tests.raw_lsp import REQUEST_CANCELLED, RawServer  # noqa: E402

# What the user types: short runs of Python-looking text, one keystroke at a time.
TYPING = ["self.", "x", " = ", "(", ")", ", ", "return ", "if ", "not ", "None", "len(", "]", "[0", ".append(",
          "for i in range(", "):", "\n", "# note", "value", " + 1", "'text'", "import os"]
ACTIONS = [("type", 62), ("completion", 10), ("move", 9), ("paste", 5), ("delete", 4), ("code_action", 5),
           ("resolve", 1), ("replace", 2), ("reopen", 2)]
SESSION = (5, 20)  # actions in one file before moving to another


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pick_files(args) -> list[Path]:
    if args.corpus or args.source:
        files = heldout_files(args.corpus, args.source)
    else:
        files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    sized = [f for f in files if 1_000 <= f.stat().st_size <= 60_000]
    random.Random(args.seed).shuffle(sized)
    return sized[: args.documents]


class Soak:
    def __init__(self, srv: RawServer, files: list[Path], rng: random.Random):
        self.srv, self.rng = srv, rng
        self.texts = {f"file:///soak/{i}/{f.name}": f.read_text(encoding="utf-8", errors="replace")
                      for i, f in enumerate(files)}
        self.docs: dict[str, RefDoc] = {}
        self.cursor: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {}
        self.requests = self.completions = self.errors = self.sync_errors = self.cancelled = 0
        self.error_samples: list[dict] = []

    # --- document state ----------------------------------------------------------------------

    def ensure_open(self, uri: str) -> RefDoc:
        if uri not in self.docs:
            self.srv.open(uri, self.texts[uri])
            self.docs[uri] = RefDoc(self.texts[uri])
            self.place_cursor(uri)
        return self.docs[uri]

    def place_cursor(self, uri: str) -> None:
        """After the indentation of a random non-blank line, or at its end."""
        doc = self.docs[uri]
        lines = doc.text.split("\n")
        candidates = [i for i, line in enumerate(lines) if line.strip()] or [0]
        i = self.rng.choice(candidates)
        start = sum(len(line) + 1 for line in lines[:i])
        line = lines[i]
        column = len(line) - len(line.lstrip()) if self.rng.random() < 0.5 else len(line.rstrip("\r"))
        self.cursor[uri] = start + column

    def edit(self, uri: str, start: int, end: int, text: str) -> None:
        doc = self.docs[uri]
        a, b = doc.position(start), doc.position(end)
        change = {"range": {"start": {"line": a[0], "character": a[1]}, "end": {"line": b[0], "character": b[1]}},
                  "text": text}
        doc.version += 1
        self.srv.change(uri, doc.version, [change])
        doc.text = doc.changed([change])
        self.cursor[uri] = start + len(text)

    # --- requests -----------------------------------------------------------------------------

    def timed(self, kind: str, method: str, params: dict) -> dict:
        started = time.perf_counter()
        response = self.srv.request(method, params, timeout=300)
        self.latency.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        self.requests += 1
        if "error" in response:
            if response["error"]["code"] == REQUEST_CANCELLED:
                self.cancelled += 1
            else:
                self.errors += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append({"kind": kind, "error": response["error"]})
        return response

    def position(self, uri: str) -> dict:
        line, character = self.docs[uri].position(self.cursor[uri])
        return {"line": line, "character": character}

    def inline(self, uri: str) -> None:
        response = self.timed("inline", "textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": self.position(uri), "context": {"triggerKind": 2}})
        if (response.get("result") or {}).get("items"):
            self.completions += 1

    def action(self, uri: str, kind: str) -> None:
        doc = self.ensure_open(uri)
        cursor = self.cursor[uri]
        if kind == "type":
            for char in self.rng.choice(TYPING):
                self.edit(uri, self.cursor[uri], self.cursor[uri], char)
                self.inline(uri)
        elif kind == "completion":
            response = self.timed("completion", "textDocument/completion",
                                  {"textDocument": {"uri": uri}, "position": self.position(uri)})
            if (response.get("result") or {}).get("items"):
                self.completions += 1
        elif kind == "move":
            self.place_cursor(uri)
            self.inline(uri)
        elif kind == "paste":
            lines = self.texts[uri].split("\n")
            start = doc.text.rfind("\n", 0, cursor) + 1
            self.edit(uri, start, start, self.rng.choice(lines) + "\n")
            self.inline(uri)
        elif kind == "delete":
            start = doc.text.rfind("\n", 0, cursor) + 1
            end = doc.text.find("\n", cursor)
            self.edit(uri, start, len(doc.text) if end < 0 else end + 1, "")
            self.inline(uri)
        elif kind in ("code_action", "resolve"):
            here = self.position(uri)
            response = self.timed("code_action", "textDocument/codeAction", {
                "textDocument": {"uri": uri}, "range": {"start": here, "end": here}, "context": {"diagnostics": []}})
            actions = response.get("result") or []
            if kind == "resolve" and actions:
                self.timed("resolve", "codeAction/resolve", actions[0])
        elif kind == "replace":
            doc.version += 1
            text = self.texts[uri] if self.rng.random() < 0.5 else doc.text.replace("    ", "\t")
            self.srv.change(uri, doc.version, [{"text": text}])
            doc.text = RefDoc(text).text
            self.place_cursor(uri)
            self.inline(uri)
        elif kind == "reopen":
            self.srv.close_document(uri)
            del self.docs[uri]
            self.ensure_open(uri)
            self.inline(uri)

    def check_sync(self) -> None:
        for uri, doc in self.docs.items():
            if self.srv.document_hash(uri) != doc.sha256():
                self.sync_errors += 1


def run(args) -> dict:
    files = pick_files(args)
    rng = random.Random(args.seed)
    kinds, weights = zip(*ACTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        srv = RawServer(Path(tmp) / "server.log")
        options = {"threads": args.threads}
        if args.bundle:
            options["bundle"] = args.bundle
        srv.initialize(options)
        status = srv.wait_ready(600)
        if status["state"] != "ready":
            raise SystemExit(f"server not ready: {status}")
        soak = Soak(srv, files, rng)
        samples = [{"requests": 0, "seconds": 0.0, "rss_mb": round(rss_mb(srv.pid), 1), **sizes(srv)}]
        started = time.monotonic()
        deadline = started + args.max_minutes * 60 if args.max_minutes else None
        uris = list(soak.texts)
        next_sample = args.sample_every
        stopped = "requests"
        while soak.requests < args.requests:
            uri = rng.choice(uris)
            for _ in range(rng.randint(*SESSION)):
                soak.action(uri, rng.choices(kinds, weights)[0])
                if soak.requests >= next_sample:
                    soak.check_sync()
                    samples.append({"requests": soak.requests, "seconds": round(time.monotonic() - started, 1),
                                    "rss_mb": round(rss_mb(srv.pid), 1), **sizes(srv)})
                    next_sample += args.sample_every
                    print(json.dumps(samples[-1]), flush=True)
                if soak.requests >= args.requests:
                    break
            if deadline and time.monotonic() > deadline:
                stopped = "time limit"
                break
        wall = time.monotonic() - started
        soak.check_sync()
        if samples[-1]["requests"] != soak.requests:
            samples.append({"requests": soak.requests, "seconds": round(wall, 1),
                            "rss_mb": round(rss_mb(srv.pid), 1), **sizes(srv)})
        alive = srv.alive()
        srv.close()
    every = [ms for values in soak.latency.values() for ms in values]
    half = [s for s in samples if s["requests"] >= soak.requests / 2]
    return {
        "config": {"requests_asked": args.requests, "documents": len(files), "threads": args.threads,
                   "bundle": args.bundle or "default (model/default/bundle)", "seed": args.seed,
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores", "stopped_by": stopped,
                   "files_from": args.corpus or args.source or "Python standard library", "note": args.note},
        "server": {"model": status.get("model"), "device": status.get("device"), "variant": status.get("variant")},
        "requests": soak.requests,
        "wall_s": round(wall, 1),
        "requests_per_s": round(soak.requests / wall, 2),
        "completions": soak.completions,
        "completions_per_s": round(soak.completions / wall, 2),
        "errors": soak.errors,
        "error_samples": soak.error_samples,
        "cancelled": soak.cancelled,
        "sync_errors": soak.sync_errors,
        "server_alive": alive,
        "latency_ms": {kind: {"count": len(v), "p50": round(percentile(v, 0.5), 1),
                              "p95": round(percentile(v, 0.95), 1), "max": round(max(v), 1)}
                       for kind, v in [*sorted(soak.latency.items()), ("all", every)] if v},
        "rss_mb": {"after_load": samples[0]["rss_mb"],
                   "first_sample": samples[1]["rss_mb"] if len(samples) > 1 else None,
                   "half": half[0]["rss_mb"] if half else None, "end": samples[-1]["rss_mb"],
                   "max": max(s["rss_mb"] for s in samples)},
        "samples": samples,
    }


def sizes(srv: RawServer) -> dict:
    status = srv.result("workspace/executeCommand", {"command": "seedLsp.status"})
    return {"kv_cache_mb": status.get("kvCacheMb"), "completion_cache_entries": status.get("completionCacheEntries"),
            "documents": status.get("documents")}


def markdown(result: dict) -> str:
    c, r = result["config"], result["rss_mb"]
    lines = [
        "# Soak benchmark (`bench/soak.py`)",
        "",
        f"Machine: {c['machine']}; server threads={c['threads']}; model: {c['bundle']} "
        f"({result['server']['device']}, {result['server']['variant']}); {c['documents']} documents from "
        f"{c['files_from']}; seed {c['seed']}.",
        f"Requests: {result['requests']} of {c['requests_asked']} asked (stopped by: {c['stopped_by']}), "
        f"in {result['wall_s']} s.",
        *([c["note"]] if c.get("note") else []),
        "",
        "| requests/s | completions/s | errors | documents out of sync | cancelled | server alive |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {result['requests_per_s']} | {result['completions_per_s']} | {result['errors']} | "
        f"{result['sync_errors']} | {result['cancelled']} | {result['server_alive']} |",
        "",
        "| request | count | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, v in result["latency_ms"].items():
        lines.append(f"| {kind} | {v['count']} | {v['p50']} | {v['p95']} | {v['max']} |")
    lines += [
        "",
        f"RSS: {r['after_load']} MB after loading, {r['first_sample']} MB at the first sample, {r['half']} MB at "
        f"half the requests, {r['end']} MB at the end (max {r['max']} MB).",
        "",
        "| requests | seconds | RSS MB | KV cache MB | completion cache entries | open documents |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["samples"]:
        lines.append(f"| {s['requests']} | {s['seconds']} | {s['rss_mb']} | {s['kv_cache_mb']} | "
                     f"{s['completion_cache_entries']} | {s['documents']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--documents", type=int, default=60)
    p.add_argument("--bundle", help="model bundle (default: the shipped one)")
    p.add_argument("--corpus", help="corpus folder: its validation split supplies the files")
    p.add_argument("--source", help="folder of .py files (default: the Python standard library)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=0, help="stop after this long (0 = run all requests)")
    p.add_argument("--sample-every", type=int, default=250, help="RSS and cache sizes every N requests")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "soak.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["errors"] == 0 and result["sync_errors"] == 0 and result["server_alive"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
