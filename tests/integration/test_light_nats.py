"""The light NATS client of ``ccpipe submit`` against a real nats-server with authentication on.

What must hold: it authenticates with a creds file as nats-py does, what it stores nats-py reads
back (an Object Store object, a published event with its headers), it reads a KV bucket as
``read_records`` does, the stream check agrees with the provisioned stream, and it refuses (for
the caller to fall back) what it does not speak.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from pathlib import Path

import nkeys
import pytest

from ccpipe.pipeline.artifacts import CHUNK_BYTES, artifact_ref, read_stored
from ccpipe.pipeline.bus import EVENTS_STREAM, connect_as
from ccpipe.pipeline.enrolment_bus import enrol, read_records
from ccpipe.pipeline.event_signature import load_or_create_component_key
from ccpipe.pipeline.light_nats import LightNats, LightNatsDecline, LightNatsError, read_creds
from ccpipe.pipeline.nats_auth import ADMIN, ARTIFACTS, ENROLMENTS
from ccpipe.pipeline.quick_submit import _stream_as_provisioned
from tests.integration.conftest import Installed

pytestmark = pytest.mark.integration


def _connect(installed: Installed, identity: str) -> LightNats:
    return LightNats.connect(installed.url, name="light-test", creds=str(installed.creds / f"{identity}.creds"),
                             inbox_prefix=f"_INBOX.{identity}")


def test_the_creds_seed_is_the_one_nkeys_reads_and_a_damaged_one_is_refused(installed: Installed,
                                                                           tmp_path: Path) -> None:
    path = installed.creds / "submit.creds"
    jwt, seed = read_creds(str(path))
    text = path.read_text()
    encoded = text.split("-----BEGIN USER NKEY SEED-----")[1].split()[0]
    assert seed == bytes(nkeys.decode_seed(bytearray(encoded.encode()))[1])
    assert jwt in text and jwt.count(".") == 2
    damaged = tmp_path / "damaged.creds"
    damaged.write_text(text.replace(encoded, encoded[:-3] + ("A" if encoded[-3] != "A" else "B") + encoded[-2:]))
    with pytest.raises(LightNatsError, match="checksum"):
        read_creds(str(damaged))


def test_it_authenticates_with_creds_and_sees_the_stream_as_provisioned(installed: Installed, tmp_path: Path) -> None:
    conn = _connect(installed, "submit")
    try:
        config = conn.stream_info(EVENTS_STREAM)["config"]
        assert _stream_as_provisioned(config)
        assert not _stream_as_provisioned({**config, "deny_purge": False})
        assert not _stream_as_provisioned({**config, "duplicate_window": 60 * 10**9})
        # the submit identity may not read another stream's info: the server's refusal is an error here
        with pytest.raises(LightNatsError):
            conn.stream_info("KV_SOMETHING_ELSE")
    finally:
        conn.close()
    # a creds file the server did not issue is refused at connect
    forged = tmp_path / "forged.creds"
    text = (installed.creds / "submit.creds").read_text()
    forged.write_text(text.replace(text.split("-----BEGIN NATS USER JWT-----")[1].split()[0], "e30.e30.AAAA"))
    with pytest.raises(LightNatsError, match="refused|closed"):
        _connect_path(installed.url, forged)


def _connect_path(url: str, creds: Path) -> LightNats:
    return LightNats.connect(url, name="light-test", creds=str(creds), inbox_prefix="_INBOX.submit")


async def test_an_object_it_stores_reads_back_through_nats_py(installed: Installed) -> None:
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 7)  # three chunks, the last one short
    ref = artifact_ref("light-wl", "source", data)
    conn = _connect(installed, "submit")
    try:
        conn.put_object(ARTIFACTS, ref.name, data, CHUNK_BYTES)
    finally:
        conn.close()
    admin = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        js = admin.jetstream()
        assert await read_stored(js, ref.name) == data
        info = await (await js.object_store(ARTIFACTS)).get_info(ref.name)
        assert (info.size, info.chunks, info.bucket, info.deleted) == (len(data), 3, ARTIFACTS, False)
        assert info.digest == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        assert info.options is not None and info.options.max_chunk_size == CHUNK_BYTES
    finally:
        await admin.close()


async def test_it_reads_a_kv_bucket_as_read_records_does(installed: Installed) -> None:
    admin = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        js = admin.jetstream()
        for name in ("light-a", "light-b"):
            await enrol(js, installed.admin.data_dir, "build",
                        load_or_create_component_key(installed.root / name, "build").public_key)
        kv = await js.key_value(ENROLMENTS)
        keys = await kv.keys()
        await kv.delete(keys[0])  # a deleted key is not a record
        _, expected = await read_records(js)
    finally:
        await admin.close()
    conn = _connect(installed, "submit")
    try:
        assert sorted(conn.read_kv(ENROLMENTS)) == sorted(expected) and len(expected) == len(keys) - 1
    finally:
        conn.close()


async def test_a_published_event_keeps_its_headers_and_a_repeat_is_a_duplicate(installed: Installed) -> None:
    conn = _connect(installed, "submit")
    headers = {"Nats-Msg-Id": "light-evt-1", "Ccpipe-Event-Id": "light-evt-1", "Content-Type": "x/y"}
    try:
        first = conn.publish("ccpipe.evt.light-wl.submitted", b'{"a":1}', headers, stream=EVENTS_STREAM)
        again = conn.publish("ccpipe.evt.light-wl.submitted", b'{"a":1}', headers, stream=EVENTS_STREAM)
        with pytest.raises(LightNatsError):  # a stream that is not the one the subject is stored in
            conn.publish("ccpipe.evt.light-wl.submitted", b"{}", {"Nats-Msg-Id": "x"}, stream="OTHER")
    finally:
        conn.close()
    assert first["stream"] == EVENTS_STREAM and not first.get("duplicate") and again.get("duplicate") is True
    admin = await connect_as(installed.admin, installed.url, ADMIN)
    try:
        msg = await admin.jetstream().get_msg(EVENTS_STREAM, seq=first["seq"])
    finally:
        await admin.close()
    assert msg.data == b'{"a":1}' and msg.headers is not None
    assert {k: msg.headers[k] for k in headers} == headers


def test_it_declines_what_it_does_not_speak() -> None:
    for url in ("tls://127.0.0.1:4222", "ws://127.0.0.1:8080", "nats://user:pw@127.0.0.1:4222"):
        with pytest.raises(LightNatsDecline):
            LightNats.connect(url, name="t", creds=None)
    # a server that requires TLS: declined after its INFO, before anything is sent
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        peer, _ = listener.accept()
        peer.sendall(b"INFO " + json.dumps({"tls_required": True, "headers": True}).encode() + b"\r\n")
        peer.recv(100)
        peer.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(LightNatsDecline):
            LightNats.connect(f"nats://127.0.0.1:{port}", name="t", creds=None)
    finally:
        listener.close()
        thread.join(5)
    # nobody listening: the OSError of the connect, for the caller to fall back
    with pytest.raises(OSError):
        LightNats.connect(f"nats://127.0.0.1:{port}", name="t", creds=None, timeout=2)
