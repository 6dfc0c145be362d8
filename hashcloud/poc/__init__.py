"""Proof of compute: challenges, sampling, the one audit, receipts, proof files, the miner's
round and offline verification (SPEC 3, 4)."""
