"""`seed-lsp ship CHECKPOINT`: make a checkpoint the bundled default model (model/default).

The default model lives in git, so it is kept small and replaced only when it is
better: the weights are stored in bf16 without optimizer state (training resumes
from them with fresh moments), the bundle carries only the int8 ONNX variant
(verified against torch before the fp32 graph is dropped), and a checkpoint whose
validation loss is not lower than the shipped one's is refused unless --force.

Which validation loss: each machine builds its corpus from its own Python packages,
so the numbers recorded in two checkpoints' histories may come from different
held-out files and are not comparable. With --corpus both checkpoints are scored
side by side on the same held-out batches (same masks) of that corpus, and the new
one must beat the old by --margin; without it the recorded numbers are compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# torch, safetensors and model.checkpoint are imported where used: `seed-lsp` builds its
# argument parser (add_ship_arguments) for every command, and `seed-lsp complete` must
# run without torch installed.

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
SIZE_LIMIT_MB = 80.0
# Sequence length of the runs before train_state recorded it (session 1 and 2: 512).
DEFAULT_TRAINED_CONTEXT = 512


def validation_loss(folder: Path) -> float | None:
    """The last recorded diffusion validation loss of a checkpoint, or None."""
    from model import checkpoint as ckpt

    state_path = folder / ckpt.STATE
    if not state_path.is_file():
        return None
    history = json.loads(state_path.read_text()).get("history") or []
    losses = [h["val_diff"] for h in history if "val_diff" in h]
    return losses[-1] if losses else None


def trainer_batch_shape(batches: int) -> argparse.Namespace:
    """`seed-lsp train`'s default batch shape (sequence length, rows, FIM rate) with this many
    validation batches: the same kind of batch as the numbers the trainer records."""
    from model.options import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(["--stage", "diffusion", "--corpus", "", "--out", "", "--eval-batches", str(batches)])


def losses_on_same_batches(corpus: Path, folders: list[Path], batches: int = 16) -> list[float]:
    """Diffusion validation loss of each checkpoint on the same held-out batches of `corpus`."""
    import torch

    from model import checkpoint as ckpt
    from model.tokenizer import load_tokenizer
    from model.train import evaluate, use_bf16, validation_batches

    shape = trainer_batch_shape(batches)
    tokenizer = load_tokenizer(folders[0] / ckpt.TOKENIZER)
    held_out = validation_batches(Path(corpus), tokenizer, shape)
    cpu = torch.device("cpu")
    bf16 = use_bf16("auto", cpu)  # as the trainer validates here: emulated bf16 is many times slower
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    losses = []
    for folder in folders:
        model = ckpt.load_model(folder)
        losses.append(round(evaluate(model, model.hidden_states, held_out, cpu, autocast)["val_diff"], 4))
    return losses


def write_small_checkpoint(source: Path, out: Path) -> None:
    """Weights in bf16, config, tokenizer and training state; no optimizer, no log."""
    import torch
    from safetensors.torch import load_file, save_file

    from model import checkpoint as ckpt

    out.mkdir(parents=True)
    weights = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(source / ckpt.WEIGHTS)).items()}
    save_file(weights, str(out / ckpt.WEIGHTS))
    for name in (ckpt.CONFIG, ckpt.TOKENIZER):
        shutil.copyfile(source / name, out / name)
    state = json.loads((source / ckpt.STATE).read_text())
    state.setdefault("trained_context", DEFAULT_TRAINED_CONTEXT)
    (out / ckpt.STATE).write_text(json.dumps(state, indent=1))


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def ship(source: Path, out: Path = DEFAULT_DIR, force: bool = False, verify_jobs: int = 20,
         corpus: Path | None = None, margin: float = 0.0) -> dict:
    from export.bundle_writer import write_bundle
    from model import checkpoint as ckpt

    if corpus is not None and ckpt.has_checkpoint(out):
        new_loss, old_loss = losses_on_same_batches(corpus, [source, out])
    else:
        new_loss, old_loss = validation_loss(source), validation_loss(out)
    if not force and old_loss is not None and (new_loss is None or new_loss >= old_loss - margin):
        raise SystemExit(f"error: {source} (val_diff {new_loss}) is not better than the shipped model "
                         f"(val_diff {old_loss}, margin {margin}); --force to ship anyway")
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    write_small_checkpoint(source, staging)
    write_bundle(staging, staging / "bundle", ["fp32", "int8"], verify_jobs=verify_jobs, keep_fp32=False)
    size = folder_mb(staging)
    if size > SIZE_LIMIT_MB:
        raise SystemExit(f"error: the default model would take {size:.1f} MB (limit {SIZE_LIMIT_MB} MB); "
                         f"left in {staging}")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {"shipped": str(out), "val_diff": new_loss, "previous_val_diff": old_loss,
            "compared_on": str(corpus) if corpus is not None else "recorded histories", "mb": round(size, 1)}


def main(args: argparse.Namespace) -> int:
    summary = ship(Path(args.checkpoint), Path(args.out) if args.out else DEFAULT_DIR, args.force, args.verify_jobs,
                   Path(args.corpus) if args.corpus else None, args.margin)
    print(json.dumps(summary))
    return 0


def add_ship_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder to ship")
    p.add_argument("--out", default=None, help="default model folder (checkpoint + bundle/)")
    p.add_argument("--force", action="store_true", help="ship even if validation loss is not lower")
    p.add_argument("--verify-jobs", type=int, default=20)
    p.add_argument("--corpus", help="score both checkpoints on the same held-out batches of this corpus")
    p.add_argument("--margin", type=float, default=0.0, help="the new val_diff must be lower by more than this")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_ship_arguments(parser)
    sys.exit(main(parser.parse_args()))
