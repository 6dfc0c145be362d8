"""Keys, signatures, addresses, the keystore and the RFC 6962 Merkle tree (SPEC 2, 5)."""
