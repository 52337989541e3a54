"""Deploy stage: OCI registry client, node inventory and scheduler, Kubernetes manifests."""
