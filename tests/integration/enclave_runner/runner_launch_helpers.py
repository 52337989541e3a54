"""What the earlier stages leave for a runner, made directly: an encrypted, signed, pushed image,
its key and cosign public key in the real KBS, its reference values, and the trail's events."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from nats.js import JetStreamContext

from ccpipe.oci.documents import MEDIA_TYPE_LAYER_GZIP
from ccpipe.oci.layout import OciLayout
from ccpipe.oci.registry import RegistryClient, push_layout
from ccpipe.pipeline.reader import read_events
from ccpipe.pipeline.services import Endpoints
from ccpipe.schemas.config import Settings
from ccpipe.schemas.envelope import Event, Source, Subject
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Signed
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.sign import encrypt_image_for_kbs, sign_image
from ccpipe.stages.sign.keys import public_key_pem
from ccpipe.stages.sign.recipients import kbs_resource_uri
from ccpipe.stages.sign.release import launch_reference_values, reference_values, rvps_message, workload_initdata
from tests.genuine_events import genuine_publisher

TarEntry = tuple[str, str, bytes, int]
"""(kind "file"|"sym"|"chr", name, data or target bytes, mode)."""


def busybox_layer(script: str, extra: list[TarEntry] | None = None) -> bytes:
    """An uncompressed tar: static busybox as /bin/sh, ``script`` as /app/run.sh, then ``extra``."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    entries: list[TarEntry] = [
        ("file", "bin/busybox", Path(busybox).read_bytes(), 0o755),
        ("sym", "bin/sh", b"busybox", 0o777),
        ("file", "app/run.sh", script.encode(), 0o755),
        *(extra or []),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                tar.addfile(info)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def plain_image(layout_dir: Path, layers: list[bytes], *, entrypoint: list[str] | None = None) -> str:
    """An OCI layout with ``layers`` (gzip) and a config running ``/bin/sh /app/run.sh``; returns the digest."""
    lay = OciLayout.create(layout_dir)
    descs = [lay.write_blob(gzip.compress(raw, compresslevel=1, mtime=0), MEDIA_TYPE_LAYER_GZIP) for raw in layers]
    config: dict[str, Any] = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint or ["/bin/sh", "/app/run.sh"], "Env": ["PATH=/bin", "GREETING=hello"],
                   "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in layers]},
    }
    return lay.write_image(config, descs, tag="plain").digest


@dataclass
class Workload:
    """A prepared workload: its id, the pushed image and the scheduled event to launch."""

    workload_id: str
    image_digest: str
    scheduled: Event
    pushed: Pushed
    signed: Signed


async def publish(js: JetStreamContext, settings: Settings, event: Event) -> None:
    """Store an event as its stage would (signed by a component allowed to emit it, de-duplicated on its id)."""
    await genuine_publisher(js, settings.data_dir).publish(event, event.id)


async def prepare_workload(
    js: JetStreamContext, settings: Settings, eps: Endpoints, workload_id: str, work: Path, layers: list[bytes],
    *, node_id: str, signing_key: ec.EllipticCurvePrivateKey | None = None,
    trusted_key: ec.EllipticCurvePrivateKey | None = None, publish_scheduled: bool = False,
) -> Workload:
    """Encrypt, sign, push and register a workload, and store ``pushed``/``signed`` (and ``scheduled``).

    ``signing_key`` signs the image; ``trusted_key``'s public half is what the KBS releases as the
    cosign key (default: the signing key).
    """
    assert eps.kbs_url and eps.registry
    name = workload_id
    repository = f"ccpipe/{name}"
    identity = f"{eps.registry}/{repository}"
    signer = signing_key or ec.generate_private_key(ec.SECP256R1())
    trusted = trusted_key or signer
    plain = work / "plain"
    plain_image(plain, layers)
    kid = kbs_resource_uri("ccpipe", workload_id, "image-key")
    signed_dir = work / "signed"
    enc, key = encrypt_image_for_kbs(f"oci:{plain}:plain", f"oci:{signed_dir}:{name}", kid)
    sig = sign_image(signed_dir, name, signer, identity=identity)
    async with RegistryClient(eps.registry, plain_http=True) as client:
        digest = await push_layout(client, signed_dir, repository, workload_id, source_ref=name)
    assert digest == enc.manifest_digest
    pubkey_uri = kbs_resource_uri("ccpipe", workload_id, "cosign-pubkey")
    _, initdata_hex = workload_initdata(eps.kbs_url, digest, identity, pubkey_uri)
    registrar = KbsAdminClient(eps.kbs_url, admin_key_paths(settings.data_dir)[0])
    # what the sign stage registers with the key: the [tee] requirements (the runners are emulated)
    tee = TeeRequirements(types=[TeeType.SNP, TeeType.TDX, TeeType.SAMPLE], allow_emulated=True)
    await registrar.set_resource(f"ccpipe/{workload_id}/tee-requirements", tee.model_dump_json().encode())
    await registrar.set_resource(f"ccpipe/{workload_id}/image-key", key.kek)
    await registrar.set_resource(f"ccpipe/{workload_id}/cosign-pubkey", public_key_pem(trusted))
    await registrar.set_reference_values(
        rvps_message(workload_id, reference_values(digest, initdata_hex, launch_reference_values()))
    )
    pushed = Pushed(registry=eps.registry, repository=repository, image_digest=digest,
                    reference=f"docker://{eps.registry}/{repository}@{digest}")
    signed = Signed(image_digest=digest, source_image_digest=plain_digest(plain), layout=str(signed_dir),
                    key_resource=kid, signature_digest=sig.manifest_digest, initdata_digest=initdata_hex)
    for etype, payload in ((EventType.SIGNED, signed), (EventType.PUSHED, pushed)):
        await publish(js, settings, Event(type=etype, workload_id=workload_id, source=Source(component="test"),
                                          subject=Subject(image_digest=digest), payload=payload))
    scheduled = Event(
        type=EventType.SCHEDULED, workload_id=workload_id, source=Source(component="scheduler"),
        subject=Subject(image_digest=digest, node=node_id),
        payload=Scheduled(node_id=node_id, tee=TeeType.SNP, backend="emulated"),
    )
    if publish_scheduled:
        await publish(js, settings, scheduled)
    return Workload(workload_id, digest, scheduled, pushed, signed)


def plain_digest(layout_dir: Path) -> str:
    """The digest of the plain image in ``layout_dir``."""
    return OciLayout.open(layout_dir).resolve("plain").digest


async def trail(js: JetStreamContext, workload_id: str) -> list[Event]:
    """The workload's stored events, in order."""
    return [s.event for s in await read_events(js, workload_id) if s.event is not None]


def types(events: list[Event]) -> list[str]:
    """Their types, in order."""
    return [e.type.value for e in events]
