"""The KBS KEK in a PKCS#11 token, against a real SoftHSM2 token in a throwaway directory.

Records sealed with the token's key open only with that key, only at their own path and only
untampered; the key never leaves the token; every misconfiguration names what is wrong.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from ccpipe.stages.attest.kbs.errors import ResourceStoreError
from ccpipe.stages.attest.kbs.kek_pkcs11 import (
    CREATE_ENV,
    KEY_ENV,
    MODULE_ENV,
    PIN_FILE_ENV,
    TOKEN_ENV,
    Pkcs11Config,
    Pkcs11Kek,
    reinitialize_modules,
)
from ccpipe.stages.attest.kbs.store import FileBackend, FileKek, KeyWrapper, ResourceStore, load_kek
from tests.softhsm import SOFTHSM, init_tokens

PIN, SO_PIN = "4711-user", "0815-so"
PATH = "ccpipe/wl-1/image-key"
SECRET = b"THE-IMAGE-KEY-0123456789abcdef!!"


@dataclass
class SoftHsm:
    """A SoftHSM2 token directory of this test with tokens ``kbs-a`` and ``kbs-b`` (same user PIN)."""

    root: Path
    pin_file: Path

    def config(self, token: str = "kbs-a", key: str = "kek", *, create: bool = True) -> Pkcs11Config:
        """The configuration of ``key`` in ``token``."""
        return Pkcs11Config(SOFTHSM, token, self.pin_file, key, create)

    def env(self, token: str = "kbs-a", key: str = "kek", *, create: bool = True) -> dict[str, str]:
        """The same as environment variables."""
        return {MODULE_ENV: str(SOFTHSM), TOKEN_ENV: token, PIN_FILE_ENV: str(self.pin_file), KEY_ENV: key,
                CREATE_ENV: "true" if create else "false"}

    def add_key(self, token: str, label: str, bits: int = 256, **attrs: bool) -> None:
        """Put a key made outside ccpipe into ``token`` (before any wrapper logs in to it)."""
        lib = pkcs11.lib(str(SOFTHSM))
        with lib.get_token(token_label=token).open(rw=True, user_pin=PIN) as session:
            template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: True} | {Attribute[name.upper()]: v for name, v in attrs.items()}
            session.generate_key(KeyType.AES, bits, label=label, store=True, template=template)


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    """Two fresh tokens in ``tmp_path``."""
    root = tmp_path / "softhsm"
    return SoftHsm(root, init_tokens(root, monkeypatch, ("kbs-a", "kbs-b"), pin=PIN, so_pin=SO_PIN))


def store(wrapper: KeyWrapper, tmp_path: Path) -> ResourceStore:
    """A directory-backed store sealing with ``wrapper``."""
    return ResourceStore(FileBackend(tmp_path / "res"), wrapper)


async def test_kbs_pkcs11_round_trip_restart_and_no_plaintext(softhsm: SoftHsm, tmp_path: Path) -> None:
    kek = Pkcs11Kek(softhsm.config())
    await store(kek, tmp_path).set(PATH, SECRET)
    on_disk = (tmp_path / "res" / PATH).read_bytes()
    assert SECRET not in on_disk and json.loads(on_disk)["kek_id"] == kek.key_id
    # A restarted KBS: new module state, new login, new wrapper — the old record still opens.
    reinitialize_modules()
    again = Pkcs11Kek(replace(softhsm.config(), create=False))
    assert again.key_id == kek.key_id
    assert await store(again, tmp_path).get(PATH) == SECRET
    assert await store(kek, tmp_path).get(PATH) == SECRET  # the old wrapper logs in again by itself


def test_kbs_pkcs11_wrap_is_gcm_with_fresh_iv_and_the_file_kek_layout(softhsm: SoftHsm) -> None:
    kek, dek = Pkcs11Kek(softhsm.config()), os.urandom(32)
    first, second = kek.wrap(dek, b"aad"), kek.wrap(dek, b"aad")
    assert len(first) == 12 + 32 + 16 and first[:12] != second[:12] and first != second
    assert kek.unwrap(first, b"aad") == dek and kek.unwrap(second, b"aad") == dek


async def test_kbs_pkcs11_record_does_not_open_with_a_file_kek_or_another_tokens_key(
        softhsm: SoftHsm, tmp_path: Path) -> None:
    kek = Pkcs11Kek(softhsm.config())
    await store(kek, tmp_path).set(PATH, SECRET)
    other_token = Pkcs11Kek(softhsm.config(token="kbs-b"))  # same label, same PIN, another key
    file_kek = FileKek(tmp_path / "kek")
    assert len({kek.key_id, other_token.key_id, file_kek.key_id}) == 3
    for wrong in (other_token, file_kek):
        with pytest.raises(ResourceStoreError, match="another KEK"):
            await store(wrong, tmp_path).get(PATH)
        # Even with the record's kek_id forged to match, the data key does not unwrap.
        record = json.loads((tmp_path / "res" / PATH).read_bytes())
        aad = f"ccpipe-kbs-resource\0{PATH}".encode()
        with pytest.raises(ResourceStoreError, match="does not unwrap"):
            wrong.unwrap(base64.b64decode(record["wrapped_dek"]), aad)


async def test_kbs_pkcs11_tampered_or_moved_record_fails(softhsm: SoftHsm, tmp_path: Path) -> None:
    kek = Pkcs11Kek(softhsm.config())
    s = store(kek, tmp_path)
    await s.set(PATH, SECRET)
    original = (tmp_path / "res" / PATH).read_bytes()
    record = json.loads(original)
    wrapped = bytearray(base64.b64decode(record["wrapped_dek"]))
    for i in (0, 12, len(wrapped) - 1):  # the IV, the wrapped key, the tag
        bad = bytearray(wrapped)
        bad[i] ^= 1
        await s.backend.put(PATH, json.dumps(record | {"wrapped_dek": base64.b64encode(bad).decode()}).encode())
        with pytest.raises(ResourceStoreError, match="does not unwrap"):
            await s.get(PATH)
    await s.backend.put(PATH, json.dumps(record | {"wrapped_dek": base64.b64encode(wrapped[:20]).decode()}).encode())
    with pytest.raises(ResourceStoreError, match="truncated"):
        await s.get(PATH)
    # The record copied to another resource path: the AAD differs, the token refuses the data key.
    await s.backend.put("ccpipe/wl-2/image-key", original)
    with pytest.raises(ResourceStoreError, match="does not unwrap"):
        await s.get("ccpipe/wl-2/image-key")
    await s.backend.put(PATH, original)
    assert await s.get(PATH) == SECRET  # the failures left the token's operation state clean


def test_kbs_pkcs11_generated_key_never_leaves_the_token(softhsm: SoftHsm) -> None:
    Pkcs11Kek(softhsm.config(key="made-by-ccpipe"))
    reinitialize_modules()  # log the wrapper out so this test can log in on its own
    lib = pkcs11.lib(str(SOFTHSM))
    with lib.get_token(token_label="kbs-a").open(user_pin=PIN, rw=True) as session:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label="made-by-ccpipe")
        assert key[Attribute.VALUE_LEN] == 32 and key[Attribute.TOKEN] and key[Attribute.PRIVATE]
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
        assert not key[Attribute.WRAP] and not key[Attribute.UNWRAP] and not key[Attribute.MODIFIABLE]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
        # Not even wrapped out under another key of the token.
        out: Any = session.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True})
        with pytest.raises(pkcs11.exceptions.KeyUnextractable):
            out.wrap_key(key, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)


def test_kbs_pkcs11_refuses_extractable_short_or_missing_keys(softhsm: SoftHsm) -> None:
    softhsm.add_key("kbs-a", "extractable", extractable=True)
    softhsm.add_key("kbs-a", "aes128", bits=128)
    softhsm.add_key("kbs-a", "no-decrypt", decrypt=False)
    for label, message in (("extractable", "can leave the token"), ("aes128", "is AES-128"),
                           ("no-decrypt", "may not encrypt and decrypt")):
        with pytest.raises(ResourceStoreError, match=message):
            Pkcs11Kek(softhsm.config(key=label, create=False))
    with pytest.raises(ResourceStoreError, match="no AES key labelled 'absent'") as info:
        Pkcs11Kek(softhsm.config(key="absent", create=False))
    assert "pkcs11-tool" in info.value.hint and "--keygen" in info.value.hint and CREATE_ENV in info.value.hint
    with pytest.raises(ResourceStoreError, match="no AES key"):  # a refused start created nothing
        Pkcs11Kek(softhsm.config(key="absent", create=False))


def test_kbs_pkcs11_wrong_pin_token_or_module_are_named(softhsm: SoftHsm, tmp_path: Path) -> None:
    wrong_pin = tmp_path / "wrong-pin"
    wrong_pin.write_text("0000")
    wrong_pin.chmod(0o600)
    with pytest.raises(ResourceStoreError, match="PIN .* is wrong"):  # first login of the process
        Pkcs11Kek(replace(softhsm.config(), pin_file=wrong_pin))
    kek = Pkcs11Kek(softhsm.config())
    dek = os.urandom(32)
    wrapped = kek.wrap(dek, b"a")
    with pytest.raises(ResourceStoreError, match="PIN .* is wrong"):  # while another wrapper is logged in
        Pkcs11Kek(replace(softhsm.config(), pin_file=wrong_pin))
    assert kek.unwrap(wrapped, b"a") == dek  # and that one still works
    with pytest.raises(ResourceStoreError, match=r"no PKCS#11 token labelled 'kbs-c'.*kbs-a.*kbs-b") as info:
        Pkcs11Kek(softhsm.config(token="kbs-c"))
    assert "softhsm2-util --init-token" in info.value.hint
    with pytest.raises(ResourceStoreError, match="does not exist") as info:
        Pkcs11Kek(replace(softhsm.config(), module=tmp_path / "absent.so"))
    assert "softhsm2" in info.value.hint
    libz = next(p for p in (Path("/usr/lib/x86_64-linux-gnu/libz.so.1"), Path("/lib/x86_64-linux-gnu/libz.so.1"),
                            Path(sys.executable)) if p.is_file())
    with pytest.raises(ResourceStoreError, match="does not load"):
        Pkcs11Kek(replace(softhsm.config(), module=libz))


@pytest.mark.parametrize(("content", "mode", "message"), [
    (PIN, 0o644, "readable by others"), ("", 0o600, "is empty"), (None, 0o600, "unreadable"),
])
def test_kbs_pkcs11_pin_file_must_be_private_and_present(
        softhsm: SoftHsm, tmp_path: Path, content: str | None, mode: int, message: str) -> None:
    pin_file = tmp_path / "pin-file"
    if content is not None:
        pin_file.write_text(content)
        pin_file.chmod(mode)
    with pytest.raises(ResourceStoreError, match=message):
        Pkcs11Kek(replace(softhsm.config(), pin_file=pin_file))


def test_kbs_pkcs11_load_kek_picks_the_token_only_when_configured(
        softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (MODULE_ENV, TOKEN_ENV, PIN_FILE_ENV, KEY_ENV, CREATE_ENV, "CCPIPE_KBS_KEK_FILE"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    assert isinstance(load_kek(data), FileKek) and (data / "keys" / "kbs" / "kek").is_file()
    for name, value in softhsm.env(key="from-env").items():
        monkeypatch.setenv(name, value)
    chosen = load_kek(tmp_path / "other-data")
    assert isinstance(chosen, Pkcs11Kek) and chosen.config == softhsm.config(key="from-env")
    assert not (tmp_path / "other-data").exists()  # no key file made beside the token
    monkeypatch.setenv(CREATE_ENV, "false")
    monkeypatch.setenv(KEY_ENV, "not-there")
    with pytest.raises(ResourceStoreError, match="no AES key labelled 'not-there'"):
        load_kek(data)
    monkeypatch.setenv(CREATE_ENV, "maybe")
    with pytest.raises(ResourceStoreError, match="not true or false"):
        load_kek(data)
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ResourceStoreError, match=f"{TOKEN_ENV} is not"):
        load_kek(data)
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(TOKEN_ENV, "kbs-a")
    monkeypatch.setenv(CREATE_ENV, "")
    assert Pkcs11Config.from_env() == replace(softhsm.config(key="ccpipe-kbs-kek"), create=False)


def test_kbs_pkcs11_lost_session_is_reopened(softhsm: SoftHsm) -> None:
    kek = Pkcs11Kek(softhsm.config())
    dek = os.urandom(32)
    wrapped = kek.wrap(dek, b"a")
    login = kek._login
    assert login is not None
    login.session.close()  # as when the HSM drops the connection
    assert kek.unwrap(wrapped, b"a") == dek
    assert kek.unwrap(kek.wrap(dek, b"b"), b"b") == dek


def test_kbs_pkcs11_key_deleted_or_replaced_while_running_is_not_silently_renewed(softhsm: SoftHsm) -> None:
    kek = Pkcs11Kek(softhsm.config(create=True))
    dek = os.urandom(32)
    wrapped = kek.wrap(dek, b"a")
    # Another session of the (logged-in) process, as an operator's tool in the same token would be.
    with pkcs11.lib(str(SOFTHSM)).get_token(token_label="kbs-a").open(rw=True) as admin:
        admin.get_key(object_class=ObjectClass.SECRET_KEY, label="kek").destroy()
        with pytest.raises(ResourceStoreError, match="no AES key labelled 'kek'"):  # not generated anew
            kek.unwrap(wrapped, b"a")
        admin.generate_key(KeyType.AES, 256, label="kek", store=True, template={
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True})
        with pytest.raises(ResourceStoreError, match="no longer the key this KBS started with"):
            kek.wrap(dek, b"a")


def test_kbs_pkcs11_concurrent_threads_share_the_token(softhsm: SoftHsm) -> None:
    keks = [Pkcs11Kek(softhsm.config()), Pkcs11Kek(softhsm.config())]  # two wrappers, one login
    assert keks[0].key_id == keks[1].key_id
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                dek, aad = os.urandom(32), f"{n}/{i}".encode()
                wrapped = keks[n % 2].wrap(dek, aad)
                assert keks[(n + i) % 2].unwrap(wrapped, aad) == dek
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


FORK_SCRIPT = """
import os, sys
from pathlib import Path
from ccpipe.stages.attest.kbs.kek_pkcs11 import Pkcs11Config, Pkcs11Kek
kek = Pkcs11Kek(Pkcs11Config(Path(sys.argv[1]), "kbs-a", Path(sys.argv[2]), "kek", True))
dek = os.urandom(32)
wrapped = kek.wrap(dek, b"fork")
pid = os.fork()
if pid == 0:
    ok = kek.unwrap(wrapped, b"fork") == dek and kek.unwrap(kek.wrap(dek, b"c"), b"c") == dek
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert kek.unwrap(wrapped, b"fork") == dek  # the parent's login survives the child's re-initialisation
print(os.waitstatus_to_exitcode(status))
"""


def test_kbs_pkcs11_forked_child_logs_in_again(softhsm: SoftHsm) -> None:
    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(SOFTHSM), str(softhsm.pin_file)],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[5], env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", out.stderr


RACE_SCRIPT = """
import sys, time
from pathlib import Path
from ccpipe.stages.attest.kbs.kek_pkcs11 import Pkcs11Config, Pkcs11Kek
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
print(Pkcs11Kek(Pkcs11Config(Path(sys.argv[1]), "kbs-a", Path(sys.argv[2]), "raced", True)).key_id)
"""


def test_kbs_pkcs11_workers_starting_together_create_one_key(softhsm: SoftHsm) -> None:
    go = softhsm.root / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, str(SOFTHSM), str(softhsm.pin_file), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
             for _ in range(6)]
    go.touch()
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    reinitialize_modules()
    with pkcs11.lib(str(SOFTHSM)).get_token(token_label="kbs-a").open(user_pin=PIN) as session:
        assert len(list(session.get_objects({Attribute.LABEL: "raced"}))) == 1
