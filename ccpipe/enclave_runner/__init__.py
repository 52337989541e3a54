"""The node agent: TEE evidence backends, RCAR client, image pull/verify/decrypt/unpack, sandbox.

Entry points (see README.md): :func:`ccpipe.enclave_runner.agent.serve_node_agent` (service factory),
:class:`ccpipe.enclave_runner.launch.Launcher` (the launch flow), :func:`ccpipe.enclave_runner.unpack.unpack_layers`
(safe unpacking), :func:`ccpipe.enclave_runner.sandbox.run.run_sandboxed` (bubblewrap sandbox).
"""
