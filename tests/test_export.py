"""Export to ONNX, the bundle on disk, and the onnxruntime step function.

One tiny random model (2 layers, grouped-query attention, the committed 12,288
token tokenizer) is exported once per session through the real `write_bundle`
path; the tests then hold onnxruntime to torch (prefill with an empty past,
steps with a past, padded batches, whole greedy decodes) and check that every
way of breaking a bundle ends in one clear BundleError line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine.bundle import MANIFEST, BundleError, default_bundle_path, file_sha256, load_bundle
from engine.contract import SPECIAL_TOKENS, expected_io
from engine.decode import DecodeConfig, build_attention_mask, decode
from engine.runtime import OrtStep, VariantUnsupported, open_step
from engine.tokenizer import TextCodec
from export.bundle_writer import ExportError, parse_variants, write_bundle
from export.variants import swiglu_down_projections
from export.verify import format_table, infill_jobs, verify_bundle
from model.checkpoint import save_checkpoint
from model.network import DiffusionLM, ModelConfig
from model.step import TorchStep

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "model" / "tokenizer.json"
CONFIG = ModelConfig(vocab_size=12_288, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, max_context=256)
SNIPPETS = REPO / "engine"  # real Python source for contexts and verification jobs


@pytest.fixture(scope="module")
def model() -> DiffusionLM:
    torch.manual_seed(0)
    return DiffusionLM(CONFIG).eval()


@pytest.fixture(scope="module")
def codec() -> TextCodec:
    return TextCodec.from_file(TOKENIZER)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, model) -> Path:
    root = tmp_path_factory.mktemp("export")
    save_checkpoint(root / "ckpt", model, TOKENIZER, {"tokens_total": 123, "stage": "diffusion", "step": 7})
    out = root / "bundle"
    write_bundle(root / "ckpt", out, ["fp32", "int8", "fp16"], verify_jobs=0, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def fp32(bundle_dir) -> OrtStep:
    return open_step(bundle_dir, device="cpu", variant="fp32", threads=1)


@pytest.fixture(scope="module")
def reference(model) -> TorchStep:
    return TorchStep(model)


def random_case(b: int, q: int, past_len: int, seed: int):
    """Random ids/positions, a random mask in which every row sees at least itself, random past."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CONFIG.vocab_size, (b, q))
    positions = past_len + np.arange(q)[None].repeat(b, 0)
    mask = rng.random((b, 1, q, past_len + q)) < 0.6
    mask[:, 0, np.arange(q), past_len + np.arange(q)] = True
    shape = (b, CONFIG.n_kv_heads, past_len, CONFIG.head_dim)
    past = [(rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)) for _ in range(CONFIG.n_layers)]
    return ids, positions, mask, past


def assert_same_outputs(actual, expected, atol=1e-4):
    (logits, kv), (ref_logits, ref_kv) = actual, expected
    assert logits.dtype == np.float32 and logits.shape == ref_logits.shape
    np.testing.assert_allclose(logits, ref_logits, atol=atol, rtol=0)
    assert len(kv) == len(ref_kv) == CONFIG.n_layers
    for (k, v), (rk, rv) in zip(kv, ref_kv):
        assert k.shape == rk.shape and v.shape == rv.shape
        np.testing.assert_allclose(k, rk, atol=atol, rtol=0)
        np.testing.assert_allclose(v, rv, atol=atol, rtol=0)


def contexts(codec: TextCodec, count: int) -> list[list[int]]:
    return [codec.spm_context(job.prefix[-300:], job.suffix[:100]) for job in infill_jobs(count, SNIPPETS, seed=1)]


# --- the graph file -------------------------------------------------------------------------------


def test_graph_file_follows_the_contract(bundle_dir):
    model_proto = onnx.load(str(bundle_dir / "model.onnx"))
    onnx.checker.check_model(model_proto, full_check=True)
    assert model_proto.ir_version <= 10
    assert all(op.version <= 21 for op in model_proto.opset_import if op.domain in ("", "ai.onnx"))
    inputs, outputs = expected_io(CONFIG.n_layers)
    assert [i.name for i in model_proto.graph.input] == [spec.name for spec in inputs]
    assert [o.name for o in model_proto.graph.output] == [spec.name for spec in outputs]
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model_proto.graph.initializer)
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(
        ["bundle.json", "model.onnx", "model.int8.onnx", "model.fp16.onnx", "tokenizer.json"])


@pytest.mark.parametrize("b,q,past_len", [(1, 1, 0), (1, 9, 0), (3, 4, 0), (1, 1, 1), (2, 5, 7), (3, 1, 12)])
def test_fp32_matches_torch_for_any_batch_query_and_past_length(fp32, reference, b, q, past_len):
    case = random_case(b, q, past_len, seed=b * 100 + q * 10 + past_len)
    assert_same_outputs(fp32(*case), reference(*case))


def test_empty_past_list_means_past_length_zero(fp32, reference):
    ids, positions, mask, past = random_case(2, 6, 0, seed=3)
    assert_same_outputs(fp32(ids, positions, mask, []), reference(ids, positions, mask, []))
    assert_same_outputs(fp32(ids, positions, mask, []), fp32(ids, positions, mask, past))


def test_non_contiguous_past_views_are_accepted(fp32, reference):
    ids, positions, mask, past = random_case(1, 3, 10, seed=4)
    wide = [(np.pad(k, ((0, 0), (0, 0), (0, 6), (0, 0))), np.pad(v, ((0, 0), (0, 0), (0, 6), (0, 0)))) for k, v in past]
    views = [(k[:, :, :10], v[:, :, :10]) for k, v in wide]
    assert not views[0][0].flags.c_contiguous
    assert_same_outputs(fp32(ids, positions, mask, views), reference(ids, positions, mask, past))


def test_real_prefill_block_step_and_padded_batch_match_torch(fp32, reference, codec):
    first, second = contexts(codec, 2)
    n = len(first)
    prefill = (np.array([first]), np.arange(n)[None], build_attention_mask(0, n, 0), [])
    assert_same_outputs(fp32(*prefill), reference(*prefill))
    # a block step: 3 clean rows and 8 masked rows over the cache of the rest
    past_len = n - 3
    _, past = reference(np.array([first[:past_len]]), np.arange(past_len)[None], build_attention_mask(0, past_len, 0), [])
    step_ids = np.array([first[past_len:] + [codec.mask] * 8])
    step = (step_ids, np.arange(past_len, past_len + 11)[None], build_attention_mask(past_len, 3, 8), past)
    assert_same_outputs(fp32(*step), reference(*step))
    # two rows of different length, right-padded; compare the real positions only
    width = max(len(first), len(second))
    ids = np.full((2, width), codec.pad)
    ids[0, :n], ids[1, : len(second)] = first, second
    valid = np.arange(width)[None] < np.array([[n], [len(second)]])
    mask = (np.tri(width, dtype=bool)[None] & valid[:, None]) | np.eye(width, dtype=bool)[None]
    batch = (ids, np.arange(width)[None].repeat(2, 0), mask[:, None], [])
    logits, _ = fp32(*batch)
    ref_logits, _ = reference(*batch)
    np.testing.assert_allclose(logits[valid], ref_logits[valid], atol=1e-4, rtol=0)


@pytest.mark.parametrize("block_size", [1, 8])
def test_greedy_decodes_are_identical(fp32, reference, codec, block_size):
    config = DecodeConfig(block_size=block_size, tau=0.9, max_tokens=12, mode="block")
    for context in contexts(codec, 3):
        kwargs = dict(mask_id=codec.mask, eos_id=codec.eos, banned_ids=codec.banned_ids)
        ours, theirs = decode(fp32, context, config, **kwargs), decode(reference, context, config, **kwargs)
        assert ours.tokens == theirs.tokens and len(ours.tokens) > 0


# --- variants -------------------------------------------------------------------------------------


def test_int8_runs_and_is_close(bundle_dir, reference):
    step = open_step(bundle_dir, device="cpu", threads=1)
    assert (step.variant, step.provider, step.vocab_size) == ("int8", "CPUExecutionProvider", CONFIG.vocab_size)
    case = random_case(2, 5, 4, seed=5)
    logits, kv = step(*case)
    ref_logits, _ = reference(*case)
    assert logits.dtype == np.float32 and kv[0][0].dtype == np.float32
    assert np.abs(logits - ref_logits).max() < 0.1 * np.abs(ref_logits).max()


def test_fp16_keeps_float32_io_and_is_close_where_it_runs(bundle_dir, reference):
    try:
        step = open_step(bundle_dir, device="cpu", variant="fp16", threads=1)
    except VariantUnsupported as exc:
        pytest.skip(f"fp16 needs CUDA here: {exc}")
    case = random_case(1, 6, 3, seed=6)
    logits, kv = step(*case)
    assert logits.dtype == np.float32 and kv[0][1].dtype == np.float32
    np.testing.assert_allclose(logits, reference(*case)[0], atol=2e-2, rtol=0)


def test_int8_keeps_the_down_projections_fp32(bundle_dir):
    graph = onnx.load(str(bundle_dir / "model.onnx")).graph
    down = swiglu_down_projections(graph)
    assert len(down) == CONFIG.n_layers
    int8_nodes = {n.name: n for n in onnx.load(str(bundle_dir / "model.int8.onnx")).graph.node}
    assert all(int8_nodes[name].op_type == "MatMul" for name in down)  # untouched, not MatMulInteger
    assert sum(n.op_type == "MatMulInteger" for n in int8_nodes.values()) == 6 * CONFIG.n_layers + 1  # + head


def test_fp16_norm_statistics_never_pass_through_fp16(bundle_dir):
    graph = onnx.load(str(bundle_dir / "model.fp16.onnx")).graph
    producers = {out: node for node in graph.node for out in node.output}
    means = [n for n in graph.node if n.op_type == "ReduceMean"]
    assert len(means) == 2 * CONFIG.n_layers + 1
    assert all(producers[n.input[0]].op_type == "Pow" for n in means)  # no Cast(fp16) in between


def test_unknown_variant_is_refused(bundle_dir):
    with pytest.raises(BundleError, match="no variant 'bf16'"):
        open_step(bundle_dir, device="cpu", variant="bf16")
    with pytest.raises(ExportError, match="unknown variant"):
        parse_variants("fp32,bf16")
    assert parse_variants("int8") == ["fp32", "int8"]


# --- the manifest ---------------------------------------------------------------------------------


def test_manifest_records_architecture_tokens_and_checksums(bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format"] == 1
    assert manifest["architecture"]["n_kv_heads"] == CONFIG.n_kv_heads
    assert manifest["special_tokens"] == {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    assert manifest["decode_defaults"] == {"block_size": 8, "tau": 0.9}
    assert manifest["context"] == {"max_context": 256, "trained_context": 512}  # 512: not recorded in the state
    assert manifest["variants"] == {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
    assert manifest["source"]["tokens_total"] == 123
    for name, digest in manifest["files"].items():
        assert file_sha256(bundle_dir / name) == digest
    assert set(manifest["files"]) == {p.name for p in bundle_dir.iterdir()} - {MANIFEST}
    bundle = load_bundle(bundle_dir)
    assert (bundle.n_layers, bundle.n_kv_heads, bundle.head_dim, bundle.vocab_size) == (2, 2, 12, 12_288)
    assert bundle.special_tokens["<|mask|>"] == 1 and bundle.block_size == 8


def test_verification_table_reports_every_variant(bundle_dir, model, codec):
    reports = verify_bundle(bundle_dir, model, codec, jobs=3, source_folder=SNIPPETS)
    by_variant = {r.variant: r for r in reports}
    assert set(by_variant) == {"fp32", "int8", "fp16"}
    fp32 = by_variant["fp32"]
    assert fp32.agreement == 1.0 and max(fp32.prefill, fp32.step, fp32.batch) < 1e-4
    assert by_variant["int8"].agreement is not None
    table = format_table(reports)
    assert "decode agreement" in table and "100 % of 3" in table


# --- broken bundles -------------------------------------------------------------------------------


@pytest.fixture
def broken(bundle_dir, tmp_path) -> Path:
    """A private copy of the bundle to break."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def refresh_checksum(folder: Path, name: str) -> None:
    edit_manifest(folder, lambda m: m["files"].__setitem__(name, file_sha256(folder / name)))


def expect_bundle_error(folder: Path, *fragments: str, variant: str | None = None) -> str:
    """load_bundle (and, with variant, open_step) fails with one line mentioning every fragment."""
    with pytest.raises(BundleError) as info:
        if variant is None:
            load_bundle(folder)
        else:
            open_step(folder, device="cpu", variant=variant)
    message = str(info.value)
    assert "\n" not in message and message.startswith("bundle ")
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_folder(tmp_path):
    expect_bundle_error(tmp_path / "nowhere", "not a folder")


def test_missing_manifest(broken):
    (broken / MANIFEST).unlink()
    expect_bundle_error(broken, "bundle.json: missing")


def test_invalid_json(broken):
    (broken / MANIFEST).write_text("{not json")
    expect_bundle_error(broken, "bundle.json: not valid JSON")


def test_missing_keys_and_wrong_format(broken):
    edit_manifest(broken, lambda m: m.pop("variants"))
    expect_bundle_error(broken, "missing keys: variants")
    edit_manifest(broken, lambda m: m.update(variants={}, format=2))
    expect_bundle_error(broken, "format 2 is not supported")


def test_missing_file(broken):
    (broken / "model.int8.onnx").unlink()
    expect_bundle_error(broken, "model.int8.onnx: missing")


def test_checksum_mismatch(broken):
    with open(broken / "model.int8.onnx", "ab") as f:
        f.write(b"\0")
    expect_bundle_error(broken, "model.int8.onnx: checksum mismatch (file changed or corrupt)")


def test_truncated_onnx_with_matching_checksum(broken):
    data = (broken / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(data[: len(data) // 2])
    refresh_checksum(broken, "model.onnx")
    load_bundle(broken)  # the manifest is consistent: only onnxruntime can tell
    expect_bundle_error(broken, "model.onnx: onnxruntime cannot load the model", variant="fp32")


def test_graph_with_a_renamed_input(broken):
    model_proto = onnx.load(str(broken / "model.onnx"))
    for value in model_proto.graph.input:
        if value.name == "input_ids":
            value.name = "tokens"
    for node in model_proto.graph.node:
        node.input[:] = ["tokens" if name == "input_ids" else name for name in node.input]
    onnx.save_model(model_proto, str(broken / "model.onnx"))
    refresh_checksum(broken, "model.onnx")
    expect_bundle_error(broken, "model.onnx", "'input_ids'", variant="fp32")


def test_path_leaving_the_folder(broken):
    edit_manifest(broken, lambda m: m["files"].__setitem__("../outside.onnx", "0" * 64))
    expect_bundle_error(broken, "../outside.onnx: path leaves the bundle folder")


def test_absolute_path(broken):
    edit_manifest(broken, lambda m: m["files"].__setitem__(str(broken / "model.onnx"), "0" * 64))
    expect_bundle_error(broken, "absolute")


def test_symlink_escaping_the_folder(broken, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.copyfile(broken / "tokenizer.json", outside)
    (broken / "tokenizer.json").unlink()
    (broken / "tokenizer.json").symlink_to(outside)
    expect_bundle_error(broken, "tokenizer.json: symlink points outside the bundle folder")


def test_wrong_special_token_ids(broken):
    edit_manifest(broken, lambda m: m["special_tokens"].update({"<|mask|>": 0, "<|pad|>": 1}))
    expect_bundle_error(broken, "bundle.json: special token <|pad|> has id 1, this engine needs 0")


def test_corrupt_tokenizer_with_matching_checksum(broken):
    (broken / "tokenizer.json").write_text('{"model": 3}')
    refresh_checksum(broken, "tokenizer.json")
    expect_bundle_error(broken, "tokenizer.json: tokenizer does not load")


def test_variant_without_checksum(broken):
    shutil.copyfile(broken / "model.onnx", broken / "extra.onnx")
    edit_manifest(broken, lambda m: m["variants"].__setitem__("extra", "extra.onnx"))
    expect_bundle_error(broken, "variant extra 'extra.onnx' is not listed under 'files'")


def test_default_bundle_absent_says_how_to_make_one():
    try:
        path = default_bundle_path()
    except BundleError as exc:
        assert "seed-lsp export" in str(exc)
    else:
        assert (path / MANIFEST).is_file()


def test_runtime_modules_do_not_import_torch():
    code = "import sys, engine.bundle, engine.runtime\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_cli_reports_a_missing_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seed_lsp", "export", str(tmp_path), "--out", str(tmp_path / "b")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "holds no checkpoint" in result.stderr and "Traceback" not in result.stderr
