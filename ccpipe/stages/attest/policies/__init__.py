"""Shipped Rego policies (package data): the default attestation and resource policies."""
