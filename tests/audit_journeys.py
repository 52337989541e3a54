"""Synthetic but realistic workload journeys: the events of the whole flow, signed by their
components. A test fixture: used by the audit tests and benchmarks (``bench/audit_*.py``, which
put the repository root on ``sys.path``), never by the product.

A journey is ``submitted → built → signed → pushed → scheduled → attestation.verified →
key.released → enclave.launched → workload.running → workload.exited`` with digests, key
resources, nodes, TEEs and backends that vary with the workload number, so queries have
realistic selectivity (one image per workload, keys shared by no one, a few hundred nodes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ccpipe.pipeline.audit.event_signing import Keyring, keyring_from
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from ccpipe.schemas import events as ev
from ccpipe.schemas.envelope import Event, Source, Subject
from ccpipe.schemas.failure import FailureReason
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import parse_workload_spec

COMPONENTS = ("submit", "build", "sign", "push", "schedule", "attest", "kbs", "runner")
_SPEC = parse_workload_spec(
    '[workload]\nname = "hello"\n[build]\nentrypoint = ["/app/hello.sh"]\n'
    '[[build.copy]]\nsrc = "app/"\ndst = "/app/"\n[tee]\ntypes = ["snp", "tdx"]\nallow_emulated = true\n'
)
_TEES = (TeeType.SNP, TeeType.TDX)
_T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _digest(*parts: object, alg: str = "sha256") -> str:
    return f"{alg}:" + hashlib.new(alg, "/".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Names:
    """The identifiers of workload number ``n`` (what a test queries for)."""

    n: int

    @property
    def workload_id(self) -> str:
        """hello-<n, 8 digits>."""
        return f"hello-{self.n:08d}"

    @property
    def commit(self) -> str:
        """The pushed commit (SHA-1 hex)."""
        return hashlib.sha1(f"commit{self.n}".encode()).hexdigest()

    @property
    def plain_image(self) -> str:
        """Digest of the image the build produced."""
        return _digest("plain", self.n)

    @property
    def image(self) -> str:
        """Digest of the encrypted, signed image (what runs)."""
        return _digest("enc", self.n)

    @property
    def key(self) -> str:
        """KBS resource of the image key, repo/type/tag."""
        return f"ccpipe/image-key/{self.workload_id}"

    @property
    def node(self) -> str:
        """The node it runs on (300 nodes in all)."""
        return f"node-{self.n % 300:03d}"

    @property
    def tee(self) -> TeeType:
        """SNP for even workloads, TDX for odd ones."""
        return _TEES[self.n % 2]


class Signers:
    """One event key per component, and the keyring that trusts them."""

    def __init__(self) -> None:
        self.keys = {c: ComponentKey.generate(c) for c in COMPONENTS}
        self.keyring: Keyring = keyring_from(self.keys.values())

    def header(self, event: Event, data: bytes) -> str:
        """The ``Ccpipe-Signature`` of ``data`` by the key of the event's component."""
        return signature_header(self.keys[event.source.component], data)


def journey(n: int, *, denied: bool = False) -> list[Event]:
    """The events of workload ``n``; with ``denied`` the attestation is rejected instead."""
    w = Names(n)
    t = _T0 + timedelta(seconds=n)
    wl = w.workload_id

    def e(component: str, payload: ev._Payload, etype: ev.EventType, dt: float, **subject: str) -> Event:
        return Event(type=etype, workload_id=wl, occurred_at=t + timedelta(seconds=dt),
                     source=Source(component=component, instance="host-1"),
                     subject=Subject(**subject), payload=payload)

    evidence = ev.Evidence(tee=w.tee, backend="emulated", emulated=True, evidence="AAAA", report_data="00" * 64)
    out = [
        e("submit", ev.Submitted(repo="/srv/git/hello.git", ref="refs/heads/main", old_commit="0" * 40,
                                 new_commit=w.commit, pusher="alice", spec=_SPEC), ev.EventType.SUBMITTED, 0,
          commit=w.commit),
        e("build", ev.Built(image_digest=w.plain_image, layout=f"/data/build/{wl}", provenance={"_type": "x"},
                            provenance_digest=_digest("prov", n, alg="sha384"), runner_evidence=evidence),
          ev.EventType.BUILT, 1.5, image_digest=w.plain_image),
        e("sign", ev.Signed(image_digest=w.image, source_image_digest=w.plain_image, layout=f"/data/sign/{wl}",
                            key_resource=f"kbs:///{w.key}", signature_digest=_digest("sig", n),
                            initdata_digest="ab" * 32), ev.EventType.SIGNED, 2.0, image_digest=w.image),
        e("push", ev.Pushed(registry="127.0.0.1:5000", repository=f"ccpipe/{wl}", image_digest=w.image,
                              reference=f"docker://127.0.0.1:5000/ccpipe/{wl}@{w.image}"),
          ev.EventType.PUSHED, 2.5, image_digest=w.image),
        e("schedule", ev.Scheduled(node_id=w.node, tee=w.tee, backend="emulated", reason="capacity"),
          ev.EventType.SCHEDULED, 2.6, node=w.node),
    ]
    if denied:
        reason = FailureReason(stage="attest", code="attest.measurement", message="launch measurement differs")
        out.append(e("attest", ev.AttestationRejected(tee=w.tee, backend="emulated", reason=reason),
                      ev.EventType.ATTESTATION_REJECTED, 3.0, node=w.node))
        out.append(e("kbs", ev.KeyDenied(resource=w.key, node_id=w.node, reason=reason),
                     ev.EventType.KEY_DENIED, 3.1, key_id=w.key, node=w.node))
        return out
    verified = e("attest", ev.AttestationVerified(tee=w.tee, backend="emulated", emulated=True,
                                                  evidence_digest=_digest("evidence", n),
                                                  claims={"measurement": "cd" * 48}, ear_status="affirming"),
                 ev.EventType.ATTESTATION_VERIFIED, 3.0, node=w.node)
    out += [
        verified,
        e("kbs", ev.KeyReleased(resource=w.key, node_id=w.node, attestation_event_id=verified.id,
                                   recipient_key_digest=_digest("eph", n)), ev.EventType.KEY_RELEASED, 3.1,
          key_id=w.key, node=w.node),
        e("runner", ev.EnclaveLaunched(node_id=w.node, tee=w.tee, backend="emulated"),
          ev.EventType.ENCLAVE_LAUNCHED, 3.5, node=w.node),
        e("runner", ev.WorkloadRunning(node_id=w.node, image_digest=w.image), ev.EventType.WORKLOAD_RUNNING, 4.0,
          node=w.node, image_digest=w.image),
        e("runner", ev.WorkloadExited(node_id=w.node, exit_code=0, duration_s=1.25,
                                      output_digest=_digest("out", n)), ev.EventType.WORKLOAD_EXITED, 5.25,
          node=w.node),
    ]
    return out


def signed_messages(signers: Signers, first: int, count: int) -> Iterator[tuple[bytes, str]]:
    """``(canonical bytes, Ccpipe-Signature)`` of the journeys of workloads ``first …`` (every
    tenth one denied), ``count`` workloads."""
    for n in range(first, first + count):
        for event in journey(n, denied=n % 10 == 9):
            data = event.canonical_bytes()
            yield data, signers.header(event, data)
