"""The benchmarks' held-out inputs: a missing corpus is a one-line error before any work starts."""

from __future__ import annotations

import json

import pytest

from bench.heldout import heldout_files, line_jobs


def test_missing_corpus_names_the_manifest_and_the_fix(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        heldout_files(str(tmp_path / "no_corpus"))
    message = str(exit_info.value)
    assert "manifest.json not found" in message and "seed-lsp corpus build" in message


def test_val_split_files_of_a_manifest_become_jobs(tmp_path):
    held_out = tmp_path / "held_out.py"
    held_out.write_text("def area(width, height):\n    return width * height\n\n\n"
                        "def perimeter(width, height):\n    return 2 * (width + height)\n")
    trained = tmp_path / "trained.py"
    trained.write_text("x = 1\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"path": str(held_out), "split": "val"}, {"path": str(trained), "split": "train"}]
    (corpus / "manifest.json").write_text(json.dumps({"files": rows}))
    assert heldout_files(str(corpus)) == [held_out]
    jobs = line_jobs([held_out], 3, seed=0)
    assert jobs and all(job.prefix + job.suffix == held_out.read_text() for job in jobs)
