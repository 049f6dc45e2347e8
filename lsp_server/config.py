"""Server settings: defaults, validation, and merging what the client sends.

Settings come from initializationOptions and workspace/didChangeConfiguration,
as a flat object (camelCase as VS Code sends them, or snake_case), optionally
nested under "seedLsp". An invalid value is reported and the previous valid
value is kept, so a typo in a settings file never disables the server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional

from engine.decode import DRAFTS, LOOKUP_NGRAM, DecodeConfig


@dataclass(frozen=True)
class Settings:
    bundle: Optional[str] = None      # model bundle folder; None = the bundled default model
    device: str = "auto"              # auto (CUDA when usable, else CPU), cpu or cuda
    threads: int = 0                  # onnxruntime intra-op threads; 0 = its default
    enabled: bool = True              # master switch for completions (the toggle command flips it)
    languages: tuple[str, ...] = ("python",)  # languageIds served; "*" = all
    inline_completion: bool = True    # textDocument/inlineCompletion
    completion_items: bool = True     # textDocument/completion (one item: the line completion)
    diagnostics: bool = True          # publish Python syntax errors
    code_actions: bool = True         # model quick fixes and rewrites
    mode: str = "auto"                # auto (block where a body is expected), line or block
    verify: bool = True               # completions: drafts checked by the AR head (B=1's text, fewer passes)
    draft: str = DecodeConfig.draft   # verify's drafts: lookup (earlier text), diffusion, or both
    draft_min_match: int = DecodeConfig.min_match  # verify: a lookup draft needs this many last tokens seen before
    draft_tokens: int = 4             # verify: tokens guessed after the last accepted one per pass
    block_size: int = 8               # diffusion block (verify off, repair); 1 = autoregressive
    tau: float = 0.9                  # diffusion commit threshold per step
    max_tokens_line: int = 32         # token cap of a line completion
    max_tokens_block: int = 64        # token cap of a block completion
    temperature: float = 0.0          # 0 = greedy
    n: int = 1                        # inline candidates, decoded in one batch
    prefix_tokens: int = 0            # context budget before the cursor; 0 = fit the model
    suffix_tokens: int = 0            # context budget after the cursor; 0 = fit the model
    min_confidence: float = 0.0       # drop candidates whose weakest token is below this
    cache_mb: float = 256.0           # KV cache bound (per-document prefix caches)
    kv_limit_mb: float = 1024.0       # most KV cache one request may need; larger configurations are refused
    bundle_check_ms: int = 2000       # how often the bundle on disk is checked for changes; 0 = never
    debounce_ms: int = 300            # diagnostics wait this long after the last change
    request_timeout_ms: int = 5000    # a completion gives up (returns what it has) after this
    log_level: str = "info"           # debug, info, warning, error
    log_document_text: bool = False   # debug only: allow document text in logs

    def serves(self, language_id: str) -> bool:
        return "*" in self.languages or language_id in self.languages


CHOICES = {"device": ("auto", "cpu", "cuda"), "mode": ("auto", "line", "block"), "draft": DRAFTS,
           "log_level": ("debug", "info", "warning", "error")}
RANGES = {"threads": (0, 256), "block_size": (1, 64), "draft_tokens": (1, 64), "draft_min_match": (1, LOOKUP_NGRAM), "tau": (1e-6, 1.0), "max_tokens_line": (1, 256),
          "max_tokens_block": (1, 512), "temperature": (0.0, 10.0), "n": (1, 8), "prefix_tokens": (0, 8192),
          "suffix_tokens": (0, 8192), "min_confidence": (0.0, 1.0), "cache_mb": (0.0, 65536.0),
          "kv_limit_mb": (1.0, 1_048_576.0), "bundle_check_ms": (0, 3_600_000),
          "debounce_ms": (0, 60_000), "request_timeout_ms": (50, 600_000)}


def snake_case(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _convert(name: str, kind: type, value: Any) -> Any:
    """The value as the field's type, or ValueError saying what is wrong."""
    if kind is bool or kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    elif kind in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
    elif name == "languages":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"languages must be a list of language ids, got {value!r}")
        return tuple(value)
    elif name == "bundle":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"bundle must be a folder path, got {value!r}")
        return value or None
    elif not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    if name in CHOICES and value not in CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
    if name in RANGES:
        low, high = RANGES[name]
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")
    return value


def merge_settings(previous: Settings, raw: Any) -> tuple[Settings, list[str]]:
    """previous updated with the valid entries of raw; plus one message per rejected entry."""
    if raw is None:
        return previous, []
    if not isinstance(raw, dict):
        return previous, [f"settings must be an object, got {type(raw).__name__}"]
    if isinstance(raw.get("seedLsp"), dict):
        raw = raw["seedLsp"]
    known = {f.name: f.type for f in fields(Settings)}
    changes, errors = {}, []
    for key, value in raw.items():
        name = snake_case(key)
        if name not in known:
            errors.append(f"unknown setting {key!r}")
            continue
        try:
            changes[name] = _convert(name, known[name], value)
        except ValueError as exc:
            errors.append(f"{exc} (keeping {getattr(previous, name)!r})")
    return replace(previous, **changes), errors
