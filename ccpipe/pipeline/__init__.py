"""The backbone: configuration, NATS connection and stream provisioning, embedded servers,
the stage runtime, the git trigger, the CLI and the audit trail.

The runtime modules (settings, bus, runtime, servers) import no stage; the assembly
(``ccpipe.pipeline.app``, ``ccpipe.pipeline.cli``) imports everything and is imported by nothing.
"""
