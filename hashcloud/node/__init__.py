"""The node: PoC validator and chain node behind a FastAPI HTTP API (SPEC 3, 6, 7)."""
