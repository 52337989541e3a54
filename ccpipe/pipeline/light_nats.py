"""A small blocking NATS client: the few JetStream requests ``ccpipe submit`` makes, without nats-py.

The git hook runs ``ccpipe submit`` on every push. nats-py loads asyncio, ssl, its JetStream
API dataclasses, the e-mail parser and importlib.metadata before it sends a byte, and nkeys
loads libsodium to sign the server's nonce: together about half the CPU a submit cost. This
client speaks the text protocol over one plain TCP socket (the same commands nats-py sends),
signs the nonce with the creds file's seed through ``cryptography`` (already loaded for event
signatures), and offers only what the quick path of :mod:`ccpipe.pipeline.quick_submit` uses:
a JetStream API request, a publish that waits for the stream's acknowledgement, a stream's info,
a message by sequence and an Object Store put (the layout nats-py writes and reads).

It handles no TLS, no WebSocket, no reconnect, no user or token in the URL: any of those, and
any protocol surprise, raises :class:`LightNatsDecline` or :class:`LightNatsError`, and the
caller falls back to nats-py (the full path), which reports what went wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_CONTROL_LINE = 64 << 10
"""Longest protocol line accepted (INFO of a large cluster is a few KiB)."""
CLIENT_VERSION = "ccpipe-light"
"""What CONNECT says as the client's version (nats-py says its own)."""
_NUID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class LightNatsDecline(Exception):
    """This client does not take the server or URL (TLS, WebSocket, credentials in the URL, an old server)."""


class LightNatsError(Exception):
    """The server refused, timed out, closed the connection, or answered with a JetStream API error.

    ``code``/``err_code``: the JetStream error's HTTP-like code and ``err_code`` (``None`` otherwise)."""

    def __init__(self, message: str, code: int | None = None, err_code: int | None = None) -> None:
        super().__init__(message)
        self.code, self.err_code = code, err_code


@dataclass
class Msg:
    """A message received: subject, headers (``None`` without), payload, and a status line code if any."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    status: str | None = None
    seq: int | None = None
    """The stream sequence of a message read from a stream (:meth:`LightNats.get_msg`)."""


def nuid() -> str:
    """A 22-character base62 random name (what nats-py's NUID makes for an object's chunks)."""
    value = int.from_bytes(os.urandom(17), "big")
    out = []
    for _ in range(22):
        value, digit = divmod(value, 62)
        out.append(_NUID_ALPHABET[digit])
    return "".join(out)


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """A NATS header block (``NATS/1.0`` then ``Name: value`` lines), as nats-py writes it."""
    return ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def decode_headers(block: bytes) -> tuple[dict[str, str], str | None]:
    """The headers of a NATS header block and its status code (``503`` for no responders), if any."""
    lines = block.decode(errors="replace").split("\r\n")
    first = lines[0].split(None, 2)
    status = first[1] if len(first) > 1 else None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers, status


def read_creds(path: str) -> tuple[str, bytes]:
    """The user JWT and the raw 32-byte Ed25519 seed of a NATS creds file; raises :class:`LightNatsError`."""
    text = Path(path).read_text()

    def block(kind: str) -> str:
        lines = [line.strip() for line in text.splitlines()]
        try:
            start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN") and kind in line)
        except StopIteration:
            raise LightNatsError(f"the creds file {path} has no {kind}") from None
        return lines[start + 1]

    jwt, seed = block("JWT"), block("NKEY SEED")
    try:
        raw = base64.b32decode(seed + "=" * (-len(seed) % 8))
    except ValueError as exc:
        raise LightNatsError(f"the creds file {path} holds no valid seed") from exc
    # nkeys: a seed prefix (S, then the key type) in the first two bytes, 32 bytes of seed, a CRC-16
    if len(raw) != 36 or raw[0] & 0xF8 != 18 << 3:
        raise LightNatsError(f"the creds file {path} holds no valid seed")
    if int.from_bytes(raw[-2:], "little") != _crc16(raw[:-2]):
        raise LightNatsError(f"the creds file {path} holds a seed with a wrong checksum")
    return jwt, raw[2:34]


def _crc16(data: bytes) -> int:
    # CRC-16/XMODEM (poly 0x1021), as nkeys checks
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


@dataclass
class LightNats:
    """One connection; every call blocks until the answer or ``timeout``."""

    sock: socket.socket
    info: dict[str, Any]
    inbox: str
    timeout: float = 10.0
    _buf: bytearray = field(default_factory=bytearray)
    _next: int = 0

    @classmethod
    def connect(cls, url: str, *, name: str, creds: str | None, inbox_prefix: str = "_INBOX",
                timeout: float = 5.0) -> LightNats:
        """Connect to the first server of ``url`` (comma-separated ``nats://host:port``) that answers.

        Raises :class:`LightNatsDecline` for what this client does not do, :class:`LightNatsError`
        for a server that refuses or does not answer, ``OSError`` for one that cannot be reached.
        """
        last: Exception | None = None
        for server in [u.strip() for u in url.split(",") if u.strip()]:
            parts = urlsplit(server)
            if parts.scheme != "nats" or parts.username or parts.password or not parts.hostname:
                raise LightNatsDecline(f"{server}: only nats://host:port without credentials is taken")
            try:
                # the host as bytes: a str host loads the IDNA codec, which a loopback address never needs
                address = (parts.hostname.encode(), parts.port or 4222)
                sock = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]  # bytes work
            except OSError as exc:
                last = exc
                continue
            try:
                return cls._handshake(sock, name=name, creds=creds, inbox_prefix=inbox_prefix, timeout=timeout)
            except BaseException:
                sock.close()
                raise
        raise last or LightNatsError("no server to connect to")

    @classmethod
    def _handshake(cls, sock: socket.socket, *, name: str, creds: str | None, inbox_prefix: str,
                   timeout: float) -> LightNats:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(sock, {}, f"{inbox_prefix}.{nuid()}", timeout)
        op, _, rest = conn._line().partition(" ")
        if op.upper() != "INFO":
            raise LightNatsError(f"the server did not start with INFO but {op[:20]!r}")
        conn.info = json.loads(rest)
        if conn.info.get("tls_required") or not conn.info.get("headers"):
            raise LightNatsDecline("the server requires TLS or does not take headers")
        options: dict[str, Any] = {"verbose": False, "pedantic": False, "lang": "python3",
                                   "version": CLIENT_VERSION, "protocol": 1, "headers": True,
                                   "no_responders": True, "name": name}
        if creds is not None:
            jwt, seed = read_creds(creds)
            if "nonce" in conn.info:
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

                signed = Ed25519PrivateKey.from_private_bytes(seed).sign(str(conn.info["nonce"]).encode())
                options.update(sig=base64.b64encode(signed).decode(), jwt=jwt)
        sock.sendall(b"CONNECT " + json.dumps(options, sort_keys=True).encode() + b"\r\nPING\r\n"
                     + f"SUB {conn.inbox}.* 1\r\n".encode())
        while True:  # the PONG tells the CONNECT was accepted; a refusal comes as -ERR before it
            op = conn._line()
            if op.upper() == "PONG":
                return conn
            conn._control(op)

    # --- the wire ---------------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LightNatsError("the server did not answer in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            raise LightNatsError("the server did not answer in time") from None
        if not chunk:
            raise LightNatsError("the server closed the connection")
        self._buf += chunk

    def _line(self, deadline: float | None = None) -> str:
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_CONTROL_LINE:
                raise LightNatsError("a protocol line is too long")
            self._fill(deadline)
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return line.decode(errors="replace")

    def _bytes(self, size: int, deadline: float) -> bytes:
        while len(self._buf) < size + 2:
            self._fill(deadline)
        data = bytes(self._buf[:size])
        del self._buf[:size + 2]
        return data

    def _control(self, line: str) -> None:
        """Handle a line that is not the awaited message: PING, INFO updates, +OK; -ERR raises."""
        op = line.split(" ", 1)[0].upper()
        if op == "PING":
            self.sock.sendall(b"PONG\r\n")
        elif op == "-ERR":
            raise LightNatsError(f"the server refused: {line[5:].strip()}")
        elif op not in ("INFO", "+OK", "PONG"):
            raise LightNatsError(f"unexpected protocol line {line[:40]!r}")

    def request(self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Msg:
        """Publish ``payload`` to ``subject`` with a reply inbox and return the one reply.

        Raises :class:`LightNatsError` on a timeout, a closed connection, ``-ERR`` or no responders.
        """
        self._next += 1
        reply = f"{self.inbox}.{self._next}"
        if headers:
            block = encode_headers(headers)
            head = f"HPUB {subject} {reply} {len(block)} {len(block) + len(payload)}\r\n".encode() + block
        else:
            head = f"PUB {subject} {reply} {len(payload)}\r\n".encode()
        self.sock.sendall(head + payload + b"\r\n")
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            line = self._line(deadline)
            op, _, rest = line.partition(" ")
            if op.upper() not in ("MSG", "HMSG"):
                self._control(line)
                continue
            args = rest.split()
            msg_subject, size = args[0], int(args[-1])
            header_size = int(args[-2]) if op.upper() == "HMSG" else 0
            body = self._bytes(size, deadline)
            if msg_subject != reply:
                continue  # a late answer to an earlier request that timed out
            msg = Msg(msg_subject, body[header_size:])
            if header_size:
                msg.headers, msg.status = decode_headers(body[:header_size])
            if msg.status == "503":
                raise LightNatsError(f"no responders on {subject}")
            return msg

    def close(self) -> None:
        """Close the connection (nothing is buffered on our side: every publish waits for its ack)."""
        self.sock.close()

    # --- JetStream ----------------------------------------------------------------------------------

    def api(self, subject: str, body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
            payload: bytes | None = None, timeout: float | None = None) -> dict[str, Any]:
        """A JetStream request (``$JS.API.…`` or a publish to a stream's subject); its JSON answer.

        Raises :class:`LightNatsError` carrying the API error's ``code`` and ``err_code``.
        """
        data = payload if payload is not None else (json.dumps(dict(body)).encode() if body is not None else b"")
        answer = json.loads(self.request(subject, data, headers, timeout).data or b"{}")
        if not isinstance(answer, dict):
            raise LightNatsError(f"{subject}: the answer is not a JSON object")
        error = answer.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {}
            raise LightNatsError(f"{subject}: {error.get('description', 'error')}", error.get("code"),
                                 error.get("err_code"))
        return answer

    def stream_info(self, stream: str) -> dict[str, Any]:
        """``$JS.API.STREAM.INFO.<stream>``: its ``config`` and ``state``."""
        return self.api(f"$JS.API.STREAM.INFO.{stream}")

    def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None = None, *,
                stream: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Store ``data`` on ``subject`` and wait for the stream's acknowledgement (as ``js.publish``,
        which sets ``Nats-Expected-Stream`` when a stream is named)."""
        if stream is not None:
            headers = {**(headers or {}), "Nats-Expected-Stream": stream}
        return self.api(subject, headers=headers or None, payload=data, timeout=timeout)

    def get_msg(self, stream: str, seq: int, next_by_subj: str) -> Msg | None:
        """The first message of ``stream`` at or after ``seq`` on ``next_by_subj`` (None past the last)."""
        try:
            answer = self.api(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": next_by_subj})
        except LightNatsError as exc:
            if exc.code == 404:
                return None
            raise
        raw = answer.get("message")
        if not isinstance(raw, dict):
            raise LightNatsError(f"{stream}: a message answer without a message")
        headers = decode_headers(base64.b64decode(raw["hdrs"]))[0] if raw.get("hdrs") else None
        return Msg(str(raw.get("subject", "")), base64.b64decode(raw.get("data") or ""), headers,
                   seq=int(raw["seq"]))

    def read_kv(self, bucket: str) -> list[bytes]:
        """Every live value of the KV ``bucket``, read by sequence as ``enrolment_bus.read_records`` does."""
        stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
        state = self.stream_info(stream)["state"]
        last, seq = int(state["last_seq"]), int(state["first_seq"])
        latest: dict[str, bytes] = {}
        while state.get("messages") and seq <= last:
            msg = self.get_msg(stream, seq, f"{prefix}>")
            if msg is None:
                break
            key = msg.subject.removeprefix(prefix)
            if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
                latest.pop(key, None)
            else:
                latest[key] = msg.data
            seq = (msg.seq or last) + 1
        return list(latest.values())

    def put_object(self, bucket: str, name: str, data: bytes, chunk_size: int) -> None:
        """Store ``data`` as object ``name`` of Object Store ``bucket``, as nats-py's ``ObjectStore.put`` does
        (chunks on ``$O.<bucket>.C.<nuid>``, then the metadata rolled up on ``$O.<bucket>.M.<name>``).

        The name must be new (nats-py would look up an object of that name, to purge its old
        chunks): callers name objects by a fresh workload id and the content's digest.
        """
        self.stream_info(f"OBJ_{bucket}")  # js.object_store(): the bucket must exist
        object_id = nuid()
        chunk_subject = f"$O.{bucket}.C.{object_id}"
        chunks = 0
        for at in range(0, len(data), chunk_size):
            self.publish(chunk_subject, data[at:at + chunk_size])
            chunks += 1
        info = {"name": name, "bucket": bucket, "nuid": object_id, "size": len(data),
                "mtime": datetime.now(UTC).isoformat(), "chunks": chunks,
                "digest": "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode(),
                "deleted": False, "options": {"max_chunk_size": chunk_size}}
        meta_subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        self.publish(meta_subject, json.dumps(info).encode(), {"Nats-Rollup": "sub"})
