"""HashCloud: an open GPU proof-of-compute toolkit (see SPEC.md, protocol v1).

Layers, each importing only those below it (kept by import-linter, see pyproject.toml):
`cli` -> `client` / `node` -> `api` -> `chain` -> `poc` -> `engine` / `crypto` ->
`codec` / `fsutil` -> `types` -> `errors`. Only `cli` prints; the core never imports typer,
rich, fastapi or a backend module. The README's layout section maps SPEC sections to modules.
"""

__version__ = "0.1.0"
