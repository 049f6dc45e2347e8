"""`seed-lsp train`: the curriculum of DESIGN.md in one resumable loop.

Stages: `ar` (next-token loss, causal), `diffusion` (one-pass block diffusion on
noisy ++ clean plus the next-token loss), `edit` (diffusion with edit corruption,
loss on every noisy position). A checkpoint folder resumes its own stage (same
step, same optimizer moments); pointing a later stage at it starts that stage from
its weights with a fresh schedule. bf16 autocast where the hardware has it (CUDA,
AMX or AVX512-BF16 CPUs; elsewhere bf16 is emulated and slower than fp32); CUDA is
used when present, so one command trains on a laptop or on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# oneDNN JIT-compiles a kernel per matmul shape on AMX CPUs and caches up to 1,024 of them;
# training shapes vary with every batch (chunked attention, block mixture), and with the
# default cache a run grew by 20-40 MB per step (4 -> 16 GB in 40 minutes on a 24 GB
# machine). 32 entries keep it at about 3 GB at the same speed (2,290 vs 2,349 tokens/s).
# Set before torch loads oneDNN; a value in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm

from model import checkpoint as ckpt
from model.attention import causal_chunked, one_pass_chunked
from model.corpus import load_split
from model.corruption import corrupt_edits
from model.data import Batch, BatchStream, SampleSource, make_batch
from model.fim import SpecialIds
from model.losses import diffusion_loss, effective_rates, next_token_loss, next_token_targets, token_cross_entropy
from model.network import DiffusionLM, ModelConfig
from model.schedule import sample_block_masks
from engine.tokenizer import TextCodec, load_tokenizer
from model.tokenizer import DEFAULT_TOKENIZER

IDS = SpecialIds()
FIRST_PLAIN_ID = 7  # ids below are special tokens (engine.contract)
EVAL_BLOCK_SIZE = 8
# Query chunks of the training attention (model.attention.ChunkedMask): the same result
# without the masked-out pairs; measured on the 2-core CPU (bench/train_speed.py).
ATTENTION_CHUNKS = 4


# ---------------------------------------------------------------- losses per stage

def head_cross_entropy(model: DiffusionLM, compile: bool = False):
    """(hidden [n, d], targets [n]) -> per-token CE through the tied output head.

    Compiled, the head matmul, the fp32 cast and the log-softmax fuse instead of
    materialising fp32 logits [n, vocab] and their gradient: measured 1,020 -> 407 ms
    forward + backward for 6,000 positions on the 2-core CPU (bench/train_speed.py).
    dynamic: the number of positions with a loss changes every step.
    """
    def ce(hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_cross_entropy(model.head(hidden), targets)

    return torch.compile(ce, dynamic=True) if compile else ce


def ar_loss(model: DiffusionLM, hidden_fn, batch: Batch, ce_fn=None) -> tuple[torch.Tensor, dict]:
    ce_fn = ce_fn or head_cross_entropy(model)
    hidden, _ = hidden_fn(batch.input_ids, batch.position_ids, causal_chunked(batch.sample_ids, ATTENTION_CHUNKS))
    has_next, targets = next_token_targets(batch.input_ids, batch.sample_ids, batch.valid)
    loss = next_token_loss(ce_fn(hidden[has_next], targets[has_next]))
    return loss, {"ar": loss.item()}


def noisy_stream(batch: Batch, block_size: int, edit_rate: float, vocab_size: int, gen: torch.Generator, np_rng) -> tuple:
    """Masked (and, in the edit stage, edited) copy of the batch, with the mask and rates."""
    b, length = batch.input_ids.shape
    valid_cpu = batch.valid.cpu()
    masked, rates = sample_block_masks(b, length, block_size, valid_cpu, gen)
    noisy = batch.input_ids.cpu()
    if edit_rate > 0:
        edited = corrupt_edits(noisy.numpy(), valid_cpu.numpy(), block_size, edit_rate, FIRST_PLAIN_ID, vocab_size, np_rng)
        noisy = torch.from_numpy(edited)
    noisy = torch.where(masked, torch.full_like(noisy, IDS.mask), noisy)
    device = batch.input_ids.device
    return noisy.to(device), masked.to(device), rates.to(device)


def diffusion_objective(model: DiffusionLM, hidden_fn, batch: Batch, block_size: int, edit_rate: float,
                        gen: torch.Generator, np_rng, ce_fn=None,
                        attention_chunks: int = ATTENTION_CHUNKS) -> tuple[torch.Tensor, dict]:
    ce_fn = ce_fn or head_cross_entropy(model)
    length = batch.input_ids.shape[1]
    noisy, masked, rates = noisy_stream(batch, block_size, edit_rate, model.cfg.vocab_size, gen, np_rng)
    hidden, _ = hidden_fn(
        torch.cat([noisy, batch.input_ids], 1),
        torch.cat([batch.position_ids, batch.position_ids], 1),
        one_pass_chunked(batch.sample_ids, block_size, attention_chunks),
    )
    h_noisy, h_clean = hidden[:, :length], hidden[:, length:]
    weights = 1.0 / effective_rates(masked, rates, batch.valid, block_size)
    if edit_rate > 0:  # every position has a loss: the model must not copy its (maybe wrong) input
        selected = batch.valid
        weights = torch.where(masked, weights, torch.ones_like(weights))
    else:
        selected = masked
    l_diff = diffusion_loss(ce_fn(h_noisy[selected], batch.input_ids[selected]), weights[selected], batch.n_tokens)
    has_next, targets = next_token_targets(batch.input_ids, batch.sample_ids, batch.valid)
    l_ar = next_token_loss(ce_fn(h_clean[has_next], targets[has_next]))
    return l_diff + l_ar, {"diff": l_diff.item(), "ar": l_ar.item()}


# ---------------------------------------------------------------- schedule and setup

def lr_at(step: int, total: int, peak: float, warmup: int, floor_ratio: float) -> float:
    """Linear warmup, then cosine down to floor_ratio * peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls in hardware.

    On a CPU without AMX or AVX512-BF16 (an AVX2-only AMD EPYC, say) torch emulates
    bf16: a training step took minutes there instead of about 2 seconds in fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for --precision: "bf16", "fp32", or "auto" (bf16 where native)."""
    if precision == "auto":
        return native_bf16(device)
    return precision == "bf16"


def rewarm_factor(step: int, rewarm_start: int | None, steps: int) -> float:
    """LR multiplier while the optimizer's moments are rebuilt after a resume without them.

    Fresh Adam moments make the first updates about lr * sign(gradient) for every weight;
    at a mid-schedule LR (8e-4) a few such steps took a 43M-token model's validation loss
    from 3.18 to 3.40. Ramping the LR up again over `steps` steps avoids that.
    """
    if rewarm_start is None or steps <= 0 or step < rewarm_start:
        return 1.0
    return min(1.0, (step - rewarm_start + 1) / steps)


def lr_jump_warning(state: dict, total_steps: int, args) -> str | None:
    """A warning when a resumed run's --tokens moves its LR schedule under it.

    The cosine is laid over the stage's token budget, so a larger budget on resume puts
    a step back at a higher LR: 60M -> 80M tokens took step 10072 from 4.6e-4 to 8.0e-4
    and the validation loss from 3.20 to 3.31 over the next 1.7M tokens.
    """
    before = state.get("schedule_steps")
    if not before or before == total_steps or state.get("step", 0) == 0:
        return None
    step = state["step"]
    old = lr_at(step, before, args.lr, args.warmup_steps, args.min_lr_ratio)
    new = lr_at(step, total_steps, args.lr, args.warmup_steps, args.min_lr_ratio)
    if abs(new - old) <= 0.05 * old:
        return None
    return (f"warning: --tokens changed this stage's schedule from {before} to {total_steps} steps; "
            f"the LR at step {step} moves from {old:.2e} to {new:.2e} (keep the earlier --tokens to avoid it)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def new_model_config(args, vocab_size: int) -> ModelConfig:
    ffn = args.ffn_hidden or int(round(8 * args.d_model / 3 / 64)) * 64
    return ModelConfig(vocab_size=vocab_size, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                       n_kv_heads=args.n_kv_heads or args.n_heads, ffn_hidden=ffn).validate()


def make_optimizer(model: DiffusionLM, args) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all tensors; measured 126 -> 40 ms per step on the 2-core CPU
    # (foreach is the default there), same update rule. CPU and CUDA both have it.
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def new_stage_key(stage: str, stages: dict) -> str:
    """Where a new run of `stage` records its compute: a stage run again (diffusion after edit)
    gets `diffusion-2`, so the earlier run's tokens and time stay in the record."""
    key, n = stage, 1
    while key in stages:
        n += 1
        key = f"{stage}-{n}"
    return key


def load_or_create(args, tokenizer_path: Path, vocab_size: int, device) -> tuple[DiffusionLM, dict, Path | None]:
    """Model, training state, and the folder whose optimizer moments to restore (same stage only)."""
    out = Path(args.out)
    source = out if ckpt.has_checkpoint(out) else (Path(args.init) if args.init else None)
    if source is None:
        return DiffusionLM(new_model_config(args, vocab_size)).to(device), {}, None
    model = ckpt.load_model(source, device)
    if model.cfg.vocab_size != vocab_size:
        raise SystemExit(f"error: checkpoint {source} has vocabulary {model.cfg.vocab_size}, tokenizer has {vocab_size}")
    state = ckpt.load_state(source)
    if state.get("stage") != args.stage:  # a new stage: weights carry over, schedule restarts
        history = state.get("history", [])
        stages = state.get("stages", {})
        state = {"tokens_total": state.get("tokens_total", 0), "history": history,
                 "stages": stages, "stage_key": new_stage_key(args.stage, stages)}
        return model, state, None
    return model, state, source


# ---------------------------------------------------------------- validation

def validation_batches(corpus: Path, tokenizer, args) -> list[Batch]:
    tokens, offsets = load_split(corpus, "val")
    if len(tokens) == 0:
        tokens, offsets = load_split(corpus, "train")
        print("warning: empty validation split, validating on train", file=sys.stderr)
    source = SampleSource(tokens, offsets, tokenizer, args.seq_len, args.fim_rate, seed=12_345)
    return [make_batch(source, args.batch_size, args.seq_len) for _ in range(args.eval_batches)]


@torch.no_grad()
def evaluate(model, hidden_fn, batches: list[Batch], device, autocast, ce_fn=None) -> dict:
    model.eval()
    gen = torch.Generator().manual_seed(0)  # same masks every validation: comparable numbers
    np_rng = np.random.default_rng(0)
    ar_total, diff_total = 0.0, 0.0
    for batch in batches:
        batch = batch.to(device)
        with autocast():
            _, parts = diffusion_objective(model, hidden_fn, batch, EVAL_BLOCK_SIZE, 0.0, gen, np_rng, ce_fn)
        ar_total += parts["ar"]
        diff_total += parts["diff"]
    model.train()
    return {"val_ar": ar_total / len(batches), "val_diff": diff_total / len(batches)}


def infill_jobs(corpus: Path, n: int, seed: int = 7) -> list[dict]:
    """Held-out line completions: prefix up to a cursor inside a line, suffix after that line."""
    from model.corpus import manifest_rows, read_text

    rows = manifest_rows(corpus, "val") or manifest_rows(corpus, "train")
    rng = random.Random(seed)
    jobs = []
    for _ in range(50 * n):
        if len(jobs) == n or not rows:
            break
        text = read_text(rng.choice(rows))
        lines = text.splitlines(keepends=True)
        candidates = [i for i, l in enumerate(lines) if len(l.strip()) > 12 and i > 5]
        if not candidates:
            continue
        i = rng.choice(candidates)
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        cut = rng.randrange(indent + 1, indent + max(2, (len(line.rstrip()) - indent) // 2))
        before = "".join(lines[:i]) + line[:cut]
        jobs.append({"prefix": before[-1500:], "middle": line[cut:].rstrip("\n"), "suffix": "".join(lines[i + 1:])[:600]})
    return jobs


def show_samples(model, jobs: list[dict], codec, device, log) -> None:
    from model.sample import infill

    for job in jobs:
        for block_size in (8, 1):
            text, _ = infill(model, codec, job["prefix"], job["suffix"], "line", block_size, 0.9, 48, device)
            mark = "==" if text == job["middle"] else "!="
            log(f"  B={block_size:<2} {mark} want {job['middle']!r:.70} got {text!r:.70}")


# ---------------------------------------------------------------- the loop

def hold_folder_lock(out: Path):
    """An exclusive lock on `out` for this process's lifetime, or a clear error.

    Two trainers writing one folder overwrite each other's checkpoints (a stopped run
    that finishes its step after a new one started saves over it). The OS drops the
    lock when the process ends, so a killed run leaves nothing stale behind. Where
    fcntl is missing (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(out / ".train.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SystemExit(f"error: {out} is being written by another `seed-lsp train` ({holder}); "
                         "stop it first or use another --out")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


@dataclass
class Clock:
    start: float
    last_save: float


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    corpus = Path(args.corpus)
    tokenizer_path = Path(args.tokenizer or DEFAULT_TOKENIZER)
    tokenizer = load_tokenizer(tokenizer_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = hold_folder_lock(out)  # noqa: F841 (held until the process ends)
    log_file = open(out / "train.log", "a")

    def log(msg: str) -> None:
        print(msg, file=log_file, flush=True)
        if args.no_progress:
            print(msg, flush=True)
        else:
            tqdm.write(msg)

    model, state, resume_from = load_or_create(args, tokenizer_path, tokenizer.get_vocab_size(), device)
    optimizer = make_optimizer(model, args)
    restored = bool(resume_from) and ckpt.load_optimizer(resume_from, model, optimizer)
    state.setdefault("stage", args.stage)
    state.setdefault("step", 0)
    state.setdefault("stage_tokens", 0)
    state.setdefault("tokens_total", 0)
    state.setdefault("history", [])
    state.setdefault("stages", {})
    if resume_from and not restored:
        state["rewarm_start"] = state["step"]  # kept in the checkpoint: a crash mid-ramp resumes the ramp
    tokens_per_step = args.batch_size * args.seq_len
    total_steps = max(1, math.ceil(args.tokens / tokens_per_step))
    block_sizes = [int(b) for b in args.block_sizes.split(",")]
    schedule_warning = lr_jump_warning(state, total_steps, args)
    state["schedule_steps"] = total_steps
    edit_rate = args.edit_rate if args.stage == "edit" else 0.0

    bf16 = use_bf16(args.precision, device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    hidden_fn = torch.compile(model.hidden_states) if args.compile else model.hidden_states
    ce_fn = head_cross_entropy(model, args.compile)

    tokens, offsets = load_split(corpus, "train")
    stream = BatchStream(tokens, offsets, tokenizer, args.batch_size, args.seq_len, args.fim_rate,
                         seed=args.seed * 7919 + state["step"])  # a resumed run draws fresh batches
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                              pin_memory=device.type == "cuda",
                                              persistent_workers=args.workers > 0))
    val_batches = validation_batches(corpus, tokenizer, args)
    jobs = infill_jobs(corpus, args.samples) if args.samples else []
    gen = torch.Generator().manual_seed(args.seed * 31 + state["step"])
    np_rng = np.random.default_rng(args.seed * 31 + state["step"])

    log(f"[{time.strftime('%H:%M:%S')}] stage={args.stage} step={state['step']}/{total_steps} "
        f"params={model.num_parameters() / 1e6:.2f}M device={device} bf16={bf16} compile={args.compile} "
        f"resumed={'yes' if resume_from else 'no'} optimizer_restored={restored} tokens_total={state['tokens_total']:,}")

    if schedule_warning:
        log(schedule_warning)
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    clock = Clock(time.time(), time.time())
    wall_before = state.get("stage_seconds", 0.0)

    def save(reason: str) -> None:
        state["stage_seconds"] = wall_before + time.time() - clock.start
        record = {"tokens": state["stage_tokens"], "steps": state["step"], "seconds": round(state["stage_seconds"], 1)}
        state["stages"][state.get("stage_key", args.stage)] = record
        # Positions past this were never trained: the engine keeps contexts inside it.
        state["trained_context"] = max(state.get("trained_context", 0), args.seq_len)
        ckpt.save_checkpoint(out, model, tokenizer_path, state, optimizer)
        clock.last_save = time.time()
        log(f"[{time.strftime('%H:%M:%S')}] checkpoint saved at step {state['step']} ({reason})")

    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc=args.stage, disable=args.no_progress, dynamic_ncols=True)
    window_tokens, window_start = 0, time.time()
    try:
        while state["step"] < total_steps:
            step = state["step"]
            lr = lr_at(step, total_steps, args.lr, args.warmup_steps, args.min_lr_ratio)
            lr *= rewarm_factor(step, state.get("rewarm_start"), args.warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(loader).to(device)
            with autocast():
                if args.stage == "ar":
                    loss, parts = ar_loss(model, hidden_fn, batch, ce_fn)
                else:
                    block = block_sizes[step % len(block_sizes)]
                    loss, parts = diffusion_objective(model, hidden_fn, batch, block, edit_rate, gen, np_rng, ce_fn)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n = batch.n_tokens
            state["step"] += 1
            state["stage_tokens"] += n
            state["tokens_total"] += n
            window_tokens += n
            tok_s = window_tokens / max(1e-9, time.time() - window_start)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()} | {"tok/s": f"{tok_s:,.0f}", "lr": f"{lr:.1e}"})
            if state["step"] % args.log_every == 0:
                print(json.dumps({"step": state["step"], "tokens_total": state["tokens_total"], "tok_s": round(tok_s),
                                  "lr": float(f"{lr:.3g}"), **{k: round(v, 4) for k, v in parts.items()}}), file=log_file, flush=True)
            done = state["step"] >= total_steps
            out_of_time = args.max_minutes and time.time() - clock.start > args.max_minutes * 60
            out_of_steps = args.max_steps and state["step"] >= args.max_steps
            if state["step"] % args.eval_every == 0 or done or out_of_time or out_of_steps or stop["signal"]:
                metrics = evaluate(model, hidden_fn, val_batches, device, autocast, ce_fn)
                record = {"stage": args.stage, "step": state["step"], "tokens_total": state["tokens_total"],
                          "stage_tokens": state["stage_tokens"], "tok_s": round(tok_s), "lr": lr,
                          "elapsed_min": round((wall_before + time.time() - clock.start) / 60, 2),
                          **{f"train_{k}": round(v, 4) for k, v in parts.items()},
                          **{k: round(v, 4) for k, v in metrics.items()}}
                state["history"].append(record)
                log(f"[{time.strftime('%H:%M:%S')}] " + json.dumps(record))
                if jobs:
                    show_samples(model, jobs, TextCodec(tokenizer), device, log)
                model.train()
                window_tokens, window_start = 0, time.time()
            if done or out_of_time or out_of_steps or stop["signal"]:
                break
            if time.time() - clock.last_save > args.save_minutes * 60:
                save("periodic")
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    save("stop signal" if stop["signal"] else "end of run")
    log_file.close()
    return state


def main(args: argparse.Namespace) -> int:
    train(args)
    return 0
