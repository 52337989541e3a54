"""The runner's family of errors: unpacking, the sandbox and the launch flow.

Every leaf has a stable dotted code (``runner.…``). The class decides what the stage runtime
does: :class:`~ccpipe.schemas.errors.TransientError` leaves are retried (a registry or KBS that does
not answer), every other leaf fails the workload with one ``failed`` event. The TEE backends
keep their own family (:mod:`ccpipe.enclave_runner.tee.errors`, codes ``tee.*``).

Imports only :mod:`schemas`.
"""

from __future__ import annotations

from ccpipe.schemas.errors import CcpipeError, ConfigurationError, InvalidInput, TransientError


class RunnerError(CcpipeError):
    """Base of every error raised by the runner outside its TEE backends."""

    code = "runner.error"


# --- unpacking ---------------------------------------------------------------------------------


class UnpackError(RunnerError, InvalidInput):
    """A layer cannot be unpacked; the message names the layer and the entry."""

    code = "runner.unpack"
    default_hint = "the image's layers are refused as they are; rebuild the image from trusted sources"


class UnsafeLayerEntry(UnpackError):
    """A layer entry would escape the root, or is a kind the runner never creates (device, fifo)."""

    code = "runner.unpack.unsafe"
    default_hint = (
        "the layer tries to write outside the image root or to create a device; "
        "rebuild the image without that entry"
    )


class LayerLimitExceeded(UnpackError):
    """The image has more entries or bytes than the unpack limits allow."""

    code = "runner.unpack.limit"
    default_hint = "make the image smaller, or raise the runner's unpack limits"


class LayerFormatError(UnpackError):
    """A layer is not a readable tar stream of a supported media type, or does not match its diff_id."""

    code = "runner.unpack.format"
    default_hint = "push the image again; only uncompressed and gzip tar layers are supported"


# --- joining the inventory ---------------------------------------------------------------------


class NodeNotAdmitted(RunnerError):
    """The attestation service refused the node's evidence: the node does not join the inventory."""

    code = "runner.join.refused"
    default_hint = "see the attestation service's reason; a node with emulated evidence needs CCPIPE_ALLOW_EMULATED"


class JoinUnavailable(RunnerError, TransientError):
    """No attestation service answered the node's join."""

    code = "runner.join.unavailable"
    default_hint = "start the KBS (ccpipe up), which admits runner nodes, and check the NATS URL and credentials"


# --- sandbox -----------------------------------------------------------------------------------


class SandboxError(RunnerError):
    """The workload could not be started in its sandbox."""

    code = "runner.sandbox"
    default_hint = "check the image's entrypoint, cmd, workdir and user"


class SandboxUnavailable(SandboxError, ConfigurationError):
    """bubblewrap is missing or cannot create namespaces on this machine."""

    code = "runner.sandbox.unavailable"
    default_hint = "install bubblewrap (bwrap) and allow unprivileged user namespaces"


class SandboxLimitsUnavailable(SandboxError, ConfigurationError):
    """The runner cannot bound the sandbox's processes and memory, and best-effort limits were not allowed."""

    code = "runner.sandbox.limits"
    default_hint = (
        "delegate a cgroup v2 subtree with the pids and memory controllers to the runner "
        "(CCPIPE_SANDBOX_CGROUP, or the runner's own cgroup), or set CCPIPE_SANDBOX_LIMITS=best-effort "
        "to run workloads with the limits that can be set"
    )


# --- launch flow -------------------------------------------------------------------------------


class LaunchError(RunnerError):
    """Base of failures of the launch flow (attestation, keys, image)."""

    code = "runner.launch"


class KbsRefused(LaunchError):
    """The KBS did not release a resource: attestation rejected or policy denied."""

    code = "runner.kbs.refused"
    default_hint = (
        "the enclave's evidence or measurements do not match what the KBS expects; "
        "see the attestation.rejected / key.denied event for the reason"
    )


class KbsUnavailable(LaunchError, TransientError):
    """The KBS did not answer."""

    code = "runner.kbs.unavailable"
    default_hint = "check that the KBS is running and reachable (ccpipe endpoints)"


class ImageNotTrusted(LaunchError):
    """The image's signature does not verify with the key the KBS released; nothing was decrypted."""

    code = "runner.verify.untrusted"
    default_hint = "sign the image with the key registered for this workload in the KBS"


class ImagePullFailed(LaunchError, TransientError):
    """The registry did not deliver the image."""

    code = "runner.pull.failed"
    default_hint = "check that the registry named in the pushed event is running"


class ImageInvalid(LaunchError, InvalidInput):
    """The pulled image cannot be decrypted or is not a single-platform OCI image."""

    code = "runner.image.invalid"
    default_hint = "push an OCI image encrypted for this workload's KBS key"


class LaunchInputMissing(LaunchError, InvalidInput):
    """An earlier event the launch needs (pushed, signed, submitted) is missing or incomplete."""

    code = "runner.input.missing"
    default_hint = "the earlier stages have not completed for this workload; resubmit it"


__all__ = [
    "ImageInvalid",
    "ImageNotTrusted",
    "ImagePullFailed",
    "KbsRefused",
    "KbsUnavailable",
    "LaunchError",
    "LaunchInputMissing",
    "LayerFormatError",
    "LayerLimitExceeded",
    "RunnerError",
    "SandboxError",
    "SandboxLimitsUnavailable",
    "SandboxUnavailable",
    "UnpackError",
    "UnsafeLayerEntry",
]
