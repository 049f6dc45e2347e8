"""The ONNX step graph: DiffusionLM with the flat inputs/outputs of the contract.

Exported with `torch.onnx.export(dynamo=True)` (the torch.export based exporter;
it handles the dynamic past length, including zero, without tracing tricks).
Batch, query length q and past length P are all dynamic; the graph runs with
P == 0 (the engine's prefill passes zero-length past arrays). The example inputs
use sizes >= 2 on purpose: torch.export specialises dimensions of size 0 and 1.

Output: one self-contained fp32 file (no external data; the models are far
below protobuf's 2 GB limit), ONNX IR version <= 10 (onnxruntime-gpu 1.31
rejects newer IR), checked with onnx.checker.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch.export import Dim

from engine.contract import ATTENTION_MASK, INPUT_IDS, expected_io
from model.network import DiffusionLM

# Opset 18 is the exporter's default and is allowed by IR 10 (IR 10 covers opsets up to 21).
OPSET = 18
MAX_IR_VERSION = 10

# Example sizes for tracing: none may be 0 or 1, or torch.export would specialise it.
EXAMPLE_BATCH, EXAMPLE_Q, EXAMPLE_PAST = 2, 3, 5

# Readable names for the dynamic dimensions of the graph's inputs and outputs.
BATCH, QUERY, PAST, PAST_PLUS_Q = "batch", "q", "past", "past_plus_q"


class StepGraph(torch.nn.Module):
    """DiffusionLM.forward with the past as flat tensors (key, value per layer) and flat outputs."""

    def __init__(self, model: DiffusionLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, attention_mask, past: list[torch.Tensor]):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, new_kvs = self.model(input_ids, position_ids, attention_mask, pairs)
        return (logits, *[t for kv in new_kvs for t in kv])


def example_inputs(model: DiffusionLM) -> tuple:
    cfg = model.cfg
    b, q, p = EXAMPLE_BATCH, EXAMPLE_Q, EXAMPLE_PAST
    input_ids = torch.zeros(b, q, dtype=torch.long)
    position_ids = torch.arange(p, p + q).repeat(b, 1)
    attention_mask = torch.ones(b, 1, q, p + q, dtype=torch.bool)
    past = [torch.zeros(b, cfg.n_kv_heads, p, cfg.head_dim) for _ in range(2 * cfg.n_layers)]
    return input_ids, position_ids, attention_mask, past


def dynamic_shapes(n_layers: int) -> tuple:
    """Every size but heads/head_dim/vocab is dynamic; the exporter infers mask width = P + q."""
    dyn = Dim.DYNAMIC
    tokens = {0: dyn, 1: dyn}
    return (tokens, tokens, {0: dyn, 2: dyn, 3: dyn}, [{0: dyn, 2: dyn} for _ in range(2 * n_layers)])


def contract_dim_names(model_proto: onnx.ModelProto) -> dict[str, str]:
    """The exporter's symbols (s10, s69, ...) mapped to the contract's dimension names."""
    layout = {INPUT_IDS: (BATCH, QUERY), ATTENTION_MASK: (BATCH, None, QUERY, PAST_PLUS_Q)}
    names: dict[str, str] = {}
    for value in model_proto.graph.input:
        wanted = layout.get(value.name, (BATCH, None, PAST, None))
        for dim, name in zip(value.type.tensor_type.shape.dim, wanted):
            if name and dim.dim_param:
                names.setdefault(dim.dim_param, name)
    return names


def rename_dims(model_proto: onnx.ModelProto) -> None:
    """Give the dynamic dimensions readable names everywhere they appear (graph I/O and value_info)."""
    names = contract_dim_names(model_proto)
    graph = model_proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def cap_ir_version(model_proto: onnx.ModelProto) -> None:
    """Write IR <= 10; the opsets used (<= 21) are all valid under IR 10."""
    if any(op.domain in ("", "ai.onnx") and op.version > 21 for op in model_proto.opset_import):
        raise ValueError("the graph uses an opset above 21, which ONNX IR 10 cannot express")
    model_proto.ir_version = min(model_proto.ir_version, MAX_IR_VERSION)


def trace_to_onnx(model: DiffusionLM) -> onnx.ModelProto:
    """Run the dynamo exporter on the flat wrapper and return the optimised ModelProto (model goes to eval mode)."""
    inputs, outputs = expected_io(model.cfg.n_layers)
    graph = StepGraph(model.float().eval()).eval()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # silences "torchvision is not installed" notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, example_inputs(model), dynamo=True, opset_version=OPSET, optimize=True,
                input_names=[t.name for t in inputs], output_names=[t.name for t in outputs],
                dynamic_shapes=dynamic_shapes(model.cfg.n_layers), verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    return program.model_proto


def strip_debug_metadata(model_proto: onnx.ModelProto) -> None:
    """Drop per-node stack traces and scopes: they hold local file paths and are noise in a shipped file."""
    for node in model_proto.graph.node:
        del node.metadata_props[:]


def export_onnx(model: DiffusionLM, path: str | Path) -> Path:
    """Write the fp32 step graph of `model` to `path` (one file) and check it."""
    path = Path(path)
    model_proto = trace_to_onnx(model)
    cap_ir_version(model_proto)
    rename_dims(model_proto)
    strip_debug_metadata(model_proto)
    onnx.save_model(model_proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
