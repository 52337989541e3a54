"""Attestation service (verifiers, reference values, policy) and the Key Broker Service."""
