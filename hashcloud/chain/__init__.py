"""The L1 chain: transactions, blocks, state transition, flat-file store (SPEC 6)."""
