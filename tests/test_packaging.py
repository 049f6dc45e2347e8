"""Packaging rules: the runtime never imports torch, and the CLI answers --help."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_engine_does_not_import_torch():
    result = run_python(
        "import sys, engine.decode, engine.tokenizer, engine.contract\n"
        "print('torch' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_cli_help_does_not_import_torch():
    result = run_python(
        "import sys\nfrom seed_lsp.cli import build_parser\nbuild_parser()\nprint('torch' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_cli_subcommands_have_help():
    for args in (["--help"], ["train", "--help"], ["sample", "--help"], ["tokenizer", "train", "--help"]):
        result = subprocess.run([sys.executable, "-m", "seed_lsp", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "usage: seed-lsp" in result.stdout


def test_sample_reports_missing_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seed_lsp", "sample", "--checkpoint", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "holds no checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
