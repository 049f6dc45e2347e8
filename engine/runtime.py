"""The onnxruntime step function: a bundle's graph behind engine.decode's StepFunction.

`open_step(bundle)` picks an execution provider and a variant, creates the
session, checks its inputs/outputs against engine.contract and returns an
`OrtStep`, which the decode loop calls like the torch `TorchStep`.

Device "auto": the CUDA provider when onnxruntime offers it *and* a session
really runs on it (onnxruntime-gpu lists CUDA even when the CUDA libraries are
missing, then silently falls back), with the fp16 variant; otherwise the CPU
provider with the int8 variant.

Two ways to feed the session:

- `OrtStep` (the CPU default): numpy arrays through `session.run`, the KV cache
  in numpy (engine.decode.KVCache). On the CPU this is the fastest.
- `IoBindingStep` (the CUDA default): IO binding. The KV cache lives on the
  session's device (engine.device_kv.DeviceKVCache, updated there by the tiny
  graphs of engine.kv_graphs); per step only input_ids, position_ids and the
  attention mask go up and only the logits come down. The same code runs on the
  CPU provider (device "cpu" OrtValues), which is how the tests check it decodes
  token for token like OrtStep: `io_binding=True` or SEED_LSP_IO_BINDING=1.
  Not yet run on a GPU: the CUDA path is written to onnxruntime's documented
  IO-binding API and tested only through the CPU provider.

numpy, onnxruntime and the standard library only: never torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort

from engine.bundle import Bundle, BundleError, bundle_error, load_bundle
from engine.contract import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, TensorSpec, expected_io, past_key_name, past_value_name
from engine.device_kv import DeviceKVCache, DeviceTensor, KvOps

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")

# Variant preference per provider; fp32 is the fallback every bundle can have.
PREFERRED_VARIANTS = {CUDA: ("fp16", "fp32"), CPU: ("int8", "fp32")}

ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(float16)": "float16"}

# "1"/"0" forces the IO-binding step on/off (open_step's io_binding=None); unset: on for CUDA only.
IO_BINDING_ENV = "SEED_LSP_IO_BINDING"
ORT_DEVICE = {CUDA: "cuda", CPU: "cpu"}  # where IO binding keeps the cache, per provider

# onnxruntime log severities: 2 warning (its default), 3 error, 4 fatal.
LOG_ERRORS_ONLY, LOG_FATAL_ONLY, ORT_DEFAULT_SEVERITY = 3, 4, 2


class DeviceError(RuntimeError):
    """The requested device cannot be used (e.g. device="cuda" without a working CUDA provider)."""


class VariantUnsupported(BundleError):
    """The variant's graph is fine but this execution provider has no kernel for one of its ops."""


class OrtStep:
    """StepFunction over an onnxruntime session (see engine.decode.StepFunction)."""

    def __init__(self, session: ort.InferenceSession, bundle: Bundle, variant: str):
        self.session = session
        self.variant = variant
        self.vocab_size = bundle.vocab_size
        self.n_layers, self.n_kv_heads, self.head_dim = bundle.n_layers, bundle.n_kv_heads, bundle.head_dim
        self.output_names = [spec.name for spec in expected_io(bundle.n_layers)[1]]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def empty_past(self, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        empty = np.zeros((batch, self.n_kv_heads, 0, self.head_dim), dtype=np.float32)
        return [(empty, empty)] * self.n_layers

    def feeds(self, input_ids, position_ids, attention_mask, past) -> dict[str, np.ndarray]:
        batch = np.shape(input_ids)[0]
        past = past if len(past) else self.empty_past(batch)
        if len(past) != self.n_layers:
            raise ValueError(f"past has {len(past)} layers, the model has {self.n_layers}")
        feeds = {
            INPUT_IDS: np.ascontiguousarray(input_ids, dtype=np.int64),
            POSITION_IDS: np.ascontiguousarray(position_ids, dtype=np.int64),
            ATTENTION_MASK: np.ascontiguousarray(attention_mask, dtype=np.bool_),
        }
        for layer, (key, value) in enumerate(past):
            # The engine's cache hands out strided views; onnxruntime needs contiguous buffers.
            feeds[past_key_name(layer)] = np.ascontiguousarray(key, dtype=np.float32)
            feeds[past_value_name(layer)] = np.ascontiguousarray(value, dtype=np.float32)
        return feeds

    def keys_values(self, input_ids, position_ids, attention_mask, past):
        """Only the keys/values (no logits): onnxruntime then skips the output head.

        A prefill needs logits for its last position only; the head over every
        context position is about a third of the prefill's work.
        """
        names = self.output_names[1:]
        outputs = self.session.run(names, self.feeds(input_ids, position_ids, attention_mask, past))
        return [(outputs[2 * layer], outputs[2 * layer + 1]) for layer in range(self.n_layers)]

    def __call__(self, input_ids, position_ids, attention_mask, past):
        """logits float32 [b, q, vocab] and per layer (key, value) float32 [b, kv_heads, q, head_dim]."""
        outputs = self.session.run(self.output_names, self.feeds(input_ids, position_ids, attention_mask, past))
        new_kv = [(outputs[1 + 2 * layer], outputs[2 + 2 * layer]) for layer in range(self.n_layers)]
        return outputs[0], new_kv


class IoBindingStep(OrtStep):
    """OrtStep through IO binding: the KV cache stays on the session's device between steps.

    decode.py asks new_cache() for its caches, so past arrives as DeviceTensors bound
    in place; the new keys/values stay on the device (DeviceTensors for the cache's
    append) and the logits come back as numpy. A numpy past (e.g. export.verify's
    direct calls) is uploaded like session.run would.
    """

    def __init__(self, session: ort.InferenceSession, bundle: Bundle, variant: str, threads: int = 0):
        super().__init__(session, bundle, variant)
        self.device = ORT_DEVICE[self.provider]
        self.kv_ops = KvOps(2 * self.n_layers, self.device, session.get_providers(), threads)

    def new_cache(self, rows: int, capacity: int) -> DeviceKVCache:
        return DeviceKVCache(rows, capacity, self.kv_ops)

    def keys_values(self, input_ids, position_ids, attention_mask, past):
        """Only the keys/values, left on the device (the output head is skipped, as in OrtStep)."""
        return self.run_bound(input_ids, position_ids, attention_mask, past, want_logits=False)[1]

    def __call__(self, input_ids, position_ids, attention_mask, past):
        """logits float32 numpy [b, q, vocab] and per layer (key, value) DeviceTensors [b, kv_heads, q, head_dim]."""
        return self.run_bound(input_ids, position_ids, attention_mask, past, want_logits=True)

    def run_bound(self, input_ids, position_ids, attention_mask, past, want_logits: bool):
        binding = self.session.io_binding()
        self.bind_inputs(binding, input_ids, position_ids, attention_mask, past)
        names = self.output_names if want_logits else self.output_names[1:]
        for name in names:
            # Logits are read on the host every step; keys/values only by the next graph run.
            binding.bind_output(name, "cpu" if name == LOGITS else self.device, 0)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy() if want_logits else None
        kv = [DeviceTensor(value) for value in outputs[1 if want_logits else 0:]]
        return logits, list(zip(kv[0::2], kv[1::2]))

    def bind_inputs(self, binding, input_ids, position_ids, attention_mask, past) -> None:
        # Host arrays: onnxruntime copies them to the device inside the run, as session.run does.
        binding.bind_cpu_input(INPUT_IDS, np.ascontiguousarray(input_ids, dtype=np.int64))
        binding.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int64))
        binding.bind_cpu_input(ATTENTION_MASK, np.ascontiguousarray(attention_mask, dtype=np.bool_))
        past = past if len(past) else self.empty_past(np.shape(input_ids)[0])
        if len(past) != self.n_layers:
            raise ValueError(f"past has {len(past)} layers, the model has {self.n_layers}")
        for layer, (key, value) in enumerate(past):
            for name, tensor in ((past_key_name(layer), key), (past_value_name(layer), value)):
                if isinstance(tensor, DeviceTensor):
                    binding.bind_ortvalue_input(name, tensor.value)  # in place: no copy
                else:
                    binding.bind_cpu_input(name, np.ascontiguousarray(tensor, dtype=np.float32))


def use_io_binding(io_binding: Optional[bool], provider: str) -> bool:
    """io_binding if given, else SEED_LSP_IO_BINDING ("1"/"0"), else on for CUDA only."""
    if io_binding is not None:
        return bool(io_binding)
    forced = os.environ.get(IO_BINDING_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{IO_BINDING_ENV} must be 0 or 1, got {forced!r}")
    # On the CPU numpy arrays are already where the model runs, and session.run is faster.
    return provider == CUDA


def session_options(threads: int, severity: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per physical core)
    options.log_severity_level = severity
    return options


def create_session(path: Path, bundle: Bundle, providers: list[str], threads: int, severity: int = LOG_ERRORS_ONLY) -> ort.InferenceSession:
    """An InferenceSession, or a one-line BundleError naming the file (never a raw ORT traceback)."""
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, severity), providers=providers)
    except Exception as exc:  # onnxruntime's pybind errors share no useful base class
        reason = first_line(exc)
        if type(exc).__name__ == "NotImplemented":
            raise VariantUnsupported(f"bundle {bundle.root}: {path.name}: cannot run on {providers[0]} ({reason})") from None
        raise bundle_error(bundle.root, path.name, f"onnxruntime cannot load the model ({reason})") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def cuda_session(path: Path, bundle: Bundle, threads: int) -> Optional[ort.InferenceSession]:
    """A session that really runs on CUDA, or None; failed attempts stay quiet."""
    if CUDA not in ort.get_available_providers():
        return None
    # A missing CUDA library is reported through the default logger, then onnxruntime falls
    # back to CPU: silence the probe, then restore onnxruntime's default severity.
    ort.set_default_logger_severity(LOG_FATAL_ONLY)
    try:
        session = create_session(path, bundle, [CUDA, CPU], threads, LOG_FATAL_ONLY)
    except VariantUnsupported:
        return None
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
    return session if session.get_providers()[0] == CUDA else None


def choose_variant(bundle: Bundle, provider: str, variant: Optional[str]) -> str:
    if variant is not None:
        bundle.variant_path(variant)  # BundleError if the bundle lacks it
        return variant
    for candidate in PREFERRED_VARIANTS[provider]:
        if candidate in bundle.variants:
            return candidate
    return sorted(bundle.variants)[0]


def check_io(session: ort.InferenceSession, bundle: Bundle, path: Path) -> None:
    """Names, ranks, element types (and fixed sizes) of the session's I/O against the contract."""
    expected_inputs, expected_outputs = expected_io(bundle.n_layers)
    for kind, specs, actual in (("input", expected_inputs, session.get_inputs()), ("output", expected_outputs, session.get_outputs())):
        by_name = {arg.name: arg for arg in actual}
        for spec in specs:
            if spec.name not in by_name:
                raise bundle_error(bundle.root, path.name, f"graph has no {kind} {spec.name!r} (contract mismatch)")
            check_tensor(bundle, path, kind, spec, by_name[spec.name])
        extra = sorted(set(by_name) - {spec.name for spec in specs})
        if extra:
            raise bundle_error(bundle.root, path.name, f"graph has unexpected {kind} {extra[0]!r} (contract mismatch)")


def fixed_sizes(spec: TensorSpec, bundle: Bundle) -> dict[int, int]:
    """Axes whose size bundle.json fixes: vocab for logits, heads and head_dim for the cache."""
    if spec.name == LOGITS:
        return {2: bundle.vocab_size}
    if spec.rank == 4 and spec.name != ATTENTION_MASK:
        return {1: bundle.n_kv_heads, 3: bundle.head_dim}
    return {}


def check_tensor(bundle: Bundle, path: Path, kind: str, spec: TensorSpec, arg) -> None:
    dtype = ORT_DTYPES.get(arg.type, arg.type)
    if dtype != spec.dtype:
        raise bundle_error(bundle.root, path.name, f"{kind} {spec.name} has type {dtype}, contract says {spec.dtype}")
    if len(arg.shape) != spec.rank:
        raise bundle_error(bundle.root, path.name, f"{kind} {spec.name} has rank {len(arg.shape)}, contract says {spec.rank}")
    for axis, size in fixed_sizes(spec, bundle).items():
        if isinstance(arg.shape[axis], int) and arg.shape[axis] != size:
            raise bundle_error(bundle.root, path.name, f"{kind} {spec.name} has size {arg.shape[axis]} on axis {axis}, bundle.json says {size}")


def open_step(bundle: Bundle | str | Path, device: str = "auto", variant: Optional[str] = None, threads: int = 0,
              io_binding: Optional[bool] = None) -> OrtStep:
    """The step function for `bundle` on `device` ("auto", "cpu", "cuda"); variant None = the device's default.

    io_binding: True = IoBindingStep (the cache on the device), False = OrtStep (numpy),
    None = use_io_binding's default (CUDA yes, CPU no; SEED_LSP_IO_BINDING overrides).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    session = None
    if device in ("auto", "cuda"):
        chosen = choose_variant(bundle, CUDA, variant)
        session = cuda_session(bundle.variant_path(chosen), bundle, threads)
        if session is None and device == "cuda":
            raise DeviceError("device cuda: onnxruntime has no working CUDAExecutionProvider (install onnxruntime-gpu and the CUDA libraries)")
    if session is None:
        chosen = choose_variant(bundle, CPU, variant)
        session = create_session(bundle.variant_path(chosen), bundle, [CPU], threads)
    check_io(session, bundle, bundle.variant_path(chosen))
    if use_io_binding(io_binding, session.get_providers()[0]):
        return IoBindingStep(session, bundle, chosen, threads)
    return OrtStep(session, bundle, chosen)
