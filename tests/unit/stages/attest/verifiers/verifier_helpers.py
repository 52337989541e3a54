"""Helpers for the verifier tests: vector loading, byte flips and a throw-away SEV-SNP PKI that
signs reports with any field values (the real vectors cannot show every policy bit)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.conftest import vector


def read(folder: str, name: str) -> bytes:
    """Bytes of one test vector."""
    return vector(folder, name).read_bytes()


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    """A UTC instant."""
    return datetime(year, month, day, tzinfo=UTC)


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """``data`` with one bit flipped at ``offset``."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    pub: ec.EllipticCurvePublicKey,
    exts: Sequence[tuple[str, bytes]] = (),
) -> x509.Certificate:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
    )
    for oid, value in exts:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return b.sign(key, hashes.SHA384())


@dataclass
class SnpPki:
    """A development ARK → ASK → VCEK chain (ECDSA P-384) and the VCEK's private key."""

    roots_pem: bytes
    vcek_der: bytes
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes
    tcb: tuple[int, int, int, int]

    def sign(self, report: bytearray) -> bytes:
        """Place an ECDSA P-384 signature (little-endian r, s) over bytes 0..0x2A0."""
        r, s = decode_dss_signature(self.vcek_key.sign(bytes(report[:0x2A0]), ec.ECDSA(hashes.SHA384())))
        report[0x2A0:0x2E8] = r.to_bytes(72, "little")
        report[0x2E8:0x330] = s.to_bytes(72, "little")
        return bytes(report)


def make_snp_pki(tcb: tuple[int, int, int, int] = (3, 0, 8, 115), chip_id: bytes = bytes(range(64))) -> SnpPki:
    """A fresh development PKI whose VCEK certifies ``tcb`` (bl, tee, snp, ucode) for ``chip_id``."""
    ark_key = ec.generate_private_key(ec.SECP384R1())
    ask_key = ec.generate_private_key(ec.SECP384R1())
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark = _cert("ARK-Test", "ARK-Test", ark_key, ark_key.public_key())
    ask = _cert("SEV-Test", "ARK-Test", ark_key, ask_key.public_key())
    amd = "1.3.6.1.4.1.3704.1"
    exts = [
        (f"{amd}.2", b"\x16\x08Milan-B0"),
        (f"{amd}.3.1", _der_int(tcb[0])),
        (f"{amd}.3.2", _der_int(tcb[1])),
        (f"{amd}.3.3", _der_int(tcb[2])),
        (f"{amd}.3.8", _der_int(tcb[3])),
        (f"{amd}.4", chip_id),
    ]
    vcek = _cert("SEV-VCEK", "SEV-Test", ask_key, vcek_key.public_key(), exts)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ask, ark))
    return SnpPki(pem, vcek.public_bytes(serialization.Encoding.DER), vcek_key, chip_id, tcb)


def snp_report(
    pki: SnpPki,
    *,
    version: int = 3,
    policy: int = 0x30000,
    vmpl: int = 0,
    report_data: bytes = b"\x11" * 64,
    host_data: bytes = bytes(32),
    measurement: bytes = b"\x22" * 48,
    family: int = 0x19,
    model: int = 0x01,
) -> bytes:
    """A Milan-layout report with the given fields, signed by ``pki``'s VCEK."""
    raw = bytearray(0x4A0)
    bl, tee, snp, ucode = pki.tcb
    tcb = int.from_bytes(bytes([bl, tee, 0, 0, 0, 0, snp, ucode]), "little")
    struct.pack_into("<IIQ", raw, 0, version, 0, policy)
    struct.pack_into("<II", raw, 0x30, vmpl, 1)
    struct.pack_into("<Q", raw, 0x38, tcb)
    raw[0x50:0x90] = report_data
    raw[0x90:0xC0] = measurement
    raw[0xC0:0xE0] = host_data
    struct.pack_into("<Q", raw, 0x180, tcb)
    raw[0x188], raw[0x189] = family, model
    raw[0x1A0:0x1E0] = pki.chip_id
    struct.pack_into("<Q", raw, 0x1E0, tcb)
    struct.pack_into("<Q", raw, 0x1F0, tcb)
    return pki.sign(raw)
