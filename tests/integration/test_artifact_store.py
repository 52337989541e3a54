"""Artifacts move by digest through the object store, against a real nats-server with authentication on.

The build host and the sign host have data directories of their own. What must hold: the sign
host gets exactly the layout the build host stored, only the enrolled sign key opens it, what the
bucket holds is ciphertext to anyone reading NATS, a replaced object is refused by digest, and
only the identities that hand layouts on may write the bucket.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError, ObjectNotFoundError

from ccpipe.pipeline.artifacts import (
    ArtifactError,
    ArtifactRef,
    fetch_layout,
    forget_artifact,
    load_or_create_sealing_key,
    read_stored,
    sealing_public_jwk,
    sealing_recipients,
    store_layout,
)
from ccpipe.pipeline.bus import EVENTS_STREAM, connect_as
from ccpipe.pipeline.enrolment_bus import enrol, mirrored_enrolments
from ccpipe.pipeline.event_signature import load_or_create_component_key
from ccpipe.pipeline.nats_auth import ADMIN, ARTIFACTS
from tests.integration.conftest import Installed

pytestmark = pytest.mark.integration
SECRET = b"plaintext layer: the workload's own code" * 50


def _layout(root: Path) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "blobs" / "sha256" / ("cd" * 32)).write_bytes(SECRET)
    return root


async def test_a_sealed_layout_reaches_the_enrolled_sign_host_and_nobody_else(installed: Installed,
                                                                             tmp_path: Path) -> None:
    build = installed.host("build-host-a", "build")
    sign = installed.host("sign-host-a", "sign")
    nc = await connect_as(installed.admin, installed.url, ADMIN)
    try:  # the admin enrols the sign host's event and sealing keys, as 'ccpipe admin enrol sign KEY,SEALING' does
        await enrol(nc.jetstream(), installed.admin.data_dir, "sign",
                    load_or_create_component_key(sign.data_dir, "sign").public_key,
                    sealing_public_jwk(sign.data_dir, "sign"))
    finally:
        await nc.close()
    builder = await connect_as(build, installed.url, "build")
    signer = await connect_as(sign, installed.url, "sign")
    operator = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        async with mirrored_enrolments(build, installed.url, "build"):
            recipients = sealing_recipients(build.data_dir, "sign")
        ref = await store_layout(builder.jetstream(), "wl-art", "plain", _layout(tmp_path / "plain"), recipients)
        # whoever reads NATS sees ciphertext only
        assert SECRET[:40] not in await read_stored(operator.jetstream(), ref.name)
        got = await fetch_layout(signer.jetstream(), ref, sign.data_dir / "plain",
                                 unseal_with=load_or_create_sealing_key(sign.data_dir, "sign"))
        assert (got / "blobs" / "sha256" / ("cd" * 32)).read_bytes() == SECRET
        # another host's key (not enrolled) cannot open it
        with pytest.raises(ArtifactError, match="does not open"):
            await fetch_layout(signer.jetstream(), ref, tmp_path / "stranger",
                               unseal_with=load_or_create_sealing_key(tmp_path / "stranger-host", "sign"))
        # used, it is purged by its consumer: nothing piles up on disk
        await forget_artifact(signer.jetstream(), ref)
        with pytest.raises((ObjectNotFoundError, NotFoundError)):
            await read_stored(operator.jetstream(), ref.name)
        # and that purge is the only one the sign credential holds: the trail is out of its reach
        with pytest.raises((NatsError, TimeoutError)):
            await signer.jetstream().purge_stream(EVENTS_STREAM)
    finally:
        for c in (builder, signer, operator):
            await c.close()


async def test_a_replaced_object_is_refused_by_the_digest_its_event_names(installed: Installed,
                                                                         tmp_path: Path) -> None:
    build = installed.host("build-host-b", "build")
    push = installed.host("push-host-b", "push")
    builder = await connect_as(build, installed.url, "build")
    pusher = await connect_as(push, installed.url, "push")
    try:
        ref = await store_layout(builder.jetstream(), "wl-swap", "signed", _layout(tmp_path / "signed"))
        # a build credential (or anyone who can write the bucket) puts other bytes under that name
        store = await builder.jetstream().object_store(ARTIFACTS)
        with contextlib.suppress(NatsError, TimeoutError):
            # the new chunks and metadata are stored; only the purge of the old chunks is refused
            await store.put(ref.name, b"an image of the attacker's choosing")
        assert await read_stored(pusher.jetstream(), ref.name) == b"an image of the attacker's choosing"
        with pytest.raises(ArtifactError, match="not the sha256:"):
            await fetch_layout(pusher.jetstream(), ref, push.data_dir / "signed")
        assert not (push.data_dir / "signed").exists()
        # the push credential may read the bucket but not write it
        with pytest.raises((NatsError, TimeoutError)):
            pstore = await pusher.jetstream().object_store(ARTIFACTS)
            await pstore.put("wl-swap/signed/forged", b"x")
        with pytest.raises(ArtifactError, match="is not in"):
            await fetch_layout(pusher.jetstream(), ArtifactRef("wl-swap/signed/forged", "sha256:" + "0" * 64),
                               push.data_dir / "forged")
    finally:
        await builder.close()
        await pusher.close()
