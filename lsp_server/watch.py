"""Noticing that the model bundle changed on disk while the server runs.

A loaded model lives in memory, so deleting or corrupting its bundle does not
stop completions; but the user should learn of it (the next start would fail),
and a bundle replaced by a good one should be picked up. The server polls a
cheap fingerprint (stat of every file in the folder) and only when it changes
re-verifies the bundle (engine.bundle.load_bundle: manifest, paths, sha256).

Pure functions of the file system; the server decides what to report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.bundle import MANIFEST, BundleError, default_bundle_path, load_bundle


def bundle_root(configured: Optional[str]) -> Optional[Path]:
    """The folder the settings point at (None when there is no default bundle either)."""
    if configured:
        return Path(configured)
    try:
        return default_bundle_path()
    except BundleError:
        return None


def fingerprint(root: Optional[Path]) -> tuple:
    """(name, size, mtime_ns, inode) of every file under root, or a marker when it is not a folder."""
    if root is None:
        return ("no bundle",)
    try:
        if not root.is_dir():
            return ("not a folder",)
        entries = []
        for folder, dirs, files in os.walk(root):  # does not follow symlinked folders
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                    if os.path.islink(path):
                        st = os.stat(path)
                except OSError:
                    entries.append((path, "vanished"))
                    continue
                entries.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(entries)
    except OSError as exc:
        return ("unreadable", type(exc).__name__)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error: Optional[str]  # one line when not ok
    files: Optional[dict]  # the manifest's name -> sha256 when ok


def verify(root: Optional[Path]) -> Verdict:
    """Check the bundle as the loader would (sha256 of every file); never raises."""
    if root is None:
        return Verdict(False, "no bundle configured and no default bundle installed", None)
    try:
        bundle = load_bundle(root)
    except Exception as exc:  # BundleError, or an OSError racing with the change
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Verdict(False, text, None)
    return Verdict(True, None, dict(bundle.manifest.get("files", {})))


def manifest_files(root: Optional[Path]) -> Optional[dict]:
    """name -> sha256 as bundle.json lists them now (None if unreadable); no hashing."""
    if root is None:
        return None
    try:
        files = json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("files")
        return dict(files) if isinstance(files, dict) else None
    except (OSError, ValueError, AttributeError):
        return None
