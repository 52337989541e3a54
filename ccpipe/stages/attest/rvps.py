"""Reference values: what the attestation policy compares verified claims with.

Registration uses Trustee's RVPS ``sample`` message, unchanged on the wire::

    {"version": "0.1.0", "type": "sample", "payload": "<base64 of {"<name>": [<value>, …], …}>"}

Each name becomes one stored record ``{"version": "0.1.0", "name", "expiration", "value": […]}``
(Trustee's ``ReferenceValue``); registering a name again replaces its values. Values expire
(default: 12 months after registration, as Trustee's sample extractor does); an expired record
is never returned. The policy reads them with ``query_reference_value(name)``.

**Scopes** (ccpipe's addition): a value registered with a ``scope`` (a workload id, or
``build-runner``) is visible only to appraisals of that scope, so one workload's measurement
never authorises another's enclave. Names in a message may also carry the scope themselves as
``scope/<scope>/<name>``. :meth:`ReferenceValueStore.values_for` merges the global values with
the scope's own (union, global first).

Names the shipped policy reads (:data:`REFERENCE_NAMES`) are Trustee's default policy names
plus ccpipe's: ``snp_launch_measurement``, ``snp_bootloader``/``snp_tee_svn``/``snp_snp_svn``/
``snp_microcode``, ``mr_td``, ``rtmr_1``, ``rtmr_2``, ``xfam``, ``launch_digest``, ``svn``
(Trustee's), and ``init_data_digest`` (hex of the initdata digest bound in host_data /
MRCONFIGID) and ``image_digest`` (``sha256:…`` of the image the enclave may run) (ccpipe's).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ccpipe.stages.attest.errors import ReferenceValueInvalid
from ccpipe.stages.attest.stat_cache import FileCache, ListingCache

RVPS_VERSION = "0.1.0"
DEFAULT_LIFETIME = timedelta(days=365)
REFERENCE_NAMES = {
    "snp_launch_measurement": "SEV-SNP MEASUREMENT (hex)",
    "snp_bootloader": "SEV-SNP reported_tcb bootloader SVNs (int)",
    "snp_tee_svn": "SEV-SNP reported_tcb tee SVNs (int)",
    "snp_snp_svn": "SEV-SNP reported_tcb snp SVNs (int)",
    "snp_microcode": "SEV-SNP reported_tcb microcode SVNs (int)",
    "mr_td": "TDX MRTD (hex)",
    "rtmr_1": "TDX RTMR1 (hex)",
    "rtmr_2": "TDX RTMR2 (hex)",
    "xfam": "TDX XFAM (hex)",
    "launch_digest": "sample TEE launch digest",
    "svn": "sample TEE svn",
    "init_data_digest": "initdata digest bound in host_data / MRCONFIGID (hex, unpadded)",
    "image_digest": "image the enclave may run (sha256:…)",
}
"""Reference value names the shipped attestation policy reads, and what each holds."""

ReferenceValue = str | int | float | bool
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SCOPED = re.compile(r"^scope/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/(.+)$")


def sample_message(values: Mapping[str, list[ReferenceValue]]) -> dict[str, str]:
    """Trustee's RVPS ``sample`` message registering ``values`` (name → list of values)."""
    payload = json.dumps(dict(values), separators=(",", ":")).encode()
    return {"version": RVPS_VERSION, "type": "sample", "payload": base64.b64encode(payload).decode()}


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ReferenceValueInvalid(f"reference value {kind} {value!r} must match {_NAME.pattern}")
    return value


def parse_message(
    message: Mapping[str, Any] | str | bytes, *, scope: str | None = None
) -> dict[tuple[str | None, str], list[ReferenceValue]]:
    """The (scope, name) → values of an RVPS ``sample`` message.

    Raises :class:`ReferenceValueInvalid` for another version or type, a payload that is not
    base64 of a JSON object of lists of scalars, or a name/scope outside ``[A-Za-z0-9._-]``.
    """
    try:
        obj = json.loads(message) if isinstance(message, str | bytes) else dict(message)
    except (ValueError, TypeError) as exc:
        raise ReferenceValueInvalid("the reference value message is not a JSON object") from exc
    if not isinstance(obj, dict) or obj.get("version") != RVPS_VERSION:
        raise ReferenceValueInvalid(f"the reference value message must have version {RVPS_VERSION!r}")
    if obj.get("type") != "sample":
        raise ReferenceValueInvalid(f"reference value message type {obj.get('type')!r} is not supported ('sample')")
    try:
        provenance = json.loads(base64.b64decode(str(obj.get("payload", "")), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ReferenceValueInvalid("the 'payload' of a sample message must be base64 of a JSON object") from exc
    if not isinstance(provenance, dict):
        raise ReferenceValueInvalid("the 'payload' of a sample message must be a JSON object")
    out: dict[tuple[str | None, str], list[ReferenceValue]] = {}
    for raw_name, values in provenance.items():
        own_scope, name = scope, str(raw_name)
        m = _SCOPED.match(name)
        if m:
            own_scope, name = m.group(1), m.group(2)
        values = values if isinstance(values, list) else [values]
        if not all(isinstance(v, str | int | float | bool) for v in values):
            raise ReferenceValueInvalid(f"reference value {name!r}: values must be strings, numbers or booleans")
        key = (_check_name("scope", own_scope) if own_scope is not None else None, _check_name("name", name))
        out[key] = list(values)
    return out


def _record(name: str, values: list[ReferenceValue], expires: datetime) -> dict[str, Any]:
    return {
        "version": RVPS_VERSION,
        "name": name,
        "expiration": expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "value": values,
    }


Parsed = tuple[tuple[ReferenceValue, ...], datetime | None]
"""A stored record as read: its values and its expiry (None: unreadable, so never live)."""


def _parsed(record: Mapping[str, Any]) -> Parsed:
    try:
        expires = datetime.strptime(str(record["expiration"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return (), None  # an unreadable expiry never authorises anything
    return tuple(record.get("value") or []), expires


def _live(entry: Parsed, now: datetime) -> list[ReferenceValue]:
    values, expires = entry
    return list(values) if expires is not None and expires > now else []


def _merge(*lists: list[ReferenceValue]) -> list[ReferenceValue]:
    out: list[ReferenceValue] = []
    for values in lists:
        out.extend(v for v in values if v not in out)
    return out


class ReferenceValueStore(Protocol):
    """Where reference values live: register Trustee sample messages, read live values."""

    def register(
        self,
        message: Mapping[str, Any] | str | bytes,
        *,
        scope: str | None = None,
        expires_at: datetime | None = None,
    ) -> list[str]:
        """Store every name of ``message`` (under ``scope`` if given); return the names stored.

        Raises :class:`ReferenceValueInvalid` for a malformed message.
        """
        ...

    def get(self, name: str, *, scope: str | None = None) -> list[ReferenceValue]:
        """The unexpired values of ``name`` in ``scope`` (None: global); [] if none."""
        ...

    def values_for(self, scope: str | None) -> dict[str, list[ReferenceValue]]:
        """Every unexpired name visible to ``scope``: global values merged with the scope's own."""
        ...


class _Base:
    """Shared logic; subclasses provide ``_put``, ``_names`` and ``_get`` (or ``_entry``)."""

    def __init__(self, *, clock: Any = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))

    def _put(self, scope: str | None, name: str, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _get(self, scope: str | None, name: str) -> Mapping[str, Any] | None:
        raise NotImplementedError

    def _entry(self, scope: str | None, name: str) -> Parsed | None:
        """The record of ``name`` in ``scope`` as values and expiry; None if there is none."""
        record = self._get(scope, name)
        return _parsed(record) if record is not None else None

    def _names(self, scope: str | None) -> list[str]:
        raise NotImplementedError

    def register(
        self,
        message: Mapping[str, Any] | str | bytes,
        *,
        scope: str | None = None,
        expires_at: datetime | None = None,
    ) -> list[str]:
        """See :meth:`ReferenceValueStore.register`."""
        entries = parse_message(message, scope=scope)
        expires = expires_at or (self._clock() + DEFAULT_LIFETIME)
        for (own_scope, name), values in entries.items():
            self._put(own_scope, name, _record(name, values, expires))
        return [n if s is None else f"scope/{s}/{n}" for s, n in entries]

    def get(self, name: str, *, scope: str | None = None) -> list[ReferenceValue]:
        """See :meth:`ReferenceValueStore.get`."""
        m = _SCOPED.match(name)
        if m:
            scope, name = m.group(1), m.group(2)
        if not _NAME.match(name) or (scope is not None and not _NAME.match(scope)):
            return []
        return self._live_values(scope, name, self._clock())

    def _live_values(self, scope: str | None, name: str, now: datetime) -> list[ReferenceValue]:
        entry = self._entry(scope, name)
        return _live(entry, now) if entry is not None else []

    def values_for(self, scope: str | None) -> dict[str, list[ReferenceValue]]:
        """See :meth:`ReferenceValueStore.values_for`."""
        now = self._clock()  # one instant for the whole view: no value half-expired
        out = {name: self._live_values(None, name, now) for name in self._names(None)}
        if scope is not None and _NAME.match(scope):
            for name in self._names(scope):
                out[name] = _merge(out.get(name, []), self._live_values(scope, name, now))
        return {k: v for k, v in out.items() if v}


class MemoryReferenceValueStore(_Base):
    """Reference values in memory (tests, a single process)."""

    def __init__(self, *, clock: Any = None) -> None:
        """An empty store; ``clock`` returns the current UTC time (for expiry tests)."""
        super().__init__(clock=clock)
        self._data: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _put(self, scope: str | None, name: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._data[(scope, name)] = record

    def _get(self, scope: str | None, name: str) -> Mapping[str, Any] | None:
        return self._data.get((scope, name))

    def _names(self, scope: str | None) -> list[str]:
        return sorted(n for s, n in list(self._data) if s == scope)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file in the same directory, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileReferenceValueStore(_Base):
    """Reference values as one JSON file per name: ``<dir>/global/<name>.json`` and
    ``<dir>/scope/<scope>/<name>.json``.

    Every write is atomic, so several processes (the sign stage, the KBS workers) share one
    directory and a restart loses nothing. Reads are cached per file and per directory listing
    and re-read whenever ``stat`` shows another version (:mod:`ccpipe.stages.attest.stat_cache`), so a
    value another process registered or replaced is seen at the next look-up; expiry is checked
    at every look-up.
    """

    def __init__(self, directory: Path, *, clock: Any = None) -> None:
        """A store under ``directory`` (created on first write)."""
        super().__init__(clock=clock)
        self.directory = Path(directory)
        self._root = os.fspath(self.directory)
        self._files: FileCache[Parsed | None] = FileCache(self._parse)
        self._listings = ListingCache(".json")

    def _dir(self, scope: str | None) -> Path:
        return self.directory / "global" if scope is None else self.directory / "scope" / scope

    def _dir_str(self, scope: str | None) -> str:
        # Names and scopes match _NAME (no separators, no leading dot): a plain join is safe.
        return os.path.join(self._root, "global") if scope is None else os.path.join(self._root, "scope", scope)

    def _put(self, scope: str | None, name: str, record: dict[str, Any]) -> None:
        atomic_write(self._dir(scope) / f"{name}.json", json.dumps(record, sort_keys=True).encode())

    @staticmethod
    def _decode(name: str, data: bytes) -> Mapping[str, Any] | None:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ReferenceValueInvalid(f"stored reference value {name!r} cannot be read: {exc}") from exc
        return doc if isinstance(doc, dict) else None

    def _parse(self, path: str, data: bytes) -> Parsed | None:
        record = self._decode(os.path.basename(path)[: -len(".json")], data)
        return _parsed(record) if record is not None else None

    def _entry(self, scope: str | None, name: str) -> Parsed | None:
        try:
            entry = self._files.get(os.path.join(self._dir_str(scope), f"{name}.json"))
        except OSError as exc:
            raise ReferenceValueInvalid(f"stored reference value {name!r} cannot be read: {exc}") from exc
        return entry  # None also for a file that is not a JSON object: it holds no values

    def _names(self, scope: str | None) -> list[str]:
        directory = self._dir_str(scope)
        try:
            return self._listings.stems(directory)
        except OSError as exc:
            raise ReferenceValueInvalid(f"the reference value store {directory} cannot be listed: {exc}") from exc


__all__ = [
    "REFERENCE_NAMES",
    "FileReferenceValueStore",
    "MemoryReferenceValueStore",
    "ReferenceValue",
    "ReferenceValueStore",
    "atomic_write",
    "parse_message",
    "sample_message",
]
