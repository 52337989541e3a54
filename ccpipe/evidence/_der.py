"""A minimal DER encoder and reader for the vendor certificate extensions (X.690).

Only what the AMD VCEK and Intel SGX PCK extensions use: SEQUENCE, OBJECT IDENTIFIER, INTEGER,
ENUMERATED, BOOLEAN, OCTET STRING and IA5String, definite lengths. ``cryptography`` hands such
extensions over as opaque bytes, so reading them needs this. Raises ``ValueError`` on malformed
input; callers wrap it into their own error.
"""

from __future__ import annotations

SEQUENCE = 0x30
OID = 0x06
INTEGER = 0x02
ENUMERATED = 0x0A
BOOLEAN = 0x01
OCTET_STRING = 0x04
IA5STRING = 0x16


def tlv(tag: int, value: bytes) -> bytes:
    """One DER element: tag, definite length, value."""
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER element for a dotted string such as ``1.2.840.113741.1.13.1``."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def integer(value: int, tag: int = INTEGER) -> bytes:
    """A non-negative INTEGER (or ENUMERATED with ``tag``), minimal two's complement."""
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def boolean(value: bool) -> bytes:
    """A BOOLEAN (DER: 0xFF for true)."""
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already-encoded elements."""
    return tlv(SEQUENCE, b"".join(items))


def read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """Read one element at ``pos``: (tag, value, position after it)."""
    if pos + 2 > len(data):
        raise ValueError("DER element truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("DER value truncated")
    return tag, data[pos : pos + length], pos + length


def children(value: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) elements inside a constructed value."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(value):
        tag, inner, pos = read(value, pos)
        out.append((tag, inner))
    return out


def expect(data: bytes, tag: int) -> bytes:
    """The value of ``data`` if it is exactly one element with ``tag``."""
    got, value, end = read(data)
    if got != tag or end != len(data):
        raise ValueError(f"expected DER tag {tag:#x}, got {got:#x}")
    return value


def decode_oid(value: bytes) -> str:
    """Dotted string of an OBJECT IDENTIFIER value."""
    if not value:
        raise ValueError("empty OID")
    first = value[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    acc = 0
    for b in value[1:]:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
    return ".".join(str(a) for a in arcs)


def decode_uint(value: bytes) -> int:
    """A non-negative INTEGER/ENUMERATED value."""
    if not value or value[0] & 0x80:
        raise ValueError("expected a non-negative DER integer")
    return int.from_bytes(value, "big")
