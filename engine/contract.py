"""Names shared by the model, the exporter and the engine, defined once.

Special tokens of the tokenizer and the ONNX graph's input/output names. The
torch side (model/) and the runtime side (engine/) both import from here so a
rename cannot silently split them.
"""

from dataclasses import dataclass

PAD = "<|pad|>"
MASK = "<|mask|>"
BOS = "<|bos|>"
EOS = "<|eos|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"

# Order fixes the ids: the tokenizer trainer adds them first, so PAD is 0, MASK 1, ...
SPECIAL_TOKENS = (PAD, MASK, BOS, EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)

# ONNX graph I/O (see DESIGN.md, "ONNX contract").
INPUT_IDS = "input_ids"                  # int64 [batch, q]
POSITION_IDS = "position_ids"            # int64 [batch, q]
ATTENTION_MASK = "attention_mask"        # bool  [batch, 1, q, past + q], True = may attend
LOGITS = "logits"                        # float [batch, q, vocab]


def past_key_name(layer: int) -> str:
    """Input holding layer `layer`'s cached keys, [batch, kv_heads, past, head_dim]."""
    return f"past_key_values.{layer}.key"


def past_value_name(layer: int) -> str:
    """Input holding layer `layer`'s cached values, [batch, kv_heads, past, head_dim]."""
    return f"past_key_values.{layer}.value"


def new_key_name(layer: int) -> str:
    """Output holding the keys of the q input positions only (not past + q)."""
    return f"new_key_values.{layer}.key"


def new_value_name(layer: int) -> str:
    """Output holding the values of the q input positions only (not past + q)."""
    return f"new_key_values.{layer}.value"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, rank and numpy element type."""

    name: str
    rank: int
    dtype: str  # numpy dtype name: "int64", "bool", "float32"


def expected_io(n_layers: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of the step graph, in the contract's order.

    The exporter names the graph's inputs/outputs from this list and the runtime
    checks a loaded session against it, so the two cannot drift apart.
    """
    inputs = [TensorSpec(INPUT_IDS, 2, "int64"), TensorSpec(POSITION_IDS, 2, "int64"), TensorSpec(ATTENTION_MASK, 4, "bool")]
    outputs = [TensorSpec(LOGITS, 3, "float32")]
    for layer in range(n_layers):
        inputs += [TensorSpec(past_key_name(layer), 4, "float32"), TensorSpec(past_value_name(layer), 4, "float32")]
        outputs += [TensorSpec(new_key_name(layer), 4, "float32"), TensorSpec(new_value_name(layer), 4, "float32")]
    return inputs, outputs
