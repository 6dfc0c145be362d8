"""Deterministic work HC-GEMM-v1 (SPEC 1): the formulas, a backend registry (NumPy always,
CuPy when usable) and the mining engine that drives the chosen backend."""
