"""Speed benchmark (not a test): diffusion vs autoregressive on the same weights, three backends.

Side by side in one process, on the same bundle and the same held-out infill jobs,
each job run by every configuration in turn (so machine noise hits all alike):

- backends: torch eager (the checkpoint), ONNX fp32, ONNX int8 (onnxruntime CPU);
  with --device cuda the ONNX variants run on the CUDA provider (fp16, fp32), and
  --io-binding both adds a "+iob" row per variant: the same session fed through IO
  binding with the KV cache kept on the device (engine.runtime.IoBindingStep);
- decoding: B=1 (autoregressive, the baseline) and block diffusion B=4/8/16 at
  several tau.

Reports decode tokens/s (prefill excluded: it is the same work for every decoder),
end-to-end tokens/s, tokens per forward pass, and exact agreement of the text with
the same backend's B=1 output. Writes a markdown table, a JSON file and a PNG plot.

    python bench/speed.py --bundle model/default/bundle --checkpoint model/default \
        --corpus data/corpus --jobs 200 --out bench/results

On a GPU machine, session.run vs IO binding side by side (needs an fp16/fp32 bundle:
seed-lsp export --variants fp32,fp16):

    python bench/speed.py --bundle BUNDLE --source SRC --device cuda --io-binding both \
        --sweep onnx-fp16+iob --jobs 50 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.heldout import heldout_files, line_jobs  # noqa: E402
from engine.decode import DecodeConfig  # noqa: E402
from engine.engine import Engine, Job  # noqa: E402
from engine.jobs import Budget  # noqa: E402
from engine.tokenizer import TextCodec  # noqa: E402


@dataclass
class Tally:
    """Running totals of one configuration."""

    name: str
    backend: str
    block_size: int
    tau: float
    verify: bool = False  # draft guesses, keep what the AR head agrees with
    draft: str = DecodeConfig.draft  # verify: where the guesses come from
    min_match: int = DecodeConfig.min_match  # verify: shortest earlier match a lookup draft needs
    tokens: int = 0
    passes: int = 0
    decode_s: float = 0.0
    total_s: float = 0.0
    texts: list[str] = field(default_factory=list)

    def add(self, result) -> None:
        s = result.stats
        self.tokens += s.tokens
        self.passes += s.forward_passes + 1  # + the prefill, which yields the first token
        self.decode_s += s.ms["decode"] / 1000
        self.total_s += s.ms["total"] / 1000
        self.texts.append(result.completions[0].text)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle folder (seed-lsp export)")
    p.add_argument("--checkpoint", help="torch checkpoint of the same weights (adds the torch eager rows)")
    p.add_argument("--corpus", help="corpus folder: its val split gives the held-out files")
    p.add_argument("--source", help="or: a folder of .py files the model never saw")
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("line", "block"), default="block")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--blocks", default="4,8,16")
    p.add_argument("--taus", default="0.5,0.7,0.9,0.95")
    p.add_argument("--verify-blocks", default="4,8",
                   help="draft-and-verify rows (exactly B=1's text) for these B on the swept backend; '' = none")
    p.add_argument("--verify-drafts", default="lookup:2,both:1",
                   help="the verify rows' drafts, DRAFT:MIN_MATCH each (lookup:2 is the server's default)")
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="onnxruntime device of the ONNX rows")
    p.add_argument("--variants", help="ONNX variants to run (default: fp32,int8 on cpu, fp16,fp32 otherwise)")
    p.add_argument("--io-binding", choices=("off", "on", "both"), default="off",
                   help="feed the ONNX rows through IO binding (KV cache on the device); both = each variant twice")
    p.add_argument("--sweep", default="onnx-int8", help="backend that gets the full block/tau sweep")
    p.add_argument("--out", default="bench/results")
    return p.parse_args()


def build_engines(args) -> dict[str, Engine]:
    from engine.bundle import load_bundle
    from engine.runtime import open_step

    bundle = load_bundle(args.bundle)
    codec = TextCodec.from_file(bundle.tokenizer_path)
    budget = Budget(384, 128)
    engines = {}
    if args.checkpoint:
        import torch

        from model import checkpoint as ckpt
        from model.step import TorchStep

        if args.threads:
            torch.set_num_threads(args.threads)
        engines["torch"] = Engine(TorchStep(ckpt.load_model(Path(args.checkpoint))), codec, budget=budget)
    for variant in onnx_variants(args):
        if variant not in bundle.variants:  # the shipped bundle holds int8 only; export --variants fp32,int8 for both
            print(f"note: {args.bundle} has no {variant} variant, its rows are skipped", file=sys.stderr)
            continue
        for io_binding in IO_BINDING_ROWS[args.io_binding]:
            step = open_step(bundle, device=args.device, variant=variant, threads=args.threads, io_binding=io_binding)
            engines[f"onnx-{variant}" + ("+iob" if io_binding else "")] = Engine(step, codec, budget=budget)
    return engines


# --io-binding: which feeding each ONNX variant runs with (False = session.run with numpy, True = IO binding).
IO_BINDING_ROWS = {"off": (False,), "on": (True,), "both": (False, True)}


def onnx_variants(args) -> list[str]:
    if args.variants:
        return args.variants.split(",")
    return ["fp32", "int8"] if args.device == "cpu" else ["fp16", "fp32"]


def configurations(args, backends) -> list[Tally]:
    tallies = []
    for backend in backends:
        tallies.append(Tally(f"{backend} B=1", backend, 1, 1.0))
        blocks = [int(b) for b in args.blocks.split(",")]
        taus = [float(t) for t in args.taus.split(",")]
        # The full sweep on the shipped CPU variant; one default point on the others.
        sweep = [(b, t) for b in blocks for t in taus] if backend == args.sweep else [(8, 0.9)]
        tallies += [Tally(f"{backend} B={b} tau={t}", backend, b, t) for b, t in sweep]
        if backend == args.sweep and args.verify_blocks:
            verify = [int(b) for b in args.verify_blocks.split(",")]
            drafts = [(d, int(m)) for d, m in (spec.split(":") for spec in args.verify_drafts.split(","))]
            tallies += [Tally(f"{backend} B={b} verify {d}>={m}", backend, b, 1.0, verify=True, draft=d, min_match=m)
                        for b in verify for d, m in drafts]
    return tallies


def run(args) -> list[dict]:
    engines = build_engines(args)
    jobs = line_jobs(heldout_files(args.corpus, args.source), args.jobs, args.seed)
    tallies = configurations(args, engines)
    started = time.time()
    for i, job in enumerate(jobs):
        for t in tallies:
            config = DecodeConfig(block_size=t.block_size, tau=t.tau, max_tokens=args.max_tokens, mode=args.mode,
                                  verify=t.verify, draft=t.draft, min_match=t.min_match)
            t.add(engines[t.backend].complete(Job(job.prefix, job.suffix, config))[0])
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(jobs)} jobs, {time.time() - started:.0f} s", file=sys.stderr)
    baseline = {t.backend: t for t in tallies if t.block_size == 1}
    rows = []
    for t in tallies:
        base = baseline[t.backend]
        same = sum(a == b for a, b in zip(t.texts, base.texts))
        rows.append({
            "config": t.name, "backend": t.backend, "block_size": t.block_size, "tau": t.tau, "verify": t.verify,
            "draft": t.draft if t.verify else None, "min_match": t.min_match if t.verify else None,
            "tokens": t.tokens, "decode_tok_s": t.tokens / max(t.decode_s, 1e-9),
            "end_to_end_tok_s": t.tokens / max(t.total_s, 1e-9),
            "tokens_per_pass": t.tokens / max(t.passes, 1),
            "speedup_vs_b1": (t.tokens / max(t.decode_s, 1e-9)) / (base.tokens / max(base.decode_s, 1e-9)),
            "agreement_with_b1": same / len(t.texts),
        })
    add_io_binding_agreement(rows, tallies)
    return rows


def add_io_binding_agreement(rows: list[dict], tallies: list[Tally]) -> None:
    """For every "+iob" configuration: the share of jobs whose text equals the session.run twin's
    (expected 100 %: the same session on the same inputs; anything less is a bug of the device cache)."""
    by_name = {t.name: t for t in tallies}
    for row, t in zip(rows, tallies):
        twin = by_name.get(t.name.replace("+iob", "", 1)) if t.backend.endswith("+iob") else None
        if twin is not None:
            row["same_as_session_run"] = sum(a == b for a, b in zip(t.texts, twin.texts)) / len(t.texts)


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Jobs: {args.jobs} held-out {args.mode} infills, max {args.max_tokens} tokens; "
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads or 'all'}; "
        f"onnx device {args.device}, io binding {args.io_binding}.",
        "",
        "| config | decode tok/s | end-to-end tok/s | tokens/pass | speed-up vs B=1 | same text as B=1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {r['decode_tok_s']:.0f} | {r['end_to_end_tok_s']:.0f} | "
                     f"{r['tokens_per_pass']:.2f} | {r['speedup_vs_b1']:.2f}x | {100 * r['agreement_with_b1']:.1f}% |")
    twins = [r for r in rows if "same_as_session_run" in r]
    if twins:
        lines += ["", "IO binding vs session.run, same text: " +
                  ", ".join(f"{r['config']} {100 * r['same_as_session_run']:.1f}%" for r in twins)]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in sorted({r["backend"] for r in rows}):
        mine = [r for r in rows if r["backend"] == backend]
        ax.scatter([r["decode_tok_s"] for r in mine], [100 * r["agreement_with_b1"] for r in mine], label=backend)
        for r in mine:
            label = "B=1" if r["block_size"] == 1 else f"B={r['block_size']} τ={r['tau']}"
            ax.annotate(label, (r["decode_tok_s"], 100 * r["agreement_with_b1"]), fontsize=7)
    ax.set_xlabel("decode tokens/s")
    ax.set_ylabel("same text as B=1 (%)")
    ax.set_title("Block diffusion vs autoregressive, same weights")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    args = parse_args()
    rows = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, args)
    (out / "speed.md").write_text(table)
    (out / "speed.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "speed.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
