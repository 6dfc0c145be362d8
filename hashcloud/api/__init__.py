"""HTTP wire models shared by the node and its clients (SPEC 3, 6, 7)."""
