"""ccpipe: an event-driven supply chain for confidential workloads.

The one top-level import name of the distribution. Its packages follow the flow:
``ccpipe.schemas`` (the contract), ``ccpipe.pipeline`` (runtime, audit trail and assembly),
``ccpipe.stages.build|attest|sign|deploy``, ``ccpipe.enclave_runner`` (the node agent) and
``ccpipe.evidence`` (the TEE evidence formats the verifiers and the node agent's backends share).
"""
