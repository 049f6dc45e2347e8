"""Loading and checking a model bundle: the folder the exporter writes, the server reads.

A bundle is `bundle.json` plus the files it lists (ONNX variants, tokenizer.json),
each with its sha256. `load_bundle` checks everything it can before a session is
created, and every problem surfaces as one `BundleError` line naming the file:
an editor user gets "checksum mismatch", not a protobuf traceback.

numpy, onnxruntime and the standard library only: never torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.contract import SPECIAL_TOKENS
from engine.tokenizer import load_tokenizer

MANIFEST = "bundle.json"
FORMAT = 1
TOKENIZER = "tokenizer.json"
REQUIRED_KEYS = ("format", "architecture", "special_tokens", "decode_defaults", "context", "variants", "files")
ARCHITECTURE_INTS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads")

# Where `pip install` puts the shipped bundle (package data of `model`).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "model" / "default" / "bundle"


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming the file and the fault."""


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: what the engine needs to open a session and decode."""

    root: Path
    manifest: dict
    n_layers: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    trained_context: int  # longest sequence the model was trained on; contexts stay inside it
    special_tokens: dict[str, int]
    block_size: int
    tau: float
    variants: dict[str, Path]  # variant name ("fp32", "int8", "fp16") -> file
    tokenizer_path: Path

    def variant_path(self, variant: str) -> Path:
        if variant not in self.variants:
            raise bundle_error(self.root, MANIFEST, f"no variant {variant!r} (has {', '.join(sorted(self.variants))})")
        return self.variants[variant]


def bundle_error(root: Path, name: str, problem: str) -> BundleError:
    return BundleError(f"bundle {root}: {name}: {problem}")


def default_bundle_path() -> Path:
    """The bundle shipped with the package; a BundleError telling how to make one if absent."""
    if not (DEFAULT_BUNDLE / MANIFEST).is_file():
        raise BundleError(
            f"bundle {DEFAULT_BUNDLE}: no default bundle installed "
            f"(export one with `seed-lsp export CHECKPOINT --out {DEFAULT_BUNDLE}`)"
        )
    return DEFAULT_BUNDLE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_special_tokens() -> dict[str, int]:
    return {token: i for i, token in enumerate(SPECIAL_TOKENS)}


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise bundle_error(root, MANIFEST, "missing (not a bundle folder?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bundle_error(root, MANIFEST, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise bundle_error(root, MANIFEST, "not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise bundle_error(root, MANIFEST, f"missing keys: {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise bundle_error(root, MANIFEST, f"format {manifest['format']!r} is not supported (expected {FORMAT})")
    for key in REQUIRED_KEYS[1:]:
        if not isinstance(manifest[key], dict):
            raise bundle_error(root, MANIFEST, f"{key!r} must be a JSON object")
    return manifest


def resolve_inside(root: Path, name: object) -> Path:
    """root/name, refusing anything that is not a plain relative path to a regular file inside root."""
    if not isinstance(name, str) or not name:
        raise bundle_error(root, MANIFEST, f"file name {name!r} is not a non-empty string")
    parts = PurePosixPath(name)
    if parts.is_absolute() or Path(name).is_absolute() or "\\" in name:
        raise bundle_error(root, name, "absolute or non-portable path (must be relative to the bundle)")
    if ".." in parts.parts:
        raise bundle_error(root, name, "path leaves the bundle folder ('..')")
    path = root / name
    if not path.exists():
        kind = "dangling symlink" if path.is_symlink() else "missing"
        raise bundle_error(root, name, kind)
    if not path.resolve().is_relative_to(root.resolve()):
        raise bundle_error(root, name, "symlink points outside the bundle folder")
    if not path.is_file():
        raise bundle_error(root, name, "not a regular file")
    return path


def check_files(root: Path, files: dict) -> dict[str, Path]:
    """Every listed file exists inside the bundle and has the recorded sha256."""
    paths = {}
    for name, expected in files.items():
        path = resolve_inside(root, name)
        if not isinstance(expected, str):
            raise bundle_error(root, MANIFEST, f"sha256 of {name} is not a string")
        if file_sha256(path) != expected.lower():
            raise bundle_error(root, name, "checksum mismatch (file changed or corrupt)")
        paths[name] = path
    return paths


def listed_path(root: Path, paths: dict[str, Path], name: object, role: str) -> Path:
    if name not in paths:
        raise bundle_error(root, MANIFEST, f"{role} {name!r} is not listed under 'files' (no checksum)")
    return paths[name]


def positive_int(root: Path, section: dict, key: str, where: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bundle_error(root, MANIFEST, f"{where}.{key} must be a positive integer, got {value!r}")
    return value


def check_special_tokens(root: Path, special: dict) -> dict[str, int]:
    """The manifest's special tokens must be exactly engine.contract's, at the same ids."""
    expected = expected_special_tokens()
    for token, token_id in expected.items():
        if special.get(token) != token_id:
            raise bundle_error(root, MANIFEST, f"special token {token} has id {special.get(token)!r}, this engine needs {token_id}")
    unknown = sorted(set(special) - set(expected))
    if unknown:
        raise bundle_error(root, MANIFEST, f"unknown special tokens: {', '.join(unknown)}")
    return special


def check_tokenizer(root: Path, path: Path) -> None:
    try:
        load_tokenizer(path)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0].removeprefix(f"{path}: ")  # the message already names the file
        raise bundle_error(root, path.name, f"tokenizer does not load ({reason})") from None


def decode_defaults(root: Path, section: dict) -> tuple[int, float]:
    block_size = positive_int(root, section, "block_size", "decode_defaults")
    tau = section.get("tau")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0.0 < tau <= 1.0:
        raise bundle_error(root, MANIFEST, f"decode_defaults.tau must be in (0, 1], got {tau!r}")
    return block_size, float(tau)


def trained_context(root: Path, section: dict) -> int:
    """context.trained_context if recorded, else max_context (older bundles)."""
    key = "trained_context" if "trained_context" in section else "max_context"
    return positive_int(root, section, key, "context")


def load_bundle(path: str | Path) -> Bundle:
    """Read and check the bundle folder at `path`; BundleError (one line) on any fault."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle {root}: not a folder (or does not exist)")
    manifest = read_manifest(root)
    paths = check_files(root, manifest["files"])
    arch = manifest["architecture"]
    sizes = {key: positive_int(root, arch, key, "architecture") for key in ARCHITECTURE_INTS}
    if sizes["d_model"] % sizes["n_heads"]:
        raise bundle_error(root, MANIFEST, f"architecture: d_model {sizes['d_model']} is not a multiple of n_heads {sizes['n_heads']}")
    special = check_special_tokens(root, manifest["special_tokens"])
    variants = {name: listed_path(root, paths, file, f"variant {name}") for name, file in manifest["variants"].items()}
    if not variants:
        raise bundle_error(root, MANIFEST, "lists no model variant")
    tokenizer_path = listed_path(root, paths, TOKENIZER, "tokenizer")
    check_tokenizer(root, tokenizer_path)
    block_size, tau = decode_defaults(root, manifest["decode_defaults"])
    return Bundle(
        root=root, manifest=manifest, n_layers=sizes["n_layers"], n_kv_heads=sizes["n_kv_heads"],
        head_dim=sizes["d_model"] // sizes["n_heads"], vocab_size=sizes["vocab_size"], max_context=positive_int(root, manifest["context"], "max_context", "context"),
        trained_context=trained_context(root, manifest["context"]),
        special_tokens=special, block_size=block_size, tau=tau, variants=variants, tokenizer_path=tokenizer_path,
    )
