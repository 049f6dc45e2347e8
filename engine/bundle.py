"""Loading and checking a model bundle: the folder the exporter writes, the server reads.

A bundle is `bundle.json` plus the files it lists (ONNX variants, tokenizer.json),
each with its sha256. `load_bundle` checks everything it can before a session is
created, and every problem surfaces as one `BundleError` line naming the file:
an editor user gets "checksum mismatch", not a protobuf traceback.

A bundle is untrusted input (downloaded, shared, or edited on disk), so the
loader reads only what the manifest declares, each file for its declared role:
no path outside the folder (no "..", no absolute path, no symlink resolving
outside, bundle.json included), only regular files, no pickle or zip archive
(torch.save) where a model or tokenizer should be, no declared file without a
role, and no ONNX external data that is not itself a declared, checksummed file
(onnxruntime would otherwise read files the manifest never mentions). Nothing
is ever unpickled: the variants go to onnxruntime, the tokenizer is JSON.

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
    if not path.resolve().is_relative_to(root.resolve()):
        raise bundle_error(root, MANIFEST, "symlink points outside the bundle folder")
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
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise bundle_error(root, MANIFEST, f"file name {name!r} has control characters")
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


# --- what the files are -------------------------------------------------------------------------

# A pickle starts with PROTO (0x80) and a protocol number; torch.save writes a zip archive.
PICKLE_PROTOCOLS = range(2, 6)
ZIP_MAGIC = b"PK\x03\x04"


def archive_kind(path: Path) -> str | None:
    """"a pickle" or "a zip archive" if the file starts like one (neither is a model or a tokenizer)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
        return "a pickle"
    if head == ZIP_MAGIC:
        return "a zip archive (torch.save?)"
    return None


# Fields of onnx.proto messages that can hold (or lead to) a TensorProto, by message:
# field number -> message kind. Everything else is skipped by its wire type.
ONNX_FIELDS = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "function": {7: "node", 11: "attribute"},
    "training": {1: "graph", 2: "graph"},
    "tensor": {13: "entry"},
}
TENSOR_DATA_LOCATION, EXTERNAL = 14, 1


class _Truncated(Exception):
    """The protobuf ends in the middle of a field (onnxruntime refuses such a file too)."""


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise _Truncated()
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: memoryview):
    """(field number, wire type, value) of a protobuf message: ints for varints, views for the rest."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            value, at = data[at : at + size], at + size
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 3 or wire == 4:
            continue  # group markers (deprecated): their contents parse as fields
        else:
            raise _Truncated()
        if at > len(data):
            raise _Truncated()
        yield number, wire, value


def onnx_external_data(path: Path) -> list[str]:
    """The external data locations an ONNX file's tensors refer to (onnxruntime would open them).

    Walks only the messages that can hold tensors (onnx.proto field numbers); a field
    whose wire type does not fit is skipped, as protobuf does. A file that does not
    parse as protobuf yields what was found before the fault: onnxruntime will not
    load it anyway.
    """
    locations: list[str] = []
    stack = [("model", memoryview(path.read_bytes()))]
    try:
        while stack:
            kind, data = stack.pop()
            external = located = False
            for number, wire, value in _fields(data):
                if kind == "tensor" and number == TENSOR_DATA_LOCATION and wire == 0:
                    external = value == EXTERNAL
                elif wire == 2 and number in ONNX_FIELDS[kind]:
                    child = ONNX_FIELDS[kind][number]
                    if child == "entry":  # StringStringEntryProto: key = 1, value = 2
                        entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == 2}
                        if entry.get(1) == "location" and 2 in entry:
                            locations.append(entry[2])
                            located = True
                    else:
                        stack.append((child, value))
            if external and not located:
                locations.append("")  # external data without a location: refused all the same
    except _Truncated:
        pass
    return locations


def check_roles(root: Path, paths: dict[str, Path], variants: dict[str, Path], tokenizer: Path) -> None:
    """Every declared file is a variant, the tokenizer, or declared external data of a variant; no archives."""
    roles = {path: "model variant" for path in variants.values()}
    roles[tokenizer] = "tokenizer"
    for path in [tokenizer, *variants.values()]:
        kind = archive_kind(path)
        if kind:
            raise bundle_error(root, path.name, f"is {kind}, not a {roles[path]} (bundles never hold pickles)")
    for variant in variants.values():
        for location in onnx_external_data(variant):
            if location not in paths:
                raise bundle_error(root, variant.name, f"refers to external data {location!r} that bundle.json "
                                                       "does not list (undeclared files are never loaded)")
            roles.setdefault(paths[location], "external data")
    for name, path in paths.items():
        if path not in roles:
            raise bundle_error(root, name, "declared but neither a model variant, the tokenizer, nor external "
                                           "data of a variant (a bundle holds nothing else)")


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
    check_roles(root, paths, variants, tokenizer_path)
    check_tokenizer(root, tokenizer_path)
    block_size, tau = decode_defaults(root, manifest["decode_defaults"])
    return Bundle(
        root=root, manifest=manifest, n_layers=sizes["n_layers"], n_kv_heads=sizes["n_kv_heads"],
        head_dim=sizes["d_model"] // sizes["n_heads"], vocab_size=sizes["vocab_size"], max_context=positive_int(root, manifest["context"], "max_context", "context"),
        trained_context=trained_context(root, manifest["context"]),
        special_tokens=special, block_size=block_size, tau=tau, variants=variants, tokenizer_path=tokenizer_path,
    )
