"""Checkpoint folders: model.safetensors + config.json + tokenizer.json (+ training state).

Nothing is a pickle. Training state is JSON (stage, step, tokens seen, history)
and the optimizer's moments are a second safetensors file, optional: a shipped
checkpoint drops it, and training resumes with fresh moments. Saving writes a
temporary folder and renames it into place, so a run killed mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.network import DiffusionLM, ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
STATE = "train_state.json"
OPTIMIZER = "optimizer.safetensors"
CHECKPOINT_FILES = {WEIGHTS, CONFIG, TOKENIZER, STATE, OPTIMIZER}


def save_checkpoint(folder: Path, model: DiffusionLM, tokenizer_path: Path, state: dict,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / WEIGHTS))
    model.cfg.save(tmp / CONFIG)
    shutil.copyfile(tokenizer_path, tmp / TOKENIZER)
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    if optimizer is not None:
        save_file(optimizer_tensors(model, optimizer), str(tmp / OPTIMIZER))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        keep_other_files(folder, tmp)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def keep_other_files(old: Path, new: Path) -> None:
    """Move files that are not part of a checkpoint (the training log) into the new folder.

    A rename keeps the inode, so a log file still open for appending keeps working.
    """
    for path in old.iterdir():
        if path.name not in CHECKPOINT_FILES and not (new / path.name).exists():
            path.rename(new / path.name)


def has_checkpoint(folder: Path) -> bool:
    return (Path(folder) / WEIGHTS).is_file() and (Path(folder) / CONFIG).is_file()


def load_model(folder: Path, device: str | torch.device = "cpu") -> DiffusionLM:
    folder = Path(folder)
    model = DiffusionLM(ModelConfig.load(folder / CONFIG))
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(device)


def load_state(folder: Path) -> dict:
    path = Path(folder) / STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW moments keyed by parameter name (portable, unlike the optimizer's own pickle)."""
    out = {}
    for name, param in model.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value):
                out[f"{name}::{key}"] = value.detach().cpu().contiguous()
    return out


def load_optimizer(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Restore AdamW moments if the checkpoint has them; False when it does not."""
    path = Path(folder) / OPTIMIZER
    if not path.is_file():
        return False
    tensors = load_file(str(path))
    for name, param in model.named_parameters():
        state = {}
        for key, value in tensors.items():
            if key.startswith(name + "::"):
                field = key.split("::", 1)[1]
                # AdamW keeps its step counter on the CPU unless it is capturable/fused.
                state[field] = value if field == "step" else value.to(param.device)
        if state:
            optimizer.state[param] = state
    return True
