"""Protocol constants and shared defaults that cost nothing to import.

The n-range of SPEC 1 and the default key name are read by the CLI's option defaults, which
must not pull in pydantic, NumPy or the key libraries just to print `--help`; the rules that
use them (`types.validate_n`, `types.MatrixSize`, the keystore) import them from here, so each
value is written once.
"""

MIN_N = 64
"""Smallest matrix size (SPEC 1)."""

MAX_N = 4096
"""Largest matrix size (SPEC 1); every partial sum stays below 2**24 up to here."""

N_STEP = 64
"""Matrix sizes are multiples of this (SPEC 1)."""

DEFAULT_N = 1024
"""Default matrix size (SPEC 1)."""

DEFAULT_KEY_NAME = "default"
"""The key file used when no `--key`/`--name` is given (`<home>/keys/default.json`)."""

MAX_S_MAX = 256
"""Largest sample count a round may use: the most samples a reveal carries and a proof file's
issuer may declare (SPEC 3 `s_max`, default 256, bounds the reveal's bandwidth)."""

BACKEND_NAMES = ("auto", "numpy", "cupy")
"""The `--backend` choices: `auto` picks CuPy when a CUDA device works, else NumPy (SPEC 1)."""

AUDIT_MODES = ("rows", "full")
"""How audited samples are checked (SPEC 3 v1.1): `rows` (the default: recompute drawn rows of
the revealed outputs) or `full` (recompute whole leaves, as in v1)."""

DEFAULT_AUDIT_ROWS = 16
"""Default `k`, the rows recomputed per audited sample (SPEC 3 v1.1: `k = min(n, 16)`)."""

MAX_LOOPS = 2**40
"""Most loops one commitment may claim (far above any real round; keeps every index and count
inside what the canonical encoding and the JSON edges carry exactly)."""

DEFAULT_EPOCH_ROWS = 100
"""Payout (or pending) rows an epoch view carries when the caller names no limit
(`chain.rewards.epoch_view`, `GET /v1/epochs/{n}`, `hashcloud epoch`)."""

MAX_EPOCH_ROWS = 1000
"""Most rows one epoch view carries: an epoch has a row per payout address, and each audited
claim may name a new one, so a whole epoch is read page by page."""
