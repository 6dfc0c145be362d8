"""Talking to a node: the HTTP client and the miner's side of an online round (SPEC 3, 6)."""
