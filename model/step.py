"""The torch implementation of the engine's step function.

engine/decode.py drives decoding through `step(input_ids, position_ids,
attention_mask, past) -> (logits, kv)` on numpy arrays; this adapter runs the
torch network behind that interface (the ONNX backend implements the same one).
"""

from __future__ import annotations

import numpy as np
import torch

from model.network import DiffusionLM


class TorchStep:
    """Calls a DiffusionLM on numpy inputs; past/new keys and values stay numpy float32."""

    def __init__(self, model: DiffusionLM, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def keys_values(self, input_ids, position_ids, attention_mask, past):
        """Only the keys/values of the inputs (the output head is skipped)."""
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        past_t = [(to(k), to(v)) for k, v in past] if past else None
        _, kv = self.model.hidden_states(to(input_ids), to(position_ids), to(attention_mask), past_t)
        return [(k.float().cpu().numpy(), v.float().cpu().numpy()) for k, v in kv]

    @torch.inference_mode()
    def __call__(self, input_ids, position_ids, attention_mask, past):
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        past_t = [(to(k), to(v)) for k, v in past] if past else None
        logits, kv = self.model(to(input_ids), to(position_ids), to(attention_mask), past_t)
        return logits.float().cpu().numpy(), [(k.float().cpu().numpy(), v.float().cpu().numpy()) for k, v in kv]
