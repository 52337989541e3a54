"""Artifacts handed between stages: deterministic packing, safe unpacking, sealing to enrolled keys."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ccpipe.crypto import jose
from ccpipe.pipeline.artifacts import (
    ArtifactError,
    ArtifactRef,
    load_or_create_sealing_key,
    pack_layout,
    seal,
    sealing_recipients,
    unpack_layout,
    unseal,
)
from ccpipe.pipeline.enrolment import init_admin, load_admin_key, new_record, save_records, sign_record
from ccpipe.pipeline.event_signature import ComponentKey
from ccpipe.schemas.errors import ConfigurationError


def _layout(root: Path) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    (root / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"layer bytes" * 1000)
    return root


def test_a_layout_packs_to_the_same_bytes_and_unpacks_to_the_same_tree(tmp_path: Path) -> None:
    a = _layout(tmp_path / "a")
    first = pack_layout(a)
    (a / "index.json").touch()  # a newer mtime changes nothing
    assert pack_layout(a) == first
    back = unpack_layout(first, tmp_path / "back")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*")) == \
        sorted(p.relative_to(a).as_posix() for p in a.rglob("*"))
    assert (back / "blobs" / "sha256" / ("ab" * 32)).read_bytes() == b"layer bytes" * 1000


def _tar(*members: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return buf.getvalue()


@pytest.mark.parametrize("member", ["../escape", "/etc/passwd", "blobs/../../escape"])
def test_a_member_leaving_the_target_is_refused_and_nothing_is_written(tmp_path: Path, member: str) -> None:
    info = tarfile.TarInfo(member)
    info.size = 1
    into = tmp_path / "into"
    with pytest.raises(ArtifactError, match="not a plain file or directory inside the layout"):
        unpack_layout(_tar(info), into)
    assert not into.exists() and not (tmp_path / "escape").exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind


def test_links_and_devices_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("index.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    with pytest.raises(ArtifactError):
        unpack_layout(_tar(link), tmp_path / "into")
    with pytest.raises(ArtifactError, match="not a readable layout archive"):
        unpack_layout(b"not a tar at all" * 64, tmp_path / "into")


def test_a_sealed_artifact_opens_for_each_recipient_and_no_one_else(tmp_path: Path) -> None:
    one, two, stranger = (load_or_create_sealing_key(tmp_path / n, "sign") for n in ("a", "b", "c"))
    blob = seal(b"plaintext layers", [one.public_key(), two.public_key()])
    assert b"plaintext layers" not in blob
    assert unseal(blob, one) == unseal(blob, two) == b"plaintext layers"
    with pytest.raises(ArtifactError, match="does not open with this host's sealing key"):
        unseal(blob, stranger)
    tampered = bytearray(blob)
    tampered[-20] ^= 1
    with pytest.raises(ArtifactError):
        unseal(bytes(tampered), one)
    with pytest.raises(ArtifactError, match="not sealed"):
        unseal(b"plain", one)


def test_the_sealing_recipients_are_the_enrolled_keys_only(tmp_path: Path) -> None:
    build_host = tmp_path / "build"
    admin_public = init_admin(build_host)  # the pinned key (the admin's own directory, for brevity)
    admin = load_admin_key(build_host)
    with pytest.raises(ConfigurationError, match="no sealing key of the sign stage is enrolled"):
        sealing_recipients(build_host, "sign")
    replica = load_or_create_sealing_key(tmp_path / "sign1", "sign")
    record = new_record("sign", ComponentKey.generate("sign").public_key, admin_public,
                        jose.public_jwk(replica))
    save_records(build_host, [sign_record(record, admin)])
    [recipient] = sealing_recipients(build_host, "sign")
    assert recipient.public_numbers() == replica.public_key().public_numbers()
    # revoked: no longer sealed to
    save_records(build_host, [sign_record(record.revoked(), admin)])
    with pytest.raises(ConfigurationError):
        sealing_recipients(build_host, "sign")


def test_an_artifact_reference_names_bucket_name_and_digest() -> None:
    ref = ArtifactRef("wl-1/plain/" + "ab" * 32, "sha256:" + "ab" * 32)
    assert ArtifactRef.parse(str(ref)) == ref
    assert ArtifactRef.parse("/data/images/wl-1/plain") is None
    with pytest.raises(ArtifactError):
        ArtifactRef.parse("ccpipe-artifact:OTHER_BUCKET/x@sha256:" + "ab" * 32)
    with pytest.raises(ArtifactError):
        ArtifactRef.parse("ccpipe-artifact:CCPIPE_ARTIFACTS/x@sha256:short")


def test_a_local_path_is_a_layout_only_in_a_bare_data_directory(tmp_path: Path) -> None:
    from ccpipe.pipeline.artifacts import layout_ref

    assert layout_ref(tmp_path / "bare", "/data/images/wl-1/plain") is None  # library use, one host
    enrolled = tmp_path / "enrolled"
    init_admin(enrolled)
    with pytest.raises(ArtifactError, match="names the local path '/etc'"):
        layout_ref(enrolled, "/etc")  # a signer cannot point a consumer at a file on its host
    ref = ArtifactRef("wl-1/plain/" + "ab" * 32, "sha256:" + "ab" * 32)
    assert layout_ref(enrolled, str(ref)) == ref
