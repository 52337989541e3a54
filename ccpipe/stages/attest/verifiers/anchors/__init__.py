"""Vendor trust anchors shipped as data files beside the verifiers (never fetched).

- ``amd_<product>.pem``: AMD's ASK, ARK and ASVK for Milan, Genoa and Turin (in that order),
  as published by AMD's key distribution service.
- ``intel_sgx_root_ca.pem``: the Intel SGX Root CA every PCK and TCB-signing chain ends at
  (SHA-256 fingerprint ``44a0196b…cfab674d3``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def anchor_bytes(name: str) -> bytes:
    """The bytes of one shipped anchor file; raises ``FileNotFoundError`` for an unknown name."""
    return resources.files(__name__).joinpath(name).read_bytes()
