"""Torch-free runtime: decode loop, bundle loading, tokenizer wrapper, onnxruntime backend.

Depends on numpy, tokenizers and onnxruntime only; the language server and the
benchmarks use it, and the model package provides a torch step function for it.
"""
