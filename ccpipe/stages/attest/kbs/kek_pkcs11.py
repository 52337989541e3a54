"""A PKCS#11 token (an HSM, or SoftHSM2) as the key-encryption key of the KBS resource store.

Configured from the environment (``CCPIPE_KBS_PKCS11_MODULE`` set = configured):

- ``CCPIPE_KBS_PKCS11_MODULE``: path of the vendor's PKCS#11 library (``.so``);
- ``CCPIPE_KBS_PKCS11_TOKEN``: label of the token;
- ``CCPIPE_KBS_PKCS11_PIN_FILE``: a file (0600) holding the user PIN — never the PIN itself in
  the environment or on a command line, where other processes can read it;
- ``CCPIPE_KBS_PKCS11_KEY``: label of the AES-256 secret key (default ``ccpipe-kbs-kek``);
- ``CCPIPE_KBS_PKCS11_CREATE``: ``true`` generates the key in the token when it is missing
  (sensitive, non-extractable, private, encrypt/decrypt only). Default ``false``: a missing key
  is an error, so a mistyped label or a wrong token never silently starts a new, empty key
  (records sealed under the real one would then look lost). Tokens have no create-if-absent:
  the workers of one host take turns (a lock on the PIN file), but replicas on several hosts
  racing may make two, which every start then refuses — let one create it. A key that vanishes
  while the KBS runs is never re-created.

Data keys are wrapped inside the token with ``CKM_AES_GCM`` (fresh 12-byte IV, the record's AAD,
128-bit tag); the output ``iv ‖ ciphertext ‖ tag`` has the same layout as :class:`FileKek`'s.
GCM rather than ``CKM_AES_KEY_WRAP_KWP``: GCM binds the AAD (the resource path) natively, and
it encrypts the data key as bytes, where ``C_WrapKey`` would first need it imported as a token
object. The key is refused unless it is sensitive and non-extractable, so it never leaves the
token. ``key_id`` is a fingerprint of the key computed inside the token (a key check value), so
replicas using the same key — or the same key in a backup token — agree on it, and it reveals
nothing usable about the key.

Threads: python-pkcs11 initialises the module without locking callbacks, so the module may
assume one caller at a time; every call into a module goes through one lock per module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from ccpipe.stages.attest.kbs.errors import ResourceStoreError

MODULE_ENV = "CCPIPE_KBS_PKCS11_MODULE"
TOKEN_ENV = "CCPIPE_KBS_PKCS11_TOKEN"
PIN_FILE_ENV = "CCPIPE_KBS_PKCS11_PIN_FILE"
KEY_ENV = "CCPIPE_KBS_PKCS11_KEY"
CREATE_ENV = "CCPIPE_KBS_PKCS11_CREATE"
DEFAULT_KEY_LABEL = "ccpipe-kbs-kek"
_IV_LEN = 12
_TAG_LEN = 16
# The key check value: a fixed plaintext under a fixed IV. Deterministic on purpose (the same
# key always gives the same id); it never collides with a wrap, whose IVs are random.
_CHECK_IV = bytes(_IV_LEN)
_CHECK_AAD = b"ccpipe-kbs-pkcs11-key-check"

# Errors after which the session (or the token) is gone and a fresh login may help.
_RECONNECT = (p11.SessionHandleInvalid, p11.SessionClosed, p11.UserNotLoggedIn, p11.KeyHandleInvalid,
              p11.ObjectHandleInvalid, p11.DeviceRemoved, p11.TokenNotPresent, p11.TokenNotRecognised)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
T = TypeVar("T")


class _AesKey(Protocol):
    """What is used of a python-pkcs11 secret key (its class is assembled at run time from mixins)."""

    def encrypt(self, data: bytes, *, mechanism: Mechanism, mechanism_param: Any) -> bytes: ...

    def decrypt(self, data: bytes, *, mechanism: Mechanism, mechanism_param: Any) -> bytes: ...

    def __getitem__(self, attribute: Attribute) -> Any: ...


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the KEK lives: module, token, PIN file, key label; ``create`` a missing key."""

    module: Path
    token: str
    pin_file: Path
    key_label: str = DEFAULT_KEY_LABEL
    create: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Pkcs11Config | None:
        """The configuration in ``env`` (default ``os.environ``), or None without ``CCPIPE_KBS_PKCS11_MODULE``.

        Raises :class:`ResourceStoreError` when the module is set but the token label or PIN
        file is not, or ``CCPIPE_KBS_PKCS11_CREATE`` is not a boolean.
        """
        env = os.environ if env is None else env
        module = env.get(MODULE_ENV, "")
        if not module:
            return None
        token, pin_file = env.get(TOKEN_ENV, ""), env.get(PIN_FILE_ENV, "")
        if not token or not pin_file:
            missing = " and ".join(n for n, v in ((TOKEN_ENV, token), (PIN_FILE_ENV, pin_file)) if not v)
            raise ResourceStoreError(f"{MODULE_ENV} is set but {missing} is not", hint=f"set {TOKEN_ENV}=<token "
                                     f"label> and {PIN_FILE_ENV}=<file holding the user PIN>")
        create = env.get(CREATE_ENV, "").strip().lower()
        if create not in _TRUE | _FALSE:
            raise ResourceStoreError(f"{CREATE_ENV}={env[CREATE_ENV]!r} is not true or false")
        return cls(Path(module), token, Path(pin_file), env.get(KEY_ENV) or DEFAULT_KEY_LABEL, create in _TRUE)


def read_pin(path: Path) -> str:
    """The user PIN in ``path`` (one line); raises :class:`ResourceStoreError` if unreadable,
    empty or readable by group or others."""
    try:
        mode = path.stat().st_mode
        pin = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResourceStoreError(f"PKCS#11 PIN file {path} is unreadable: {exc}",
                                 hint=f"write the token's user PIN to {path} (chmod 600)") from exc
    if mode & 0o077:
        raise ResourceStoreError(f"PKCS#11 PIN file {path} is readable by others", hint=f"chmod 600 {path}")
    if not pin:
        raise ResourceStoreError(f"PKCS#11 PIN file {path} is empty", hint="write the token's user PIN into it")
    return pin


_module_locks: dict[str, threading.RLock] = {}
_registry_lock = threading.Lock()


def _module_lock(module: str) -> threading.RLock:
    with _registry_lock:
        return _module_locks.setdefault(module, threading.RLock())


class _Login:
    """The one logged-in session of this process on a token, shared by every wrapper using it.

    PKCS#11 logs in an application, not a session: a second ``C_Login`` answers
    ``CKR_USER_ALREADY_LOGGED_IN`` whatever the PIN, so wrappers share the session, and a
    wrapper bringing another PIN proves it by logging in again.
    """

    def __init__(self, token: pkcs11.Token, pin: str) -> None:
        self.token, self.pin = token, pin
        self.session = _login(token, pin)
        self.generation = 0

    def relogin(self, token: pkcs11.Token, pin: str) -> None:
        """Close the session (which logs out) and log in again; on failure the old PIN is restored."""
        _close(self.session)
        try:
            self.session = _login(token, pin)
        except ResourceStoreError:
            self.session = _login(self.token, self.pin)  # keep the other wrappers working
            raise
        finally:
            self.generation += 1
        self.token, self.pin = token, pin


def _login(token: pkcs11.Token, pin: str) -> pkcs11.Session:
    try:
        return token.open(user_pin=pin)
    except (p11.PinIncorrect, p11.PinLenRange, p11.PinInvalid) as exc:
        raise ResourceStoreError(f"the PIN in {PIN_FILE_ENV} is wrong for PKCS#11 token {token.label!r}",
                                 hint="write the token's user PIN (not the SO PIN) to the PIN file") from exc
    except p11.PinLocked as exc:
        raise ResourceStoreError(f"the user PIN of PKCS#11 token {token.label!r} is locked",
                                 hint="unlock it with the SO PIN (pkcs11-tool --unlock-pin)") from exc
    except p11.PKCS11Error as exc:
        raise ResourceStoreError(f"cannot log in to PKCS#11 token {token.label!r}: {type(exc).__name__} {exc}") from exc


def _close(session: pkcs11.Session) -> None:
    with contextlib.suppress(p11.PKCS11Error):  # already gone: that is why it is being replaced
        session.close()


_logins: dict[tuple[str, str], _Login] = {}
_pid = os.getpid()


def reinitialize_modules() -> None:
    """Finalise and initialise every loaded PKCS#11 module and forget this process's logins.

    For a forked child (the parent's sessions are void there; done automatically) and for a
    module whose configuration changed (SoftHSM2 reads ``SOFTHSM2_CONF`` at initialisation).
    Wrappers made before stay usable: they log in again on their next call.
    """
    global _pid
    with _registry_lock:
        locks = list(_module_locks.values())
    for lock in locks:
        lock.acquire()
    try:
        for lib in list(pkcs11._loaded.values()):
            lib.reinitialize()
        _logins.clear()
        _pid = os.getpid()
    finally:
        for lock in locks:
            lock.release()


def _load(module: Path) -> Any:
    """The loaded module (re-initialised in a forked child, where the parent's state is void)."""
    if _pid != os.getpid():
        reinitialize_modules()
    if not module.is_file():
        raise ResourceStoreError(f"PKCS#11 module {module} ({MODULE_ENV}) does not exist",
                                 hint="install the HSM's PKCS#11 library (SoftHSM2: apt-get install softhsm2, "
                                      "/usr/lib/softhsm/libsofthsm2.so) and point the variable at it")
    try:
        return pkcs11.lib(str(module))
    except p11.PKCS11Error as exc:
        raise ResourceStoreError(f"PKCS#11 module {module} does not load: {exc}",
                                 hint=f"{MODULE_ENV} must name a PKCS#11 library (one exporting "
                                      "C_GetFunctionList)") from exc


def _find_token(lib: Any, label: str, module: Path) -> pkcs11.Token:
    try:
        token: pkcs11.Token = lib.get_token(token_label=label)
        return token
    except p11.NoSuchToken as exc:
        try:
            labels = sorted(t.label for t in lib.get_tokens())
        except p11.PKCS11Error:
            labels = []
        raise ResourceStoreError(f"no PKCS#11 token labelled {label!r} in {module} (tokens: {labels or 'none'})",
                                 hint=f"set {TOKEN_ENV} to one of them, or create one: "
                                      f"softhsm2-util --init-token --free --label {label}") from exc
    except p11.MultipleTokensReturned as exc:
        raise ResourceStoreError(f"several PKCS#11 tokens are labelled {label!r} in {module}",
                                 hint="give the KBS's token a unique label") from exc
    except p11.PKCS11Error as exc:
        raise ResourceStoreError(f"cannot list the tokens of {module}: {type(exc).__name__} {exc}") from exc


def _check_mechanism(token: pkcs11.Token) -> None:
    try:
        info = token.slot.get_mechanism_info(Mechanism.AES_GCM)
    except p11.PKCS11Error as exc:
        raise ResourceStoreError(f"PKCS#11 token {token.label!r} does not offer CKM_AES_GCM",
                                 hint="use a token that supports AES-GCM encrypt/decrypt") from exc
    # Only these two bits are read: python-pkcs11 does not zero the CK_MECHANISM_INFO it passes,
    # and SoftHSM2 2.6 leaves the other bits of CKM_AES_GCM's flags as it found them (noise).
    if not (info.flags & pkcs11.MechanismFlag.ENCRYPT and info.flags & pkcs11.MechanismFlag.DECRYPT):
        raise ResourceStoreError(f"PKCS#11 token {token.label!r} offers CKM_AES_GCM but not to encrypt and decrypt")


def _fingerprint(key: _AesKey) -> str:
    """The key id: a hash of a key check value computed in the token (never key material)."""
    kcv = key.encrypt(bytes(16), mechanism=Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(_CHECK_IV, _CHECK_AAD))
    return hashlib.sha256(b"ccpipe-kbs-kek-pkcs11\0" + bytes(kcv)).hexdigest()[:16]


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (opened read-only: the PIN file may be on a read-only mount)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ResourceStoreError(f"PKCS#11 PIN file {path} is unreadable: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _keygen_hint(cfg: Pkcs11Config) -> str:
    return (f"create it once: pkcs11-tool --module {cfg.module} --token-label {cfg.token} --login --keygen "
            f"--key-type AES:32 --label {cfg.key_label} --sensitive --private --usage-decrypt "
            f"(it asks for the PIN), or start once with {CREATE_ENV}=true")


class Pkcs11Kek:
    """A :class:`~ccpipe.stages.attest.kbs.store.KeyWrapper` whose KEK is an AES-256 key in a PKCS#11 token."""

    blocking = True  # a network HSM answers in milliseconds: the store calls us off the event loop

    def __init__(self, config: Pkcs11Config) -> None:
        """Load the module, log in, find (or, with ``create``, generate) the key.

        Raises :class:`ResourceStoreError` naming what is wrong: module missing or not PKCS#11,
        no token with that label, wrong or locked PIN, no such key (with the command that
        creates it), a key that is not AES-256, is extractable or may not encrypt/decrypt.
        """
        self.config = config
        self._pin = read_pin(config.pin_file)
        self._module = os.path.realpath(config.module)
        self._lock = _module_lock(self._module)
        # Tokens have no create-if-absent, and SoftHSM2 misses a token another process is
        # writing: when the key may be created, the processes of this host (KBS workers start
        # together) take turns under an advisory lock on the PIN file they share.
        with self._lock, _flocked(config.pin_file) if config.create else contextlib.nullcontext():
            self._lib = _load(config.module)
            token = _find_token(self._lib, config.token, config.module)
            _check_mechanism(token)
            self._login_key = (self._module, bytes(token.serial).hex())
            self._login: _Login | None = None
            self.key_id = ""
            self._attach(token)

    def _attach(self, token: pkcs11.Token) -> None:
        """Use this process's login on the token: log in if there is none, log in again if it
        is this wrapper's own lost session or another PIN (which proves this wrapper's PIN)."""
        login = _logins.get(self._login_key)
        if login is None:
            login = _logins[self._login_key] = _Login(token, self._pin)
        elif login is self._login or not hmac.compare_digest(login.pin.encode(), self._pin.encode()):
            login.relogin(token, self._pin)
        self._login = login
        self._refresh_key()

    def _refresh_key(self) -> None:
        """Find the key (again); it must be the key this wrapper started with (same fingerprint).

        Only the first look may generate it: a key deleted while the KBS runs is an error, not
        a reason to start a new key under which new records would seal.
        """
        assert self._login is not None, "attached"
        key = self._find_key(create=self.config.create and not self.key_id)
        try:
            fingerprint = _fingerprint(key)
        except p11.PKCS11Error as exc:
            raise ResourceStoreError(f"PKCS#11 key {self.config.key_label!r} does not encrypt with CKM_AES_GCM: "
                                     f"{type(exc).__name__} {exc}") from exc
        if self.key_id and fingerprint != self.key_id:
            raise ResourceStoreError(f"the AES key labelled {self.config.key_label!r} in PKCS#11 token "
                                     f"{self.config.token!r} is no longer the key this KBS started with "
                                     f"({fingerprint}, not {self.key_id})",
                                     hint="restore the original key from the HSM's backup; records sealed "
                                          "with it open only with it")
        self._key, self._generation, self.key_id = key, self._login.generation, fingerprint

    def _find_key(self, *, create: bool) -> _AesKey:
        cfg = self.config
        try:
            try:
                key = self._lookup()
            except p11.NoSuchKey as exc:
                if not create:
                    raise ResourceStoreError(f"PKCS#11 token {cfg.token!r} has no AES key labelled "
                                             f"{cfg.key_label!r}", hint=_keygen_hint(cfg)) from exc
                key = self._generate()
        except p11.MultipleObjectsReturned as exc:
            raise ResourceStoreError(f"PKCS#11 token {cfg.token!r} has several AES keys labelled {cfg.key_label!r}",
                                     hint=f"keep the one that sealed the records, or set {KEY_ENV} to a unique "
                                          "label") from exc
        except p11.PKCS11Error as exc:
            raise ResourceStoreError(f"cannot search PKCS#11 token {cfg.token!r}: {type(exc).__name__} {exc}") from exc
        self._check_key(key)
        return key

    def _lookup(self) -> _AesKey:
        return cast(_AesKey, self._session().get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES,
                                                     label=self.config.key_label))

    def _generate(self) -> _AesKey:
        cfg = self.config
        # A read-write session of the already logged-in application; opened without a PIN so
        # closing it does not log the shared session out. Runs under the PIN file's lock.
        try:
            with self._token().open(rw=True) as rw:
                rw.generate_key(KeyType.AES, 256, label=cfg.key_label, store=True, template={
                    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                    Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False,
                    Attribute.VERIFY: False, Attribute.DERIVE: False, Attribute.MODIFIABLE: False,
                })
        except p11.PKCS11Error as exc:
            raise ResourceStoreError(f"cannot generate the AES key {cfg.key_label!r} in PKCS#11 token "
                                     f"{cfg.token!r}: {type(exc).__name__} {exc}", hint=_keygen_hint(cfg)) from exc
        return self._lookup()  # through the shared session: the read-write one is closed

    def _session(self) -> pkcs11.Session:
        assert self._login is not None, "attached in __init__"
        return self._login.session

    def _token(self) -> pkcs11.Token:
        assert self._login is not None, "attached in __init__"
        return self._login.token

    def _check_key(self, key: _AesKey) -> None:
        cfg = self.config
        try:
            length, sensitive = key[Attribute.VALUE_LEN], key[Attribute.SENSITIVE]
            extractable, encrypt, decrypt = key[Attribute.EXTRACTABLE], key[Attribute.ENCRYPT], key[Attribute.DECRYPT]
        except p11.PKCS11Error as exc:
            raise ResourceStoreError(f"cannot read the attributes of PKCS#11 key {cfg.key_label!r}: {exc}") from exc
        where = f"PKCS#11 key {cfg.key_label!r} in token {cfg.token!r}"
        if length != 32:
            raise ResourceStoreError(f"{where} is AES-{8 * int(length)}; the KEK must be AES-256",
                                     hint=_keygen_hint(cfg))
        if not sensitive or extractable:
            raise ResourceStoreError(f"{where} can leave the token (CKA_SENSITIVE={sensitive}, "
                                     f"CKA_EXTRACTABLE={extractable})",
                                     hint="use a sensitive, non-extractable key; " + _keygen_hint(cfg))
        if not (encrypt and decrypt):
            raise ResourceStoreError(f"{where} may not encrypt and decrypt (CKA_ENCRYPT={encrypt}, "
                                     f"CKA_DECRYPT={decrypt})", hint=_keygen_hint(cfg))

    def _call(self, op: Callable[[_AesKey], T]) -> T:
        """``op(key)`` under the module lock; once more after a fresh login if the session was lost."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    login = _logins.get(self._login_key)
                    if login is None or login is not self._login:  # modules re-initialised (a fork)
                        self._reconnect()
                    elif self._generation != login.generation:  # another wrapper logged in again
                        self._refresh_key()
                    return op(self._key)
                except _RECONNECT as exc:
                    if attempt == 2:
                        raise ResourceStoreError(f"PKCS#11 token {self.config.token!r} is unavailable: "
                                                 f"{type(exc).__name__}") from exc
                    self._reconnect()
        raise AssertionError("unreachable")

    def _reconnect(self) -> None:
        self._lib = _load(self.config.module)
        self._attach(_find_token(self._lib, self.config.token, self.config.module))

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """iv ‖ AES-256-GCM(KEK, dek, aad), computed in the token; raises :class:`ResourceStoreError`."""
        iv = os.urandom(_IV_LEN)
        try:
            ct = self._call(lambda key: key.encrypt(dek, mechanism=Mechanism.AES_GCM,
                                                    mechanism_param=pkcs11.GCMParams(iv, aad)))
        except p11.PKCS11Error as exc:
            raise ResourceStoreError(f"PKCS#11 token {self.config.token!r} did not wrap a data key: "
                                     f"{type(exc).__name__} {exc}") from exc
        return iv + bytes(ct)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`wrap`, in the token; raises :class:`ResourceStoreError` on a wrong key,
        a wrong AAD or tampering (the token reports a failed tag check)."""
        if len(wrapped) < _IV_LEN + _TAG_LEN:
            raise ResourceStoreError("a resource's wrapped data key is truncated")
        iv, ct = wrapped[:_IV_LEN], wrapped[_IV_LEN:]
        try:
            return bytes(self._call(lambda key: key.decrypt(ct, mechanism=Mechanism.AES_GCM,
                                                            mechanism_param=pkcs11.GCMParams(iv, aad))))
        except p11.PKCS11Error as exc:
            raise ResourceStoreError("a resource's data key does not unwrap with this PKCS#11 KEK") from exc
