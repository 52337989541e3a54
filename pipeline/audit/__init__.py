"""The audit trail: Merkle log of every event, signed checkpoints, index, queries, proofs."""
