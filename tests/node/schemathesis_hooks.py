"""Schemathesis hooks of `test_openapi.py` (loaded by the schemathesis CLI it runs).

The node's document names addresses with the `cpc-address` format (`node.openapi`): a
pattern cannot express a bech32 checksum, so positive test data needs real addresses.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from hashcloud.types import address_from_payload

schemathesis.openapi.format(
    "cpc-address", st.binary(min_size=20, max_size=20).map(address_from_payload))
