"""A KV cache that lives on the step's device (CUDA, or the CPU for tests), for the IO-binding path.

engine.decode.KVCache keeps keys/values as numpy arrays: on CUDA every step would
then copy the whole cache host -> device. `DeviceKVCache` has the same interface
(decode.py cannot tell them apart) but holds onnxruntime OrtValues on the device,
and does every update there with the tiny graphs of engine.kv_graphs:

- append (a step's clean keys/values at each row's fill offset) and copy_row_from
  (a prefilled context into a batch) run the scatter graph with its output bound
  to its input buffer: onnxruntime's ScatterND kernels (CPU and CUDA, marked
  MayInplace) then skip their copy of the whole tensor and write only the new
  slices, so an update costs the new positions, not the cache size (on the CPU
  0.02 ms instead of 3 ms for a 4-row, 1100-position buffer pair). That aliasing
  is not a documented onnxruntime contract, so KvOps checks it once on a tiny
  tensor at load and otherwise falls back to double buffering (scatter into a
  second buffer of the same shape, then swap);
- keep_rows (finished rows leave the batch) runs the gather graph;
- a fresh cache is zeros (the zeros graph), exactly like the numpy cache, so the
  two paths feed the model identical tensors.

Only small int64 index arrays go up per update; nothing comes down.
`DeviceTensor` wraps the step's new keys/values (OrtValues) with the `.shape`
decode.py checks. numpy and onnxruntime only.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnxruntime as ort

from engine import kv_graphs
from engine.decode import KV, KVCache

FLOAT32_BYTES = 4


class DeviceTensor:
    """An OrtValue (float32) on the device, with the numpy-like .shape and .nbytes decode.py reads."""

    __slots__ = ("value", "shape")

    def __init__(self, value: ort.OrtValue):
        self.value = value
        self.shape = tuple(value.shape())

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * FLOAT32_BYTES

    def numpy(self) -> np.ndarray:
        """A host copy (tests and debugging only: on CUDA this is a device -> host transfer)."""
        return self.value.numpy()


class KvOps:
    """The cache-editing graphs for 2 * n_layers tensors, as sessions on one device."""

    def __init__(self, n_tensors: int, device: str, providers: Sequence[str], threads: int = 0,
                 in_place: Optional[bool] = None):
        self.n = n_tensors
        self.device = device  # onnxruntime device type: "cuda" or "cpu"
        self.outputs = kv_graphs.output_names(n_tensors)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Nothing to optimize, and common-subexpression elimination must not merge the zeros nodes.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        make = lambda graph: ort.InferenceSession(graph, sess_options=options, providers=list(providers))  # noqa: E731
        self.scatter_session = make(kv_graphs.scatter_graph(n_tensors))
        self.take_rows_session = make(kv_graphs.take_rows_graph(n_tensors))
        self.zeros_session = make(kv_graphs.zeros_graph(n_tensors))
        # None: probe. True: the scatter updates its input buffer; False: double buffering.
        self.in_place = self.scatter_in_place_works() if in_place is None else in_place

    def upload(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def scatter_in_place_works(self) -> bool:
        """Scatter into a tiny tensor with the output bound to the input; True if that wrote in place."""
        dst = [self.upload(np.zeros((1, 1, 2, 1), np.float32)) for _ in range(self.n)]
        src = [self.upload(np.ones((1, 1, 1, 1), np.float32)) for _ in range(self.n)]
        try:
            self.scatter(dst, src, np.array([[0, 0, 0]]), np.array([[0, 0, 1]]), out=dst)
        except Exception:  # onnxruntime refused the aliasing: pybind errors share no useful base class
            return False
        return all(d.numpy().ravel().tolist() == [0.0, 1.0] for d in dst)

    def empty(self, shape: Sequence[int]) -> list[ort.OrtValue]:
        """n uninitialized device tensors (only as outputs that get fully written)."""
        return [ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device, 0) for _ in range(self.n)]

    def zeros(self, shape: Sequence[int]) -> list[ort.OrtValue]:
        binding = self.zeros_session.io_binding()
        binding.bind_cpu_input(kv_graphs.SHAPE, np.asarray(shape, dtype=np.int64))
        return self._run_to_device(self.zeros_session, binding)

    def take_rows(self, tensors: Sequence[ort.OrtValue], rows: np.ndarray) -> list[ort.OrtValue]:
        binding = self.take_rows_session.io_binding()
        for i, tensor in enumerate(tensors):
            binding.bind_ortvalue_input(f"x_{i}", tensor)
        binding.bind_cpu_input(kv_graphs.ROWS, np.ascontiguousarray(rows, dtype=np.int64))
        return self._run_to_device(self.take_rows_session, binding)

    def scatter(self, dst: Sequence[ort.OrtValue], src: Sequence[ort.OrtValue], src_index: np.ndarray,
                dst_index: np.ndarray, out: Sequence[ort.OrtValue]) -> None:
        """out_i = dst_i with the slices src_i[src_index] written at dst_index (out may be dst when in_place)."""
        binding = self.scatter_session.io_binding()
        for i in range(self.n):
            binding.bind_ortvalue_input(f"dst_{i}", dst[i])
            binding.bind_ortvalue_input(f"src_{i}", src[i])
            binding.bind_ortvalue_output(self.outputs[i], out[i])
        binding.bind_cpu_input(kv_graphs.SRC_INDEX, np.ascontiguousarray(src_index, dtype=np.int64))
        binding.bind_cpu_input(kv_graphs.DST_INDEX, np.ascontiguousarray(dst_index, dtype=np.int64))
        self.scatter_session.run_with_iobinding(binding)

    def _run_to_device(self, session: ort.InferenceSession, binding) -> list[ort.OrtValue]:
        for name in self.outputs:
            binding.bind_output(name, self.device, 0)  # onnxruntime allocates them on the device
        session.run_with_iobinding(binding)
        return binding.get_outputs()


def slot_indices(rows: Sequence[int], starts: Sequence[int], counts: Sequence[int], heads: int) -> np.ndarray:
    """int64 [N, 3] (row, head, position): counts[i] positions from starts[i] of rows[i], every head.

    The order (entry i, head, offset) is the same for any rows/starts, so a source and a
    destination index built from the same counts pair up slice by slice.
    """
    parts = []
    for row, start, count in zip(rows, starts, counts):
        head, position = np.meshgrid(np.arange(heads), np.arange(start, start + count), indexing="ij")
        parts.append(np.stack([np.full(head.size, row), head.ravel(), position.ravel()], axis=1))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 3), dtype=np.int64)


def _flat(layers: KV) -> list:
    return [tensor.value for pair in layers for tensor in pair]


def _pairs(values: Sequence[ort.OrtValue]) -> KV:
    tensors = [DeviceTensor(v) for v in values]
    return list(zip(tensors[0::2], tensors[1::2]))


class DeviceKVCache(KVCache):
    """engine.decode.KVCache with its buffers on the device; see the module docstring."""

    def __init__(self, rows: int, capacity: int, ops: KvOps):
        super().__init__(rows, capacity)
        self.ops = ops
        self.spare: Optional[KV] = None  # double buffering only: the scatter's output, swapped with layers

    @property
    def nbytes(self) -> int:
        """Device memory held, the spare buffer (double buffering) included."""
        return sum(k.nbytes + v.nbytes for k, v in (self.layers or []) + (self.spare or []))

    @property
    def heads(self) -> int:
        return self.layers[0][0].shape[1]

    def allocate_like(self, kv: KV) -> None:
        if self.layers is None:
            _, heads, _, head_dim = kv[0][0].shape
            self.layers = _pairs(self.ops.zeros((self.rows, heads, self.capacity, head_dim)))

    def append(self, kv: KV, counts: Sequence[int]) -> None:
        """Cache the first counts[r] input positions of row r of a step's kv, at the row's fill."""
        self.allocate_like(kv)
        if len(kv) != len(self.layers):
            raise ValueError(f"step returned {len(kv)} layers of kv, the cache has {len(self.layers)}")
        counts = np.asarray(counts, dtype=np.int64)
        ends = self.lengths + counts
        if (ends > self.capacity).any():
            r = int(np.argmax(ends > self.capacity))
            raise RuntimeError(f"KV cache overflow: {self.lengths[r]} + {counts[r]} > {self.capacity}")
        rows = np.arange(self.rows)
        src = slot_indices(rows, np.zeros(self.rows, np.int64), counts, self.heads)
        dst = slot_indices(rows, self.lengths, counts, self.heads)
        self._scatter(kv, src, dst)
        self.lengths = ends

    def copy_row_from(self, row: int, source: KVCache, source_row: int, length: int) -> None:
        """Copy the first `length` cached positions of source's row into this cache's row (on the device)."""
        if length == 0:
            return
        if not isinstance(source, DeviceKVCache):
            raise TypeError("a DeviceKVCache copies rows from another DeviceKVCache only")
        self.allocate_like(source.layers)
        src = slot_indices([source_row], [0], [length], self.heads)
        dst = slot_indices([row], [0], [length], self.heads)
        self._scatter(source.layers, src, dst)
        self.lengths[row] = length

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Drop the other rows (finished ones), so later steps do not compute for them."""
        rows = np.asarray(rows, dtype=np.int64)
        self.lengths = self.lengths[rows]
        if self.layers is not None:
            self.layers = _pairs(self.ops.take_rows(_flat(self.layers), rows))
            self.spare = None  # the old shape; the next update allocates one of the new shape

    def to_numpy(self) -> KV:
        """Host copies of the buffers (tests only)."""
        return [(k.numpy(), v.numpy()) for k, v in self.layers or []]

    def _scatter(self, source: KV, src_index: np.ndarray, dst_index: np.ndarray) -> None:
        if len(src_index) == 0:
            return  # nothing to write (e.g. a diffusion step with no clean input)
        if self.ops.in_place:
            self.ops.scatter(_flat(self.layers), _flat(source), src_index, dst_index, _flat(self.layers))
            return
        if self.spare is None:
            self.spare = _pairs(self.ops.empty(self.layers[0][0].shape))
        self.ops.scatter(_flat(self.layers), _flat(source), src_index, dst_index, _flat(self.spare))
        self.layers, self.spare = self.spare, self.layers
