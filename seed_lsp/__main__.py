"""`python -m seed_lsp` is the same as the `seed-lsp` console script."""

from seed_lsp.cli import main

raise SystemExit(main())
