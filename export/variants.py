"""The reduced-precision variants of the fp32 step graph: int8 (CPU) and fp16 (CUDA).

Both are built with onnxruntime's own tools and keep the contract's float32
inputs/outputs, so the engine feeds every variant the same arrays:

- int8: `onnxruntime.quantization.quantize_dynamic`, QInt8 weights with
  per-channel scales, activations quantized on the fly (per tensor). The
  exporter writes the tied output head as MatMul(hidden, Transpose(embedding));
  quantize_dynamic only quantizes a MatMul whose weight is an initializer, so
  the transpose is folded into one first (the head is a third of the weights
  and the biggest matmul). The SwiGLU down projections stay fp32: their input,
  silu(gate) * up, has outliers that per-tensor activation quantization cannot
  represent (see INT8_DOWN_PROJECTIONS_FP32 for the numbers).
  onnxruntime's quantization pre-processing (symbolic shape inference) fails
  on the dynamo graph ("Incomplete symbolic shape inference") and is skipped;
  its reminder to run it is filtered out of the log.
- fp16: `onnxruntime.transformers.float16.convert_float_to_float16` with
  keep_io_types=True. RMSNorm's statistics (Pow -> ReduceMean -> Add eps ->
  Sqrt -> Reciprocal) stay fp32: squaring the residual stream overflows fp16
  (65504) as soon as one activation passes 256, and the 15M checkpoint already
  reaches 259. The converter casts every block-listed node's output back to
  fp16, even between two block-listed nodes, which would overflow all the same;
  those fp32 -> fp16 -> fp32 round trips are removed afterwards. The fp16
  variant is meant for the CUDA provider; onnxruntime 1.32's CPU provider
  happens to run it too (the export's verification uses that when there is no GPU).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from export.onnx_graph import cap_ir_version

# RMSNorm's x.pow(2).mean(-1) + eps, then rsqrt: kept in fp32 (see module docstring).
NORM_STATISTICS_CHAIN = ("Pow", "ReduceMean", "Add", "Sqrt", "Reciprocal")

# Measured on the 15M checkpoint, prefill of 5 stdlib snippets (mean |dlogit|, argmax
# agreement with torch): per-tensor weight scales 0.114 / 92.0 %, per-channel 0.110 / 92.6 %.
# Small but consistent, for 1 % of file size.
INT8_PER_CHANNEL = True
# 7-bit weights: without AVX512-VNNI/AMX, onnxruntime's u8 x s8 kernels sum pairs of
# products in saturating int16 (vpmaddubsw), and full-range weights overflow it. On an
# AVX2-only AMD EPYC a tiny model's int8 logits were off by 0.23 (a third of their
# range) with 8-bit weights; 7 bits avoid the overflow everywhere for half a bit of
# weight precision.
INT8_REDUCE_RANGE = True
# Quantizing one matmul group at a time (same measure): the down projections alone cause
# 0.100 of the 0.110 (the other groups 0.005-0.04 each). Keeping them fp32: 0.046 / 98.0 %,
# 27.4 MB instead of 20.3 MB, prefill 0.37 s instead of 0.32 s (fp32: 0.50 s).
INT8_DOWN_PROJECTIONS_FP32 = True


def fold_weight_transposes(model_proto: onnx.ModelProto) -> int:
    """Replace each Transpose of an initializer by a transposed initializer; returns how many.

    The original initializer stays (the embedding Gather still reads it).
    """
    graph = model_proto.graph
    initializers = {init.name: init for init in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "Transpose" or node.input[0] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        transposed = np.ascontiguousarray(np.transpose(weight, perm or None))
        graph.initializer.append(numpy_helper.from_array(transposed, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    return len(folded)


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs.

    convert_float_to_float16 appends the Cast nodes of kept float32 inputs at the
    end of the graph; onnxruntime copes, the ONNX checker (rightly) does not.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or a dangling input near node {pending[0].name}")
        for node in ready:
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        ordered += ready
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


@contextmanager
def without_preprocessing_reminder():
    """Drop quantize_dynamic's root-logger warning about pre-processing (see module docstring)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def swiglu_down_projections(graph: onnx.GraphProto) -> list[str]:
    """MatMuls fed by SwiGLU's product silu(gate) * up: a Mul with a MatMul (up) among its inputs.

    The output head also reads a Mul (RMSNorm's weight), but of a tensor and an initializer.
    """
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "MatMul" else None
        if source is not None and source.op_type == "Mul" and any(
            producers.get(name) is not None and producers[name].op_type == "MatMul" for name in source.input
        ):
            found.append(node.name)
    return found


def write_int8(fp32_path: str | Path, out_path: str | Path, per_channel: bool = INT8_PER_CHANNEL,
               keep_down_projections_fp32: bool = INT8_DOWN_PROJECTIONS_FP32) -> Path:
    """Dynamic int8 quantization of the weight matmuls and the embedding gather."""
    model_proto = onnx.load(str(fp32_path))
    fold_weight_transposes(model_proto)
    excluded = swiglu_down_projections(model_proto.graph) if keep_down_projections_fp32 else []
    with without_preprocessing_reminder():
        quantize_dynamic(model_proto, str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=INT8_REDUCE_RANGE,
                         nodes_to_exclude=excluded)
    return Path(out_path)


def consumers_of(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def norm_statistics_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes of every RMSNorm statistics chain (Pow ... Reciprocal)."""
    consumers = consumers_of(graph)
    names = []
    for node in graph.node:
        if node.op_type != NORM_STATISTICS_CHAIN[0]:
            continue
        chain = [node]
        for op_type in NORM_STATISTICS_CHAIN[1:]:
            following = [c for c in consumers.get(chain[-1].output[0], []) if c.op_type == op_type]
            if len(following) != 1:
                break
            chain.append(following[0])
        if len(chain) == len(NORM_STATISTICS_CHAIN):
            names += [n.name for n in chain]
    return names


def cast_target(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def remove_fp16_round_trips(graph: onnx.GraphProto, fp32_nodes: set[str]) -> int:
    """Feed fp32 consumers of an fp32 node's output directly, skipping Cast(fp16) -> Cast(fp32).

    Returns how many round trips were removed; Casts left without consumers are dropped.
    """
    producers = {out: node for node in graph.node for out in node.output}
    renamed = {}
    for node in graph.node:
        if cast_target(node) != onnx.TensorProto.FLOAT:
            continue
        to_fp16 = producers.get(node.input[0])
        if to_fp16 is None or cast_target(to_fp16) != onnx.TensorProto.FLOAT16:
            continue
        source = producers.get(to_fp16.input[0])
        if source is not None and source.name in fp32_nodes:
            renamed[node.output[0]] = to_fp16.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    remove_dead_casts(graph)
    return len(renamed)


def remove_dead_casts(graph: onnx.GraphProto) -> None:
    """Drop Cast nodes whose output nobody reads (repeatedly: a chain of casts dies together)."""
    graph_outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def write_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """fp16 weights and activations, float32 graph inputs/outputs, fp32 RMSNorm statistics."""
    model_proto = onnx.load(str(fp32_path))
    fp32_nodes = set(norm_statistics_nodes(model_proto.graph))
    fp16 = convert_float_to_float16(model_proto, keep_io_types=True, node_block_list=sorted(fp32_nodes),
                                    op_block_list=DEFAULT_OP_BLOCK_LIST)
    remove_fp16_round_trips(fp16.graph, fp32_nodes)
    cap_ir_version(fp16)
    sort_topologically(fp16.graph)
    onnx.save_model(fp16, str(out_path))
    onnx.checker.check_model(str(out_path))
    return Path(out_path)
