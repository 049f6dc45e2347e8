"""Token healing (engine/healing.py): which tokens are taken back, what the first
completion token may be, and the engine's completions after a healed cursor.

The tokenizer is the real one; the engine runs a tiny random model (the text it
writes is noise, but it must start with the healed tail and never repeat it).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.decode import DecodeConfig
from engine.engine import Engine, Job
from engine.healing import TokenHealer
from engine.jobs import Budget, build_context
from engine.tokenizer import TextCodec
from model.network import DiffusionLM, ModelConfig
from model.step import TorchStep

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text()


@pytest.fixture(scope="module")
def codec() -> TextCodec:
    return TextCodec.from_file(ROOT / "model" / "tokenizer.json")


@pytest.fixture(scope="module")
def healer(codec) -> TokenHealer:
    return TokenHealer(codec)


def plan_for(codec, healer, prefix: str):
    context = build_context(codec, prefix, "", Budget(256, 0))
    return context, healer.plan(context.ids, context.prefix_tokens)


def token_id(codec, text: str) -> int:
    ids = codec.encode(text)
    assert len(ids) == 1, f"{text!r} is not one token: {ids}"
    return ids[0]


@pytest.mark.parametrize("prefix, tail", [
    ("x = sel", " sel"),  # " " + "sel": the word is " self" in training text
    ("for i in ra", " ra"),
    ("def f():\n        ", "\n        "),  # the longest indentation token: nothing extends it
    ("return ", " "),
    ("print(", "("),  # "()" and "('" are tokens too
])
def test_plan_takes_back_the_tokens_the_cursor_may_be_inside(codec, healer, prefix, tail):
    context, plan = plan_for(codec, healer, prefix)
    assert plan.tail == tail
    kept = plan.context_ids[-1 - (context.prefix_tokens - plan.backed_off) : -1]
    assert codec.decode(kept) + tail == prefix
    assert plan.context_ids[-1] == codec.fim_middle and plan.context_ids[0] == codec.bos


def test_a_token_nothing_extends_is_not_taken_back(codec, healer):
    # Any token whose text no longer token starts with, and that does not end in whitespace.
    complete = next(t for t in healer.texts[100:] if t and not t[-1].isspace() and "\ufffd" not in t
                    and len(codec.encode("x" + t)) == 2 and not healer._extendable(t))
    context, plan = plan_for(codec, healer, "x" + complete)
    assert plan.tail == "" and plan.backed_off == 0 and plan.context_ids == context.ids


def test_a_character_split_across_tokens_is_never_taken_back_in_half(codec, healer):
    for prefix in ("s = '😀", "s = 'é", "x = '日本"):
        context, plan = plan_for(codec, healer, prefix)
        assert prefix.endswith(plan.tail) and "\ufffd" not in plan.tail


def test_plans_over_real_code_keep_the_text(codec, healer):
    # Every cursor of a real file: the kept tokens plus the tail spell the prefix window.
    for cursor in range(0, len(SOURCE), 97):
        prefix = SOURCE[:cursor]
        context, plan = plan_for(codec, healer, prefix)
        kept = plan.context_ids[-1 - (context.prefix_tokens - plan.backed_off) : -1]
        assert codec.decode(kept) + plan.tail == prefix[context.prefix_start:]
        assert plan.backed_off <= 3 and len(plan.tail) <= 24


def test_first_token_must_cover_the_tail(codec, healer):
    first = healer.first_token(" sel")
    assert first.covering[token_id(codec, " self")] and first.covering[token_id(codec, " select")]
    assert not first.covering[token_id(codec, " x")] and not first.covering[token_id(codec, " se")]
    assert not first.covering[:8].any(), "special tokens never heal"


def test_after_typed_indentation_no_token_adds_more(codec, healer):
    first = healer.first_token("\n    ")
    deeper = token_id(codec, "\n        ")
    assert not first.covering[deeper], "the user's indentation stands"
    assert healer.first_token("\n").covering[deeper]


def test_newline_after_the_tail_ends_a_line_but_inside_it_does_not(codec, healer):
    first = healer.first_token("\n")
    four = token_id(codec, "\n    ")
    assert first.covering[four] and not first.newline_after[four]
    two_lines = codec.encode("\n\n")
    if len(two_lines) == 1:
        assert first.newline_after[two_lines[0]]


def test_a_strict_prefix_is_committed_first_when_the_model_prefers_it(codec, healer):
    logits = np.zeros(codec.vocab_size, dtype=np.float32)
    seven = token_id(codec, "\n       ")
    logits[seven] = 10.0  # the training split: "\n       " + " return"
    assert healer.step_toward("\n        ", logits) == (seven, " ")
    logits[token_id(codec, "\n        ")] = 20.0
    assert healer.step_toward("\n        ", logits) is None  # the covering token wins


def test_a_split_the_tokenizer_never_makes_is_not_taken(codec, healer):
    logits = np.zeros(codec.vocab_size, dtype=np.float32)
    logits[token_id(codec, " ")] = 10.0  # " " + "o..." never occurs in tokenized text
    assert healer.step_toward(" o", logits) is None


# --- through the engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(codec) -> Engine:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=codec.vocab_size, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96)
    return Engine(TorchStep(DiffusionLM(cfg).eval()), codec, budget=Budget(256, 96))


@pytest.mark.parametrize("config", [
    DecodeConfig(block_size=1, max_tokens=10, mode="line"),
    DecodeConfig(block_size=4, tau=0.5, max_tokens=12, mode="block"),
    DecodeConfig(block_size=4, tau=0.5, max_tokens=12, mode="infill", anchor=False),
])
def test_engine_completion_starts_after_the_tail(codec, engine, config):
    result = engine.complete(Job("x = sel", "\nprint(x)\n", config, n=2))[0]
    assert result.stats.healed_tokens == 2
    for completion in result.completions:
        decoded = codec.decode(completion.tokens)
        assert completion.healed == " sel" and decoded.startswith(" sel")
        if config.mode == "infill":
            assert completion.text == decoded[len(" sel"):]
    if config.anchor:  # the anchor (or B=1) picks the first token: candidates differ there
        first = [c.tokens[0] for c in result.completions]
        assert len(set(first)) == 2, "candidates still differ in their first token"


def test_engine_without_healing_decodes_after_the_whole_prefix(codec, engine):
    config = DecodeConfig(block_size=1, max_tokens=6, mode="infill")
    result = engine.complete(Job("x = sel", "", config, heal=False))[0]
    completion = result.completions[0]
    assert result.stats.healed_tokens == 0 and completion.healed == ""
    assert completion.text == codec.decode(completion.tokens)


def test_typing_after_a_healed_cursor_still_hits_the_prefix_cache(engine):
    config = DecodeConfig(block_size=1, max_tokens=4, mode="line")
    prefix = SOURCE[: SOURCE.index("def raw_decode") + 40]
    engine.complete(Job(prefix, "", config, doc_id="typing"))
    hot = engine.complete(Job(prefix + "x", "", config, doc_id="typing"))[0]
    assert hot.stats.cached_tokens > 0.9 * hot.stats.context_tokens
