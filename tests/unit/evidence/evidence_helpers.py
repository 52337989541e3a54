"""Independent signature checks for the TEE tests (written from the vendor specs, not from the code under test)."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.conftest import vector


def read_vector(folder: str, name: str) -> bytes:
    """Bytes of a test vector (hex text files are decoded)."""
    data = vector(folder, name).read_bytes()
    return bytes.fromhex(data.decode().strip()) if name.endswith(".hex") else data


def anchor_cert(pem: str | None) -> x509.Certificate:
    """One of the emulated anchors (``EmulatedAnchors`` fields) as a certificate; it must exist."""
    assert pem is not None, "the emulated roots have not been created"
    return x509.load_pem_x509_certificate(pem.encode())


def verify_snp_signature(raw_report: bytes, vcek: x509.Certificate) -> None:
    """ECDSA P-384/SHA-384 over bytes 0..0x2A0; r and s little-endian at 0x2A0 and 0x2E8."""
    r = int.from_bytes(raw_report[0x2A0:0x2E8], "little")
    s = int.from_bytes(raw_report[0x2E8:0x330], "little")
    key = vcek.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(r, s), raw_report[:0x2A0], ec.ECDSA(hashes.SHA384()))


def verify_pss(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """RSASSA-PSS/SHA-384 (salt 48) signature of ``child`` by ``issuer``, as AMD signs."""
    key = issuer.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    key.verify(child.signature, child.tbs_certificate_bytes, pss, hashes.SHA384())


def verify_ecdsa_cert(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """ECDSA signature of ``child`` by ``issuer`` with the certificate's own hash."""
    key = issuer.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert child.signature_hash_algorithm is not None
    key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(child.signature_hash_algorithm))


def verify_p256_raw(public_xy: bytes, signature: bytes, data: bytes) -> None:
    """DCAP signature: r ‖ s big-endian (32 bytes each) by the P-256 point x ‖ y."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + public_xy)
    sig = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(sig, data, ec.ECDSA(hashes.SHA256()))


def p256_point(cert: x509.Certificate) -> bytes:
    """The x ‖ y of a certificate's P-256 key."""
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    n = key.public_numbers()
    return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def verify_dcap_quote(raw: bytes) -> None:
    """The three checks of a DCAP quote from its raw bytes, with offsets from the Intel spec (v4 only)."""
    body_end = 48 + 584
    sig_data = raw[body_end + 4 :]
    signature, att_key = sig_data[:64], sig_data[64:128]
    verify_p256_raw(att_key, signature, raw[:body_end])
    cert = sig_data[134:]
    qe_report, qe_sig = cert[:384], cert[384:448]
    auth_len = int.from_bytes(cert[448:450], "little")
    auth = cert[450 : 450 + auth_len]
    assert qe_report[320:352] == hashlib.sha256(att_key + auth).digest()
    pem_len = int.from_bytes(cert[452 + auth_len : 456 + auth_len], "little")
    pem = cert[456 + auth_len : 456 + auth_len + pem_len]
    pck = x509.load_pem_x509_certificates(pem.rstrip(b"\0"))[0]
    verify_p256_raw(p256_point(pck), qe_sig, qe_report)
