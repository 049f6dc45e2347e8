"""`python -m lsp_server`: the language server over stdio (or --tcp HOST:PORT)."""

from lsp_server.server import main

raise SystemExit(main())
