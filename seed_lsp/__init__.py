"""The `seed-lsp` command line: one entry point dispatching to the project's parts."""
