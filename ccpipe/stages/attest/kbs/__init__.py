"""The Key Broker Service: Trustee's RCAR protocol over HTTP, sealed resources, audited releases.

Entry points: :func:`~ccpipe.stages.attest.kbs.service.serve_kbs` (the service factory for ``ccpipe
up``), :func:`~ccpipe.stages.attest.kbs.client.fetch_resource` and
:class:`~ccpipe.stages.attest.kbs.client.KbsSession` (the enclave runner's client), and
:class:`~ccpipe.stages.attest.kbs.admin_client.KbsAdminClient` (the sign stage's admin client).
Data flow: ``http`` → ``core`` (auth/attest: ``sessions``, ``binding``, ``appraiser`` →
``attestation``, ``tokens``) and ``resources`` (``release`` policy, ``store``, the JWE of
:mod:`ccpipe.crypto.jose`), with
``audit`` storing an event before every answer.
"""
