"""The node agent: TEE evidence backends, RCAR client, image pull/verify/decrypt/unpack, sandbox.

Entry points (see README.md): :func:`enclave_runner.agent.serve_node_agent` (service factory),
:class:`enclave_runner.launch.Launcher` (the launch flow), :func:`enclave_runner.unpack.unpack_layers`
(safe unpacking), :func:`enclave_runner.sandbox.run_sandboxed` (bubblewrap sandbox).
"""
