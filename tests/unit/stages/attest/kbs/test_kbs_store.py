"""The resource store: sealed at rest, bound to its path and KEK, validated paths."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from pathlib import Path

import pytest

from ccpipe.stages.attest.kbs.errors import InvalidResourcePath, ResourceStoreError
from ccpipe.stages.attest.kbs.kek_pkcs11 import Pkcs11Kek
from ccpipe.stages.attest.kbs.store import KEK_ENV, FileBackend, FileKek, ResourceStore, check_resource_path
from ccpipe.stages.attest.kbs.store_nats import kv_key


@pytest.fixture
def store(tmp_path: Path) -> ResourceStore:
    return ResourceStore(FileBackend(tmp_path / "res"), FileKek(tmp_path / "keys" / "kek"))


async def test_kbs_store_round_trip_and_no_plaintext_at_rest(store: ResourceStore, tmp_path: Path) -> None:
    secret = b"THE-IMAGE-KEY-0123456789abcdef!!"
    await store.set("ccpipe/wl/image-key", secret)
    assert await store.get("ccpipe/wl/image-key") == secret
    on_disk = (tmp_path / "res" / "ccpipe" / "wl" / "image-key").read_bytes()
    assert secret not in on_disk and b"IMAGE" not in on_disk
    assert await store.get("ccpipe/wl/other") is None
    assert await store.delete("ccpipe/wl/image-key") and await store.get("ccpipe/wl/image-key") is None


async def test_kbs_store_kek_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek"
    first = FileKek(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_bytes()) == 32
    assert FileKek(path).key_id == first.key_id  # loaded, not regenerated
    path.chmod(0o644)
    with pytest.raises(ResourceStoreError, match="readable by others"):
        FileKek(path)


async def test_kbs_store_kek_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEK_ENV, str(tmp_path / "elsewhere" / "kek"))
    FileKek.for_data_dir(tmp_path / "data")
    assert (tmp_path / "elsewhere" / "kek").exists() and not (tmp_path / "data").exists()


async def test_kbs_store_record_moved_to_another_path_does_not_open(store: ResourceStore) -> None:
    await store.set("ccpipe/a/image-key", b"a-key")
    record = await store.backend.get("ccpipe/a/image-key")
    assert record is not None
    await store.backend.put("ccpipe/b/image-key", record)  # an attacker with write access to the backend
    with pytest.raises(ResourceStoreError):
        await store.get("ccpipe/b/image-key")


async def test_kbs_store_tampered_or_foreign_records_do_not_open(store: ResourceStore, tmp_path: Path) -> None:
    await store.set("ccpipe/a/k", b"a-key")
    record = json.loads(await store.backend.get("ccpipe/a/k") or b"")
    ct = bytearray(base64.b64decode(record["ciphertext"]))
    ct[5] ^= 1
    tampered = {**record, "ciphertext": base64.b64encode(bytes(ct)).decode()}
    await store.backend.put("ccpipe/a/k", json.dumps(tampered).encode())
    with pytest.raises(ResourceStoreError):
        await store.get("ccpipe/a/k")
    other = ResourceStore(store.backend, FileKek(tmp_path / "other-kek"))
    await store.set("ccpipe/a/k", b"a-key")
    with pytest.raises(ResourceStoreError, match="another KEK"):
        await other.get("ccpipe/a/k")


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "a/b", "a/b/c/d", "a/../c", "a/./c", "a//c", "a/b/c d", "a/b/%2e%2e", "/a/b", ""],
)
def test_kbs_store_refuses_bad_paths(path: str) -> None:
    with pytest.raises(InvalidResourcePath):
        check_resource_path(path)


def test_kbs_store_accepts_trustee_paths() -> None:
    assert check_resource_path("default/key/1") == ("default", "key", "1")
    assert check_resource_path("ccpipe/wl-1/cosign-pubkey.pem") == ("ccpipe", "wl-1", "cosign-pubkey.pem")


def test_kbs_store_nats_keys_are_distinct_for_distinct_paths() -> None:
    paths = ["a/b/c.d", "a/b.c/d", "a/b/c_2ed", "a/b_c/d", "a.b/c/d"]
    keys = [kv_key(p) for p in paths]
    assert len(set(keys)) == len(keys) and all(k.count(".") == 2 for k in keys)


def test_kbs_store_files_are_private(tmp_path: Path) -> None:
    import asyncio

    s = ResourceStore(FileBackend(tmp_path / "r"), FileKek(tmp_path / "kek"))
    asyncio.run(s.set("x/y/z", b"1"))
    assert os.stat(tmp_path / "r" / "x" / "y" / "z").st_mode & 0o077 == 0


class SlowHsm:
    """A KEK behind a slow link (a network HSM): every wrap/unwrap takes 0.2 s of blocking I/O."""

    blocking = True

    def __init__(self, tmp_path: Path) -> None:
        self.inner = FileKek(tmp_path / "hsm-kek")
        self.key_id = self.inner.key_id
        self.threads: set[int] = set()

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        self.threads.add(threading.get_ident())
        time.sleep(0.2)
        return self.inner.wrap(dek, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        self.threads.add(threading.get_ident())
        time.sleep(0.2)
        return self.inner.unwrap(wrapped, aad)


async def test_kbs_store_a_blocking_kek_never_stalls_the_event_loop(tmp_path: Path) -> None:
    hsm = SlowHsm(tmp_path)
    slow = ResourceStore(FileBackend(tmp_path / "res"), hsm)
    ticks = 0

    async def heartbeat() -> None:  # what the KBS's other requests need: a loop that runs
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    try:
        await slow.set("ccpipe/w/image-key", b"k" * 32)
        assert await slow.get("ccpipe/w/image-key") == b"k" * 32
    finally:
        beat.cancel()
    assert ticks >= 20  # ~0.4 s of HSM time, the loop kept ticking throughout
    assert threading.get_ident() not in hsm.threads
    assert Pkcs11Kek.blocking and not FileKek.blocking
