"""Tiny ONNX graphs that edit a KV cache where it lives (GPU or CPU), written without the onnx package.

onnxruntime's Python API can copy whole tensors between host and device but has
no "write these positions of a device tensor" call, so the cache updates of the
IO-binding path (engine.device_kv) are themselves ONNX graphs, run by small
sessions on the step's device:

- `scatter_graph(n)`: out_i = ScatterND(dst_i, dst_index, GatherND(src_i, src_index))
  for n tensors at once; (row, head, position) index rows pick [head_dim] slices.
  Appending a step's new keys/values and copying a context row between caches
  are both this graph.
- `take_rows_graph(n)`: out_i = Gather(x_i, rows) on axis 0 (finished rows leave the batch).
- `zeros_graph(n)`: n float32 tensors of zeros of a given shape (a fresh cache:
  unused columns must be finite, and zeros keep it equal to the numpy cache).

The engine depends on numpy, onnxruntime and tokenizers only, and `onnx` is an
export-time dependency, so the few protobuf messages these graphs need are
encoded here by hand (tests check the bytes with onnx.checker).
"""

from __future__ import annotations

from typing import Iterable

IR_VERSION = 8  # DESIGN.md: IR <= 10 (onnxruntime-gpu 1.31 rejects newer)
OPSET = 13  # GatherND/ScatterND/Gather-13, ConstantOfShape-9
FLOAT, INT64 = 1, 7  # onnx TensorProto.DataType

# --- protobuf wire format (only what ModelProto needs here) ---------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


# --- onnx messages (field numbers from onnx.proto) ------------------------------------------


def _value_info(name: str, elem_type: int, rank: int) -> bytes:
    """ValueInfoProto: a tensor of known rank; every axis gets its own symbolic name so
    onnxruntime never assumes two inputs share a size."""
    dims = b"".join(_field_bytes(1, _field_bytes(2, f"{name}_{axis}")) for axis in range(rank))
    tensor_type = _field_int(1, elem_type) + _field_bytes(2, dims)
    return _field_bytes(1, name) + _field_bytes(2, _field_bytes(1, tensor_type))


def _node(op_type: str, inputs: Iterable[str], outputs: Iterable[str], name: str) -> bytes:
    body = b"".join(_field_bytes(1, i) for i in inputs) + b"".join(_field_bytes(2, o) for o in outputs)
    return body + _field_bytes(3, name) + _field_bytes(4, op_type)


def _model(name: str, nodes: list[bytes], inputs: list[bytes], outputs: list[bytes]) -> bytes:
    graph = b"".join(_field_bytes(1, n) for n in nodes) + _field_bytes(2, name)
    graph += b"".join(_field_bytes(11, i) for i in inputs) + b"".join(_field_bytes(12, o) for o in outputs)
    opset = _field_bytes(1, "") + _field_int(2, OPSET)
    return _field_int(1, IR_VERSION) + _field_bytes(2, "seed-diffusion-lsp") + _field_bytes(7, graph) + _field_bytes(8, opset)


# --- the graphs -----------------------------------------------------------------------------

SRC_INDEX, DST_INDEX, ROWS, SHAPE = "src_index", "dst_index", "rows", "shape"


def scatter_graph(n: int) -> bytes:
    """Inputs dst_0.., src_0.., src_index [N, 3], dst_index [N, 3]; outputs out_0.. (the new dst)."""
    nodes = []
    for i in range(n):
        nodes.append(_node("GatherND", [f"src_{i}", SRC_INDEX], [f"slices_{i}"], f"gather_{i}"))
        nodes.append(_node("ScatterND", [f"dst_{i}", DST_INDEX, f"slices_{i}"], [f"out_{i}"], f"scatter_{i}"))
    inputs = [_value_info(f"dst_{i}", FLOAT, 4) for i in range(n)] + [_value_info(f"src_{i}", FLOAT, 4) for i in range(n)]
    inputs += [_value_info(SRC_INDEX, INT64, 2), _value_info(DST_INDEX, INT64, 2)]
    return _model("kv_scatter", nodes, inputs, [_value_info(f"out_{i}", FLOAT, 4) for i in range(n)])


def take_rows_graph(n: int) -> bytes:
    """Inputs x_0.., rows [k]; outputs out_i = x_i[rows]."""
    nodes = [_node("Gather", [f"x_{i}", ROWS], [f"out_{i}"], f"take_{i}") for i in range(n)]
    inputs = [_value_info(f"x_{i}", FLOAT, 4) for i in range(n)] + [_value_info(ROWS, INT64, 1)]
    return _model("kv_take_rows", nodes, inputs, [_value_info(f"out_{i}", FLOAT, 4) for i in range(n)])


def zeros_graph(n: int) -> bytes:
    """Input shape [4]; outputs out_0.. float32 zeros of that shape (ConstantOfShape's default value)."""
    nodes = [_node("ConstantOfShape", [SHAPE], [f"out_{i}"], f"zeros_{i}") for i in range(n)]
    return _model("kv_zeros", nodes, [_value_info(SHAPE, INT64, 1)], [_value_info(f"out_{i}", FLOAT, 4) for i in range(n)])


def output_names(n: int) -> list[str]:
    return [f"out_{i}" for i in range(n)]
