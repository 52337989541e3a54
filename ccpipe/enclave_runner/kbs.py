"""The runner's side of the KBS: one attestation, then the image key and the cosign public key.

The RCAR protocol itself has one home, the KBS client of ``ccpipe.stages.attest.kbs.client``
(:class:`~ccpipe.stages.attest.kbs.client.KbsSession`: ephemeral key per session, report_data =
the protocol's binding of nonce and key, initdata sent along and its digest passed to the
evidence backend as ``host_data``). This module opens one session per launch, fetches the two
resources the sign stage registered (``ccpipe/<workload>/image-key`` and
``ccpipe/<workload>/cosign-pubkey``), times the steps, and maps the client's errors onto the
runner's: a refusal is final (:class:`~ccpipe.enclave_runner.errors.KbsRefused`), an unreachable KBS is
retried a few times and then reported (:class:`~ccpipe.enclave_runner.errors.KbsUnavailable`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, TypeVar

from ccpipe.enclave_runner.errors import KbsRefused, KbsUnavailable, LaunchError
from ccpipe.evidence.interface import EvidenceBackend
from ccpipe.pipeline.telemetry.tracing import inject
from ccpipe.schemas.errors import CcpipeError, TransientError
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.stages.sign.config import COSIGN_PUBKEY_TYPE, IMAGE_KEY_TYPE, resource_path

T = TypeVar("T")
PATIENCE_S = 90.0
"""How long a step waits for a KBS that does not answer before the launch fails: longer than a
restart of ``ccpipe up`` (which serves the KBS) takes on a loaded machine, so a restart mid-launch
does not fail the workload."""
MAX_PAUSE_S = 5.0
"""Longest pause between two tries of a step (exponential from 0.4 s)."""


class KbsSessionLike(Protocol):
    """What the runner needs of an RCAR session (``ccpipe.stages.attest.kbs.client.KbsSession``)."""

    async def __aenter__(self) -> KbsSessionLike: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def attest(self) -> str: ...

    async def get_resource(self, resource_path: str) -> bytes: ...


NodeSigner = Callable[[bytes], bytes]
"""The node key's Ed25519 signing function: proves to the KBS which attested node asks."""


class KbsSessionFactory(Protocol):
    """Makes the session of one launch (the real client by default; a test double where unavoidable)."""

    def __call__(
        self, kbs_url: str, backend: EvidenceBackend, *, workload_id: str, tee: TeeType, init_data: bytes,
        node_id: str, node_signer: NodeSigner | None,
    ) -> KbsSessionLike: ...


def default_session(
    kbs_url: str, backend: EvidenceBackend, *, workload_id: str, tee: TeeType, init_data: bytes, node_id: str,
    node_signer: NodeSigner | None,
) -> KbsSessionLike:
    """A :class:`~ccpipe.stages.attest.kbs.client.KbsSession` (EC P-256 ephemeral key) whose requests
    carry the launch's trace context, so the KBS's events join the workload's trace.

    With ``node_signer`` the session proves its node to the KBS (``ccpipe-node-proof``), which
    then attributes the release to this node; without it the node id is an unproven claim.
    """
    from ccpipe.stages.attest.kbs.client import KbsSession  # the KBS part's pure client

    return KbsSession(kbs_url, backend, workload_id=workload_id, tee=tee, init_data=init_data, node_id=node_id,
                      context_headers=inject, node_signer=node_signer)


@dataclass
class LaunchSecrets:
    """What the KBS released for one launch; the image key can be taken once."""

    cosign_pubkey: bytes
    _image_key: bytearray | None = field(repr=False, default=None)

    def take_image_key(self) -> bytes:
        """The image key (32 bytes); the copy held here is wiped."""
        if self._image_key is None:
            raise LaunchError("the image key was already used", code="runner.kbs.key_reused")
        key = bytes(self._image_key)
        self._image_key[:] = b"\0" * len(self._image_key)
        self._image_key = None
        return key


def _map(exc: CcpipeError, what: str) -> CcpipeError:
    if isinstance(exc, TransientError):
        return KbsUnavailable(f"the KBS did not answer while {what}: {exc.message}")
    if exc.code == "kbs.client.refused":
        return KbsRefused(f"the KBS refused {what}: {exc.message}")
    if exc.code.startswith(("kbs.", "tee.")):
        return LaunchError(f"{what} failed: {exc.message}", hint=exc.hint, code=f"runner.{exc.code}")
    return exc


async def _with_retries(step: str, call: Callable[[], Awaitable[T]], patience_s: float = PATIENCE_S) -> T:
    """Await ``call()`` again while it raises a transient error, for up to ``patience_s`` seconds."""
    deadline = time.monotonic() + patience_s
    for attempt in itertools.count(1):
        try:
            return await call()
        except TransientError as exc:
            pause = min(MAX_PAUSE_S, 0.2 * 2 ** attempt)
            if time.monotonic() + pause > deadline:
                raise _map(exc, step) from exc
            await asyncio.sleep(pause)
        except CcpipeError as exc:
            mapped = _map(exc, step)
            if mapped is exc:
                raise
            raise mapped from exc
    raise AssertionError("unreachable")


async def fetch_launch_secrets(
    kbs_url: str,
    backend: EvidenceBackend,
    initdata: str,
    workload_id: str,
    tee: TeeType,
    *,
    node_id: str,
    node_signer: NodeSigner | None = None,
    factory: KbsSessionFactory | None = None,
    timings: dict[str, float] | None = None,
) -> LaunchSecrets:
    """Attest once, then fetch the image key and the cosign public key; times ``attest`` and ``key``.

    ``node_signer`` (the node key's) proves to the KBS that the request comes from node ``node_id``.

    Raises :class:`KbsRefused` (attestation rejected or release denied: final),
    :class:`KbsUnavailable` (no answer for :data:`PATIENCE_S`) or :class:`LaunchError`.
    """
    make = factory or default_session
    times = timings if timings is not None else {}
    session = make(kbs_url, backend, workload_id=workload_id, tee=tee, init_data=initdata.encode(), node_id=node_id,
                   node_signer=node_signer)
    async with session:
        start = time.perf_counter()
        await _with_retries("attesting this enclave", session.attest)
        times["attest"] = round(time.perf_counter() - start, 6)
        start = time.perf_counter()
        key_path = resource_path(workload_id, IMAGE_KEY_TYPE)
        pub_path = resource_path(workload_id, COSIGN_PUBKEY_TYPE)
        image_key = await _with_retries(f"releasing {key_path}", lambda: session.get_resource(key_path))
        pubkey = await _with_retries(f"releasing {pub_path}", lambda: session.get_resource(pub_path))
        times["key"] = round(time.perf_counter() - start, 6)
    if len(image_key) != 32:
        raise LaunchError(f"the KBS resource {key_path} is {len(image_key)} bytes, not a 32-byte image key",
                          code="runner.kbs.key_invalid")
    return LaunchSecrets(cosign_pubkey=pubkey, _image_key=bytearray(image_key))
