"""The SPEC 1 golden leaves, embedded so an installed package can check itself.

From the shared vectors `spec_v1.json`: key "gemm" (n = 64, 64, 128, 256) and key
"gemm_large" (n = 1024, 4096). `selftest`, the CuPy backend's start-up path check and
`scripts/gpu_check.py` compare against these; tests/engine/test_vectors.py checks that they
equal the vector file.
"""

from __future__ import annotations

__all__ = ["GOLDEN_LARGE", "GOLDEN_LEAVES"]

_ZERO_SEED = "0" * 64
_SHA_TEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

GOLDEN_LEAVES: tuple[tuple[str, int, int, str], ...] = (
    (_ZERO_SEED, 0, 64, "5add7eac8d79372f49b36d59ae2f5aaee3cdf42467526ed0dd228b82234d9c91"),
    (_ZERO_SEED, 1, 64, "5429718d15f99ace6a683ec4e86b62df1c2c6ea3070d7e9783e2cdc2945cca69"),
    (_SHA_TEST, 7, 128, "e4f3f646ef741dee3073e40beab61c87b8558d4d5633fc128e6a83ade18b0a67"),
    (_SHA_TEST, 12345, 256, "23c61fc3e07f087472cf0f29460b3512dabca12a37c7775c41406f9658298b64"),
)
"""(seed, i, n, leaf hex) of the "gemm" vectors."""

GOLDEN_LARGE: tuple[tuple[str, int, int, str], ...] = (
    (_ZERO_SEED, 0, 1024, "59a22f0e21acff2c6be1eb86472aefa1efc1e2b83662c628924550e0bd8d3cb5"),
    (_ZERO_SEED, 0, 4096, "f763d0f36b2d5029f76380cc372c60dd297843641724023660d7609a1bab9322"),
)
"""(seed, i, n, leaf hex) of the "gemm_large" vectors."""
