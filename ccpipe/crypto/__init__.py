"""Shared cryptography: JOSE (:mod:`ccpipe.crypto.jose`) and Ed25519 verification (:mod:`ccpipe.crypto.ed25519`).

One home for each, used by every stage and by the audit trail; imports nothing of the project
outside this package.
"""
