"""TEE evidence formats: the one home of what evidence looks like, for everyone who reads or makes it.

The node agent's backends (``ccpipe.enclave_runner.tee``) produce evidence in these formats, the
attestation verifiers (``ccpipe.stages.attest.verifiers``) parse it, the build stage and the KBS
client hold a backend through :mod:`.interface`, and the sign and attest stages compute reference
values with :mod:`.measurement` and initdata digests with :mod:`.initdata`. One module per format;
see README.md. Pure: bytes in, dataclasses out, no network; imports only :mod:`ccpipe.schemas`,
``cryptography``, ``orjson`` and ``tomli_w``, never another part of ccpipe.
"""
