"""Turns a torch checkpoint into an engine bundle: ONNX graph, variants, manifest, verification.

Torch lives here (and in model/), never in engine/: the server only reads the
bundle this package writes.
"""
