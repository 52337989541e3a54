"""Errors of the deploy stage, with stable dotted codes.

The registry client's errors (``deploy.registry.*``, ``deploy.layout.invalid``) are in
:mod:`ccpipe.oci.registry.errors`; this module holds the push step's own.

Imports nothing of the project but ``ccpipe.schemas.errors`` and ``ccpipe.oci.registry.errors``.
"""

from __future__ import annotations

from ccpipe.oci.registry.errors import RegistryTransientError
from ccpipe.schemas.errors import CcpipeError


class DeployError(CcpipeError):
    """Base of every error raised by ``ccpipe.stages.deploy``."""

    code = "deploy.error"


# --- the push step -----------------------------------------------------------------------------


class SignatureNotInLayout(DeployError):
    """The signed layout lacks the signature the ``signed`` event names (or holds another one)."""

    code = "deploy.push.signature_missing"
    default_hint = "the sign stage's output was changed or removed; resubmit the workload"


class PushIncomplete(RegistryTransientError):
    """The registry did not show a manifest right after it accepted it (retried)."""

    code = "deploy.push.incomplete"
