"""Deterministic work HC-GEMM-v1 (SPEC 1) over an array module `xp` (NumPy or CuPy)."""
