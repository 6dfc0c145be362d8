"""HashCloud: an open GPU proof-of-compute toolkit (see SPEC.md, protocol v1).

Layout: `engine` (deterministic GEMM work), `poc` (Merkle commitment, proofs, audits),
`chain` (transactions, blocks, store), `node` (HTTP validator + chain node), `crypto`
(keys, signatures, addresses) and `cli` (the `hashcloud` command). Only `cli` prints.
"""

__version__ = "0.1.0"
