"""The node agent: TEE evidence backends, RCAR client, image pull/verify/decrypt/unpack, sandbox."""
