"""The IO-binding step (engine.runtime.IoBindingStep, engine.device_kv) against the numpy step.

There is no GPU here, so the device-cache path runs on the CPU provider with
"cpu" OrtValues: the same code a CUDA session runs, only the device name differs.
Every decode must equal OrtStep's (numpy cache) token for token and confidence
for confidence (same kernels, same inputs, zeros in the unused cache columns):
batches of rows with different fills, finished rows leaving the batch, the
prefix cache, token healing, cancellation. The random tiny model repeats itself
in greedy mode, so sampled decodes (seeded) are compared too: they depend on
every probability. Both ways of updating the device cache are covered: in place
(the default when onnxruntime's ScatterND writes into its bound input) and the
double-buffered fallback. A deliberately shifted cache write must break the
equality (test_a_misplaced_cache_write_is_detected), so these comparisons can fail.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine import device_kv, kv_graphs
from engine.decode import DecodeCancelled, DecodeConfig, KVCache, build_attention_mask
from engine.device_kv import DeviceKVCache, DeviceTensor, KvOps
from engine.engine import Engine, Job
from engine.jobs import Budget
from engine.runtime import IO_BINDING_ENV, IoBindingStep, OrtStep, open_step
from engine.tokenizer import TextCodec
from tiny_bundle import tiny_bundle, tiny_fp32_bundle

SOURCE = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text()
CURSORS = (SOURCE.index("def raw_decode") + 200, 2000, 4000)
BLOCK = DecodeConfig(block_size=4, tau=0.5, max_tokens=12, mode="block")
SAMPLED = DecodeConfig(block_size=4, tau=0.7, max_tokens=12, mode="block", temperature=1.5)
AR = DecodeConfig(block_size=1, max_tokens=8, mode="block")
LINE = DecodeConfig(block_size=8, tau=0.9, max_tokens=16, mode="line", temperature=1.0)


@pytest.fixture(scope="module")
def codec() -> TextCodec:
    return TextCodec.from_file(tiny_fp32_bundle() / "tokenizer.json")


def make_engine(codec, io_binding: bool, bundle=None, variant="fp32") -> Engine:
    step = open_step(bundle or tiny_fp32_bundle(), device="cpu", variant=variant, threads=1, io_binding=io_binding)
    return Engine(step, codec, budget=Budget(256, 96))


def outcome(results) -> list:
    """Everything a decode decides, per job: tokens, confidences, stop reasons and the costs."""
    out = []
    for r in results:
        s = r.stats
        out.append(([(c.tokens, c.confidences, c.stop_reason, c.text, c.healed) for c in r.completions],
                    (s.context_tokens, s.prefill_tokens, s.cached_tokens, s.healed_tokens, s.healing_passes,
                     s.forward_passes, s.tokens)))
    return out


def both(codec, run, **kw):
    """run(engine) on a numpy-cache engine and on an IO-binding engine; both outcomes."""
    numpy_engine, bound_engine = make_engine(codec, False, **kw), make_engine(codec, True, **kw)
    assert isinstance(bound_engine.step, IoBindingStep) and not isinstance(numpy_engine.step, IoBindingStep)
    return run(numpy_engine), run(bound_engine)


# --- the graphs and the cache ------------------------------------------------------------------


@pytest.mark.parametrize("graph", [kv_graphs.scatter_graph, kv_graphs.take_rows_graph, kv_graphs.zeros_graph])
def test_hand_written_graphs_are_valid_onnx(graph):
    model = onnx.load_from_string(graph(4))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10 and model.opset_import[0].version == kv_graphs.OPSET
    assert [o.name for o in model.graph.output] == kv_graphs.output_names(4)


def device_kv_from(kv) -> list:
    return [(DeviceTensor(ort.OrtValue.ortvalue_from_numpy(k)), DeviceTensor(ort.OrtValue.ortvalue_from_numpy(v)))
            for k, v in kv]


def random_kv(rng, rows, q, layers=2, heads=2, head_dim=3):
    return [tuple(rng.standard_normal((rows, heads, q, head_dim)).astype(np.float32) for _ in "kv")
            for _ in range(layers)]


def assert_same_cache(device: DeviceKVCache, reference: KVCache):
    np.testing.assert_array_equal(device.lengths, reference.lengths)
    assert (device.layers is None) == (reference.layers is None)
    for (dk, dv), (k, v) in zip(device.to_numpy(), reference.layers or []):
        np.testing.assert_array_equal(dk, k)
        np.testing.assert_array_equal(dv, v)


def test_scatter_in_place_is_detected_on_the_cpu():
    """onnxruntime's ScatterND skips its copy when the output buffer is the input (MayInplace)."""
    assert KvOps(4, "cpu", ["CPUExecutionProvider"], threads=1).in_place is True


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "double-buffered"])
def test_device_cache_follows_the_numpy_cache_operation_for_operation(in_place):
    rng = np.random.default_rng(0)
    ops = KvOps(4, "cpu", ["CPUExecutionProvider"], threads=1, in_place=in_place)
    device, reference = DeviceKVCache(3, 12, ops), KVCache(3, 12)
    for counts, q in (([2, 0, 3], 4), ([1, 1, 1], 1), ([0, 0, 0], 2), ([4, 2, 0], 5)):
        kv = random_kv(rng, 3, q)
        device.append(device_kv_from(kv), counts)
        reference.append(kv, counts)
        assert_same_cache(device, reference)
    assert list(reference.lengths) == [7, 3, 4]
    source_device, source = DeviceKVCache(1, 9, ops), KVCache(1, 9)
    kv = random_kv(rng, 1, 6)
    source_device.append(device_kv_from(kv), [6])
    source.append(kv, [6])
    device.copy_row_from(1, source_device, 0, 5)
    reference.copy_row_from(1, source, 0, 5)
    assert_same_cache(device, reference)
    device.keep_rows([2, 0])
    reference.keep_rows([2, 0])
    assert_same_cache(device, reference)
    kv = random_kv(rng, 2, 3)
    device.append(device_kv_from(kv), [3, 1])  # after keep_rows: the spare buffer has the new shape
    reference.append(kv, [3, 1])
    assert_same_cache(device, reference)


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "double-buffered"])
def test_device_cache_refuses_an_overflow_before_writing_anything(in_place):
    rng = np.random.default_rng(1)
    device = DeviceKVCache(2, 4, KvOps(4, "cpu", ["CPUExecutionProvider"], threads=1, in_place=in_place))
    device.append(device_kv_from(random_kv(rng, 2, 3)), [3, 1])
    before = device.to_numpy()
    with pytest.raises(RuntimeError, match="overflow"):
        device.append(device_kv_from(random_kv(rng, 2, 2)), [2, 1])  # row 1 fits, row 0 does not
    assert list(device.lengths) == [3, 1]
    for (k, v), (k0, v0) in zip(device.to_numpy(), before):
        np.testing.assert_array_equal(k, k0)
        np.testing.assert_array_equal(v, v0)


@pytest.mark.parametrize("in_place, buffers", [(True, 1), (False, 2)])
def test_device_cache_counts_the_memory_it_holds(in_place, buffers):
    rng = np.random.default_rng(2)
    ops = KvOps(4, "cpu", ["CPUExecutionProvider"], in_place=in_place)
    device, reference = DeviceKVCache(1, 8, ops), KVCache(1, 8)
    kv = random_kv(rng, 1, 2)
    device.append(device_kv_from(kv), [2])
    reference.append(kv, [2])
    assert device.nbytes == buffers * reference.nbytes > 0


# --- choosing the step -------------------------------------------------------------------------


def test_cpu_default_is_the_numpy_step_and_io_binding_can_be_forced(monkeypatch):
    monkeypatch.delenv(IO_BINDING_ENV, raising=False)
    plain = open_step(tiny_fp32_bundle(), device="cpu", threads=1)
    assert type(plain) is OrtStep and not hasattr(plain, "new_cache")
    forced = open_step(tiny_fp32_bundle(), device="cpu", threads=1, io_binding=True)
    assert isinstance(forced, IoBindingStep) and forced.device == "cpu"
    assert forced.provider == "CPUExecutionProvider"
    monkeypatch.setenv(IO_BINDING_ENV, "1")
    assert isinstance(open_step(tiny_fp32_bundle(), device="cpu", threads=1), IoBindingStep)
    assert type(open_step(tiny_fp32_bundle(), device="cpu", threads=1, io_binding=False)) is OrtStep
    monkeypatch.setenv(IO_BINDING_ENV, "yes")
    with pytest.raises(ValueError, match=IO_BINDING_ENV):
        open_step(tiny_fp32_bundle(), device="cpu", threads=1)


def test_engine_from_bundle_reports_io_binding(monkeypatch):
    monkeypatch.delenv(IO_BINDING_ENV, raising=False)
    assert Engine.from_bundle(tiny_fp32_bundle(), device="cpu", threads=1).info["io_binding"] is False
    engine = Engine.from_bundle(tiny_fp32_bundle(), device="cpu", threads=1, io_binding=True)
    assert engine.info["io_binding"] is True and engine.info["provider"] == "CPUExecutionProvider"


def test_a_numpy_past_is_accepted_and_gives_the_same_outputs():
    """export.verify calls the step directly with numpy arrays: same logits, same keys/values."""
    plain = open_step(tiny_fp32_bundle(), device="cpu", threads=1, io_binding=False)
    bound = open_step(tiny_fp32_bundle(), device="cpu", threads=1, io_binding=True)
    ids = np.arange(10, 22, dtype=np.int64)[None]
    _, past = plain(ids[:, :8], np.arange(8)[None], build_attention_mask(0, 8, 0), [])
    args = (ids[:, 8:], np.arange(8, 12)[None], build_attention_mask(8, 1, 3), past)
    logits, kv = plain(*args)
    bound_logits, bound_kv = bound(*args)
    np.testing.assert_array_equal(bound_logits, logits)
    for (k, v), (bk, bv) in zip(kv, bound_kv):
        assert isinstance(bk, DeviceTensor) and bk.shape == k.shape
        np.testing.assert_array_equal(bk.numpy(), k)
        np.testing.assert_array_equal(bv.numpy(), v)


# --- decodes through the engine ----------------------------------------------------------------


@pytest.mark.parametrize("config", [BLOCK, SAMPLED, AR, LINE], ids=["block", "sampled", "ar", "line"])
def test_batched_jobs_of_different_lengths_decode_identically(codec, config):
    """Three contexts of different lengths and 1-3 candidates each, in one batch."""
    jobs = [Job(SOURCE[:c], SOURCE[c:], config, n=n, seed=c) for c, n in zip(CURSORS, (1, 3, 2))]
    plain, bound = both(codec, lambda engine: outcome(engine.complete(jobs)))
    assert bound == plain
    assert sum(job[1][6] for job in plain) > 0


def test_double_buffering_decodes_identically(codec):
    """The fallback when a build of onnxruntime would not scatter in place."""
    jobs = [Job(SOURCE[:c], SOURCE[c:], SAMPLED, n=2, seed=c) for c in CURSORS]

    def run(engine):
        if isinstance(engine.step, IoBindingStep):
            engine.step.kv_ops.in_place = False
        return outcome(engine.complete(jobs))

    plain, bound = both(codec, run)
    assert bound == plain


def test_finished_rows_leave_the_device_batch(codec, monkeypatch):
    kept = []
    original = DeviceKVCache.keep_rows
    monkeypatch.setattr(DeviceKVCache, "keep_rows", lambda self, rows: (kept.append(list(rows)), original(self, rows)))
    jobs = [Job(SOURCE[:c], SOURCE[c:], DecodeConfig(block_size=4, tau=0.5, max_tokens=m, mode="infill"), n=2)
            for c, m in zip(CURSORS, (4, 9, 14))]
    plain, bound = both(codec, lambda engine: outcome(engine.complete(jobs)))
    assert bound == plain
    assert kept, "rows with fewer tokens to write finished first and were dropped from the device cache"


def typing_session(engine: Engine) -> list:
    """A user typing, deleting and moving the cursor in one document: the prefix cache at work."""
    start = CURSORS[0]
    steps = [SOURCE[:start], SOURCE[:start] + "x", SOURCE[:start] + "x = sel", SOURCE[: start - 30],
             SOURCE[: start - 30] + "\n        "]
    results = [engine.complete(Job(prefix, SOURCE[start:], SAMPLED, seed=7, doc_id="doc"))[0] for prefix in steps]
    parked = engine.prefix_cache.take("doc")
    cache = parked.cache.to_numpy() if isinstance(parked.cache, DeviceKVCache) else parked.cache.layers
    return [outcome(results), parked.ids.tolist(), [(k[:, :, : len(parked.ids)], v[:, :, : len(parked.ids)])
                                                     for k, v in cache]]


def test_prefix_cache_reuse_and_healing_decode_identically(codec):
    plain, bound = both(codec, typing_session)
    assert bound[:2] == plain[:2]
    for (k, v), (bk, bv) in zip(plain[2], bound[2]):  # the parked context's keys/values, bit for bit
        np.testing.assert_array_equal(bk, k)
        np.testing.assert_array_equal(bv, v)
    stats = [job[1] for job in plain[0]]
    assert all(s[2] > 0 for s in stats[1:]), "every request after the first reuses cached keys/values"
    assert any(s[3] > 0 for s in stats), "some cursor was healed"


def cancelled_then_resumed(engine: Engine) -> list:
    calls = []

    def cancel_at_fifth_check():
        calls.append(1)
        return len(calls) >= 5

    job = Job(SOURCE[: CURSORS[1]], SOURCE[CURSORS[1]:], SAMPLED, n=2, seed=3, doc_id="doc")
    with pytest.raises(DecodeCancelled):
        engine.complete(job, should_cancel=cancel_at_fifth_check)
    again = engine.complete(Job(job.prefix + "y", job.suffix, SAMPLED, n=2, seed=3, doc_id="doc"))
    return [len(calls), outcome(again)]


def test_cancellation_stops_at_the_same_check_and_the_next_request_is_identical(codec):
    plain, bound = both(codec, cancelled_then_resumed)
    assert bound == plain and plain[0] == 5


def test_int8_variant_decodes_identically(codec):
    jobs = [Job(SOURCE[:c], SOURCE[c:], SAMPLED, n=2, seed=c) for c in CURSORS[:2]]
    plain, bound = both(codec, lambda engine: outcome(engine.complete(jobs)), bundle=tiny_bundle(), variant="int8")
    assert bound == plain


def test_a_misplaced_cache_write_is_detected(codec, monkeypatch):
    """The equality above is not vacuous: writing new positions one column early changes decodes."""
    jobs = [Job(SOURCE[:c], SOURCE[c:], SAMPLED, n=2, seed=c) for c in CURSORS]
    plain = outcome(make_engine(codec, False).complete(jobs))
    real = device_kv.slot_indices

    def early(rows, starts, counts, heads):  # over the last cached position; stays inside the buffer
        return real(rows, np.maximum(np.asarray(starts) - 1, 0), counts, heads)

    monkeypatch.setattr(device_kv, "slot_indices", early)
    broken = outcome(make_engine(codec, True).complete(jobs))
    assert broken != plain
