"""Train and load the byte-level BPE tokenizer (the `tokenizers` library).

Byte-level BPE makes every string encodable and decodable exactly (tabs, CRLF,
form feeds, emoji). The pre-tokenizer is GPT-2's regex adapted to code: a
newline stays with the indentation that follows it, so BPE learns "\\n" + 4/8/12
spaces as single tokens (indentation costs one token per line), identifiers keep
their underscores (snake_case is not split at every "_"), and there are no English
contraction rules (which would cut "'s" off the string 'self').
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.contract import SPECIAL_TOKENS
from engine.tokenizer import load_tokenizer  # noqa: F401  (re-exported for the trainer)

DEFAULT_TOKENIZER = Path(__file__).with_name("tokenizer.json")
DEFAULT_VOCAB = 12_288
PRETOKENIZE_PATTERN = r" ?[\p{L}_][\p{L}\p{N}_]*| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|\s+(?!\S)|\s+"


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with no normalizer, so the round trip is exact."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB, show_progress: bool = True) -> Tokenizer:
    """Learn merges from `texts`; the special tokens of engine.contract get ids 0..6."""
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.encode_special_tokens = True
    return tok


def iter_texts(paths: Iterable[Path]) -> Iterator[str]:
    """File contents for training, read lazily."""
    for p in paths:
        yield Path(p).read_bytes().decode("utf-8")
