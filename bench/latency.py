"""Latency benchmark (not a test): a real LSP client against `python -m lsp_server` over stdio.

For held-out files (real code the model never trained on) it opens the file,
puts the cursor inside a code line and asks for an inline completion (cold: the
first request at that spot), then types the next few characters of the real
line one at a time, asking again after each (warm: the engine's prefix cache and
the typed-ahead completion cache are in play). Line and block modes, each with the
server's default decoder (verify) and with plain block diffusion (verify off). Reports
p50/p95/max end-to-end latency as the client sees it, and the cache hit rate.

    python bench/latency.py --corpus data/corpus --files 20 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.heldout import heldout_files, line_jobs  # noqa: E402
from tests.lsp_client import SeedClient  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def position_of(text: str, offset: int) -> tuple[int, int]:
    """LSP position (UTF-16) of a character offset."""
    line = text.count("\n", 0, offset)
    start = text.rfind("\n", 0, offset) + 1
    return line, len(text[start:offset].encode("utf-16-le")) // 2


async def timed_inline(client: SeedClient, uri: str, text: str, offset: int) -> tuple[float, int]:
    line, character = position_of(text, offset)
    started = time.perf_counter()
    result = await client.inline(uri, line, character)
    return (time.perf_counter() - started) * 1000, len(result.items) if result else 0


async def run_mode(args, mode: str, decoder: str, jobs) -> dict:
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        client = SeedClient()
        await client.start_server(Path(tmp) / "server.log")
        try:
            options = {"threads": args.threads, "mode": mode, "verify": decoder == "verify"}
            if args.bundle:
                options["bundle"] = args.bundle
            await client.initialize_server(options)
            status = await client.wait_ready(300)
            for i, job in enumerate(jobs):
                uri = f"file:///bench/{i}.py"
                text = job.prefix + job.suffix
                client.open(uri, text)
                ms, _ = await timed_inline(client, uri, text, len(job.prefix))
                cold.append(ms)
                # Type the real next characters one by one, asking after each keystroke.
                for k in range(1, min(args.typed, len(job.reference)) + 1):
                    typed = job.reference[:k]
                    new_text = job.prefix + typed + job.suffix[len(typed):] if job.suffix.startswith(typed) else None
                    if new_text is None:
                        break
                    # The editor sends the keystroke as an incremental change at the cursor.
                    line, character = position_of(text, len(job.prefix) + k - 1)
                    from lsprotocol import types
                    client.change(uri, k + 1, [types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(line=line, character=character),
                                          end=types.Position(line=line, character=character)),
                        text=typed[-1])])
                    text = job.prefix + typed + job.suffix
                    ms, _ = await timed_inline(client, uri, text, len(job.prefix) + k)
                    warm.append(ms)
                client.text_document_did_close(types.DidCloseTextDocumentParams(
                    text_document=types.TextDocumentIdentifier(uri=uri)))
            final = await client.command("seedLsp.status")
        finally:
            await client.close()
    return {
        "mode": mode, "decoder": decoder, "requests_cold": len(cold), "requests_warm": len(warm),
        "cold_p50": percentile(cold, 0.5), "cold_p95": percentile(cold, 0.95), "cold_max": max(cold, default=0),
        "warm_p50": percentile(warm, 0.5), "warm_p95": percentile(warm, 0.95), "warm_max": max(warm, default=0),
        "cache_hit_rate": final.get("cacheHitRate"), "device": status.get("device"), "variant": status.get("variant"),
    }


def markdown(rows: list[dict], args) -> str:
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; server threads="
             f"{args.threads or 'default'}; {rows[0]['device']} {rows[0]['variant']}; {args.files} held-out files, "
             f"{args.typed} typed characters after each cold request.", "",
             "| mode | decoder | cold p50 | cold p95 | cold max | warm p50 | warm p95 | warm max | cache hit rate |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['decoder']} | {r['cold_p50']:.0f} ms | {r['cold_p95']:.0f} ms | {r['cold_max']:.0f} ms | "
                     f"{r['warm_p50']:.0f} ms | {r['warm_p95']:.0f} ms | {r['warm_max']:.0f} ms | "
                     f"{100 * (r['cache_hit_rate'] or 0):.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="model bundle (default: the bundled model)")
    p.add_argument("--corpus", help="corpus folder: its val split gives the held-out files")
    p.add_argument("--source", help="or: a folder of .py files")
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--typed", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--decoders", default="verify,diffusion",
                   help="server decoders to compare: verify (the default) and/or diffusion (verify off)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    jobs = line_jobs(heldout_files(args.corpus, args.source), args.files, args.seed)
    rows = [asyncio.run(run_mode(args, mode, decoder, jobs)) for mode in ("line", "block")
            for decoder in args.decoders.split(",")]
    table = markdown(rows, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.md").write_text(table)
    (out / "latency.json").write_text(json.dumps(rows, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
