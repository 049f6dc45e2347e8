"""Held-out infill jobs for the benchmarks: real code the model never trained on.

Files come from the validation split of a corpus built by `seed-lsp corpus build`
(its manifest lists them) or from any folder of .py files. Each job cuts one file
at a cursor inside a non-blank line: the prefix is everything before, the suffix
everything after, and the reference is the rest of that line (line jobs) or the
next lines up to the block's end (block jobs). Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HeldOutJob:
    file: str
    prefix: str
    suffix: str
    reference: str  # what the file really has at the cursor (the rest of the line)


def heldout_files(corpus: str | None = None, source: str | None = None) -> list[Path]:
    """Validation files of a corpus manifest, or every .py file under source."""
    if corpus:
        manifest = Path(corpus) / "manifest.json"
        if not manifest.is_file():
            raise SystemExit(f"error: {manifest} not found: build a corpus (`seed-lsp corpus build --out "
                             f"{corpus}`), pass --corpus DIR, or --source DIR (a folder of .py files)")
        rows = json.loads(manifest.read_text())["files"]
        files = [Path(r["path"]) for r in rows if r.get("split") == "val"]
    elif source:
        files = sorted(Path(source).rglob("*.py"))
    else:
        raise SystemExit("error: give --corpus (a corpus folder with a val split) or --source (a folder of .py files)")
    files = [f for f in files if f.is_file()]
    if not files:
        raise SystemExit("error: no held-out files found")
    return files


def line_jobs(files: list[Path], count: int, seed: int = 0, min_rest: int = 4) -> list[HeldOutJob]:
    """`count` jobs, each a cursor after the indentation and part of a code line.

    At least min_rest characters of the line remain to complete; comment lines and
    docstring-looking lines are skipped (they test prose, not code).
    """
    rng = random.Random(seed)
    jobs: list[HeldOutJob] = []
    texts = {}
    attempts = 0
    while len(jobs) < count and attempts < count * 50:
        attempts += 1
        path = rng.choice(files)
        if path not in texts:
            try:
                texts[path] = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                texts[path] = ""
        text = texts[path]
        lines = text.split("\n")
        if len(lines) < 5:
            continue
        i = rng.randrange(len(lines))
        line = lines[i]
        body = line.strip()
        if len(body) < min_rest + 2 or body.startswith(("#", '"', "'")) or len(line) > 200:
            continue
        indent = len(line) - len(line.lstrip())
        cut = indent + rng.randrange(0, len(body) - min_rest + 1)
        start = sum(len(x) + 1 for x in lines[:i])
        jobs.append(HeldOutJob(str(path), text[: start + cut], text[start + cut :], line[cut:]))
    return jobs
