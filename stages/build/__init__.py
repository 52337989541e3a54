"""Build stage: reproducible OCI images, SLSA provenance, attested build runner."""
