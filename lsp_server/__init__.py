"""The language server (pygls): handlers over pure functions."""
