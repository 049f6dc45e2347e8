"""Names shared by the model, the exporter and the engine, defined once.

Special tokens of the tokenizer and the ONNX graph's input/output names. The
torch side (model/) and the runtime side (engine/) both import from here so a
rename cannot silently split them.
"""

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
