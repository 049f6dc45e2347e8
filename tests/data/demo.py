"""A small file to try completions on: `seed-lsp complete tests/data/demo.py:17:5`."""

import os


def list_python_files(folder):
    """Every .py file under folder, sorted."""
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                found.append(os.path.join(root, name))
    return sorted(found)


def count_lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)
