"""Proof of compute: Merkle commitment, sampling, proof files and audits (SPEC 2-4)."""
