"""Tests of the byte-level BPE tokenizer (model/tokenizer.py, engine/tokenizer.py).

Checks, on the committed model/tokenizer.json:
- exact round trip decode(encode(x)) == x on ~30 deterministically sampled standard
  library files and on hypothesis-generated text (arbitrary unicode, and targeted
  mixes of tabs, CRLF, lone CR, form feeds, NUL, emoji, non-ASCII letters, runs of
  spaces and special-token strings written as plain text);
- special-token strings in a document encode to ordinary tokens (id >= 7), never
  to the special ids 0..6;
- the special tokens of engine.contract have ids 0..6, and load_tokenizer rejects
  tokenizers whose special tokens are missing or reordered (ValueError), missing
  files (FileNotFoundError) and corrupt JSON (ValueError);
- indentation and snake_case identifiers are cheap, and stdlib code compresses to
  at least 3 characters per token;
- train_tokenizer on a few strings gives a tokenizer with the specials at 0..6
  that round-trips.
"""

from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import trainers

from engine.contract import BOS, EOS, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, MASK, PAD, SPECIAL_TOKENS
from engine.tokenizer import TextCodec, load_tokenizer
from model.tokenizer import DEFAULT_TOKENIZER, new_tokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "model" / "tokenizer.json"
N_SPECIAL = len(SPECIAL_TOKENS)
SAMPLE_SEED = 1234
N_FILES = 30
MAX_FILE_BYTES = 150_000  # keep the sampled files quick to encode

# Deterministic, database-less hypothesis runs (same examples on every machine).
HYP = settings(derandomize=True, database=None, deadline=None, max_examples=150,
               suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def codec() -> TextCodec:
    return TextCodec.from_file(TOKENIZER)


def sampled_stdlib_texts() -> list[tuple[str, str]]:
    """~30 UTF-8 standard library files, drawn with a fixed seed: (relative path, text)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
    rng = random.Random(SAMPLE_SEED)
    rng.shuffle(files)
    out = []
    for path in files:
        data = path.read_bytes()
        if not 0 < len(data) <= MAX_FILE_BYTES:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a few stdlib test files are latin-1 on purpose
            continue
        out.append((str(path.relative_to(root)), text))
        if len(out) == N_FILES:
            break
    return out


@pytest.fixture(scope="module")
def stdlib_texts() -> list[tuple[str, str]]:
    texts = sampled_stdlib_texts()
    assert len(texts) == N_FILES, "not enough UTF-8 standard library files found"
    return texts


# ---------------------------------------------------------------- round trip


def test_default_tokenizer_path_is_the_committed_file():
    assert DEFAULT_TOKENIZER.resolve() == TOKENIZER
    assert TOKENIZER.is_file()


def test_round_trip_on_stdlib_files(codec, stdlib_texts):
    failures = [rel for rel, text in stdlib_texts if codec.decode(codec.encode(text)) != text]
    assert not failures, f"round trip failed on {failures}"


def test_stdlib_sample_is_deterministic(stdlib_texts):
    assert [rel for rel, _ in sampled_stdlib_texts()] == [rel for rel, _ in stdlib_texts]


def test_stdlib_files_encode_without_special_ids(codec, stdlib_texts):
    for rel, text in stdlib_texts:
        ids = codec.encode(text)
        assert min(ids) >= N_SPECIAL, f"{rel} produced a special id"
        assert max(ids) < codec.vocab_size


@HYP
@given(st.text())
def test_round_trip_arbitrary_unicode(codec, text):
    ids = codec.encode(text)
    assert all(N_SPECIAL <= i < codec.vocab_size for i in ids)
    assert codec.decode(ids) == text


TRICKY_PIECES = [
    "\t", "\t\t", "\r\n", "\r", "\n", "\x0c", "\x00", " ", "    ", "        ", " " * 13,
    "😀", "👩‍💻", "🐍", "é", "ß", "Ω", "λ", "日本語", "Привет", "\u00a0", "\u2028", "\ufeff",
    "def", "self", "_", "__init__", "x", "0", "1.5e-3", "#", "'''", '"', "\\", "<", "|", ">",
    *SPECIAL_TOKENS,
]

tricky_text = st.lists(
    st.one_of(st.sampled_from(TRICKY_PIECES), st.text(max_size=5)), max_size=40
).map("".join)


@HYP
@given(tricky_text)
def test_round_trip_tricky_mixes(codec, text):
    ids = codec.encode(text)
    assert all(N_SPECIAL <= i < codec.vocab_size for i in ids), "special token text must stay plain"
    assert codec.decode(ids) == text


@HYP
@given(st.sampled_from(SPECIAL_TOKENS), st.text(max_size=10), st.text(max_size=10))
def test_special_token_text_is_plain(codec, special, before, after):
    text = before + special + after
    ids = codec.encode(text)
    assert all(i >= N_SPECIAL for i in ids)
    assert codec.decode(ids) == text


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_each_special_token_string_is_plain_text(codec, special):
    ids = codec.encode(special)
    assert len(ids) > 1, f"{special} encoded to a single token: it was treated as special"
    assert all(i >= N_SPECIAL for i in ids)
    assert codec.decode(ids) == special
    # ... while the special ids themselves decode to the special strings
    assert codec.decode([SPECIAL_TOKENS.index(special)]) == special


def test_crlf_form_feed_and_nul_survive(codec):
    text = "class A:\r\n\tdef f(self):\r\n\t\treturn '\x00'\r\x0c\n# é😀\n"
    assert codec.decode(codec.encode(text)) == text


def test_empty_string(codec):
    assert codec.encode("") == []
    assert codec.decode([]) == ""


# ------------------------------------------------------------ special tokens


def test_special_tokens_have_contract_ids(codec):
    tok = codec.tokenizer
    assert SPECIAL_TOKENS == (PAD, MASK, BOS, EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == expected
        assert tok.id_to_token(expected) == token
    assert (codec.pad, codec.mask, codec.bos, codec.eos) == (0, 1, 2, 3)
    assert (codec.fim_prefix, codec.fim_suffix, codec.fim_middle) == (4, 5, 6)
    assert codec.vocab_size == 12_288


def test_spm_context_layout(codec):
    ctx = codec.spm_context("def f(x):\n    return ", "\n\nprint(f(1))\n")
    assert ctx[:2] == [codec.bos, codec.fim_suffix]
    assert ctx[-1] == codec.fim_middle
    i = ctx.index(codec.fim_prefix)
    assert codec.decode(ctx[2:i]) == "\n\nprint(f(1))\n"
    assert codec.decode(ctx[i + 1:-1]) == "def f(x):\n    return "


SMALL_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    print(i)\n",
    "import os\nprint(os.path.join('a', 'b'))\n",
] * 3


def _train_with_specials(special_tokens: list[str]):
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=1, special_tokens=special_tokens, show_progress=False)
    tok.train_from_iterator(SMALL_TEXTS, trainer=trainer)
    return tok


def test_reordered_special_tokens_are_rejected(tmp_path):
    path = tmp_path / "reordered.json"
    reordered = list(SPECIAL_TOKENS)
    reordered[2], reordered[3] = reordered[3], reordered[2]  # bos <-> eos
    _train_with_specials(reordered).save(str(path))
    with pytest.raises(ValueError, match=r"special token <\|bos\|> should have id 2"):
        load_tokenizer(path)


def test_missing_special_tokens_are_rejected(tmp_path):
    path = tmp_path / "missing.json"
    _train_with_specials([]).save(str(path))
    with pytest.raises(ValueError, match=r"special token <\|pad\|> should have id 0, has None"):
        load_tokenizer(path)


def test_one_missing_special_token_is_rejected(tmp_path):
    path = tmp_path / "no_fim_middle.json"
    _train_with_specials(list(SPECIAL_TOKENS[:-1])).save(str(path))
    with pytest.raises(ValueError, match=r"<\|fim_middle\|>"):
        TextCodec.from_file(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError):
        TextCodec.from_file(tmp_path)  # a folder is not a tokenizer file either


@pytest.mark.parametrize("content", ["{not json", "", "{}", '{"model": 3}', "\x00\x01\x02"])
def test_corrupt_file_raises_value_error(tmp_path, content):
    path = tmp_path / "corrupt.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(path)


def test_truncated_committed_file_raises_value_error(tmp_path):
    data = TOKENIZER.read_text()
    path = tmp_path / "truncated.json"
    path.write_text(data[: len(data) // 2])
    with pytest.raises(ValueError):
        load_tokenizer(path)


def test_committed_file_is_valid_json_with_specials_first():
    spec = json.loads(TOKENIZER.read_text())
    added = sorted((t["id"], t["content"]) for t in spec["added_tokens"])
    assert added[:N_SPECIAL] == list(enumerate(SPECIAL_TOKENS))
    assert all(t["special"] for t in spec["added_tokens"] if t["content"] in SPECIAL_TOKENS)
    assert spec.get("normalizer") is None, "a normalizer would break the exact round trip"


# ---------------------------------------------------------------- efficiency


@pytest.mark.parametrize("spaces", [4, 8, 12, 16])
def test_newline_plus_indentation_is_compact(codec, spaces):
    ids = codec.encode("\n" + " " * spaces)
    # The committed tokenizer encodes each of these as one token; allow 2.
    assert 1 <= len(ids) <= 2, [codec.tokenizer.id_to_token(i) for i in ids]
    # In a real line the indentation still costs one token: newline+indent, then " word".
    line = codec.encode("x\n" + " " * spaces + "return y")
    assert len(line) <= 5, [codec.tokenizer.id_to_token(i) for i in line]


def test_tab_indentation_is_compact(codec):
    assert len(codec.encode("\n\t\t")) <= 2


@pytest.mark.parametrize("name", ["get_matching_blocks", "assert_called_once_with", "find_longest_match", "is_not_none"])
def test_snake_case_is_not_split_at_every_underscore(codec, name):
    ids = codec.encode(name)
    parts = name.split("_")
    pieces = [codec.tokenizer.decode([i]) for i in ids]
    assert len(ids) < len(parts) + (len(parts) - 1), pieces  # fewer than words + underscores
    assert "_" not in pieces, f"a bare underscore token in {pieces}"
    assert "".join(pieces) == name


def test_dunder_names_are_single_tokens(codec):
    assert len(codec.encode("__init__")) == 1
    assert len(codec.encode("self")) == 1


def test_stdlib_compression_at_least_three_chars_per_token(codec, stdlib_texts):
    chars = sum(len(text) for _, text in stdlib_texts)
    tokens = sum(len(codec.encode(text)) for _, text in stdlib_texts)
    ratio = chars / tokens
    # Measured 3.5 characters per token on this sample with the committed tokenizer.
    assert ratio >= 3.0, f"only {ratio:.2f} characters per token"


# ------------------------------------------------------------------ training


def test_train_tokenizer_puts_specials_first_and_round_trips(tmp_path):
    tok = train_tokenizer(SMALL_TEXTS, vocab_size=320, show_progress=False)
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == expected
    assert tok.get_vocab_size() <= 320
    assert tok.get_vocab_size() > 256 + N_SPECIAL, "learned no merges at all"
    path = tmp_path / "tok.json"
    tok.save(str(path))
    codec = TextCodec.from_file(path)  # passes the contract checks
    for text in [*SMALL_TEXTS, "unseen: ünïcödé 😀\r\n\t\x0c<|eos|>", "<|fim_prefix|>x"]:
        ids = codec.encode(text)
        assert all(i >= N_SPECIAL for i in ids)
        assert codec.decode(ids) == text
    # learned merges: training text takes clearly fewer tokens than bytes
    sample = SMALL_TEXTS[1]
    assert len(codec.encode(sample)) < 0.7 * len(sample.encode())


@HYP
@given(st.text(max_size=50))
def test_trained_byte_alphabet_covers_any_text(trained_small, text):
    ids = trained_small.encode(text)
    assert trained_small.decode(ids) == text


@pytest.fixture(scope="module")
def trained_small(tmp_path_factory) -> TextCodec:
    path = tmp_path_factory.mktemp("tok") / "small.json"
    train_tokenizer(SMALL_TEXTS, vocab_size=300, show_progress=False).save(str(path))
    return TextCodec.from_file(path)
