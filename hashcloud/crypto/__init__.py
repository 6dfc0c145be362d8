"""Keys, signatures, addresses and the keystore (SPEC 5)."""
