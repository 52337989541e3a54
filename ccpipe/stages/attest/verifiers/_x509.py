"""Certificate helpers shared by the verifiers: loading, one-link signature checks, validity,
CRLs. Vendor certificate extensions are read by :mod:`ccpipe.evidence.cert_extensions`.

Every failure is raised as an :mod:`ccpipe.stages.attest.errors` leaf; nothing from ``cryptography``
escapes.
"""

from __future__ import annotations

import warnings
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ccpipe.stages.attest.errors import (
    CertificateChainInvalid,
    CertificateExpired,
    CertificateRevoked,
    EvidenceMalformed,
)


def load_der(data: bytes, what: str) -> x509.Certificate:
    """Parse one DER certificate; raises :class:`EvidenceMalformed` naming ``what``."""
    try:
        with warnings.catch_warnings():
            # AMD's VCEKs carry non-positive serial numbers, which cryptography only warns about.
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion: a version field other than v1/v3
        raise EvidenceMalformed(f"{what} is not a DER X.509 certificate") from exc
    return _fields_read(cert, what)


def load_pem_or_der(data: bytes, what: str) -> x509.Certificate:
    """Parse one certificate given as PEM or DER."""
    if data.lstrip().startswith(b"-----BEGIN"):
        certs = load_pem_chain(data, what)
        if len(certs) != 1:
            raise EvidenceMalformed(f"{what} must hold exactly one certificate, found {len(certs)}")
        return certs[0]
    return load_der(data, what)


def load_pem_chain(data: bytes, what: str) -> list[x509.Certificate]:
    """Parse every certificate of a PEM bundle, in order; raises :class:`EvidenceMalformed`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise EvidenceMalformed(f"{what} is not a PEM certificate bundle") from exc
    return [_fields_read(cert, what) for cert in certs]


def _fields_read(cert: x509.Certificate, what: str) -> x509.Certificate:
    """``cert`` once the fields the verifiers read have been decoded.

    ``cryptography`` decodes names, validity, extensions and the key only when first asked, so a
    certificate whose outer structure parses can still raise ``ValueError`` (or
    ``UnsupportedAlgorithm``) from a later check. Reading them here makes that
    :class:`EvidenceMalformed`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _ = (cert.issuer, cert.subject, cert.extensions, cert.not_valid_before_utc, cert.not_valid_after_utc)
            cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceMalformed(f"{what} has a malformed field ({exc})") from exc
    return cert


def verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """Check that ``issuer``'s key signed ``cert`` and that the names link.

    Supports what AMD (RSASSA-PSS/SHA-384) and Intel (ECDSA P-256) use, plus PKCS#1 v1.5 and
    ECDSA for development roots. Raises :class:`CertificateChainInvalid`.
    """
    if cert.issuer != issuer.subject:
        raise CertificateChainInvalid(
            f"{what}: issued by {cert.issuer.rfc4514_string()!r}, not by {issuer.subject.rfc4514_string()!r}"
        )
    key = issuer.public_key()
    algo = cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo is not None:
            params = cert.signature_algorithm_parameters
            pad = params if isinstance(params, padding.PSS | padding.PKCS1v15) else padding.PKCS1v15()
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, algo)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        else:
            raise CertificateChainInvalid(f"{what}: unsupported issuer key or signature algorithm")
    except InvalidSignature as exc:
        raise CertificateChainInvalid(
            f"{what}: signature does not verify with {issuer.subject.rfc4514_string()!r}"
        ) from exc
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        raise CertificateChainInvalid(f"{what}: cannot check the signature ({exc})") from exc


def check_validity(cert: x509.Certificate, at: datetime, what: str) -> None:
    """Raise :class:`CertificateExpired` unless ``at`` is inside the certificate's validity period."""
    if at < cert.not_valid_before_utc:
        raise CertificateExpired(f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if at > cert.not_valid_after_utc:
        raise CertificateExpired(f"{what} expired on {cert.not_valid_after_utc.isoformat()}")


def check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, cert: x509.Certificate, what: str) -> None:
    """Verify ``crl`` was signed by ``issuer`` and that ``cert`` is not listed in it.

    Raises :class:`CertificateChainInvalid` for a CRL of another issuer or a bad CRL signature,
    :class:`CertificateRevoked` if ``cert`` is revoked.
    """
    if crl.issuer != issuer.subject:
        raise CertificateChainInvalid(f"the CRL for {what} is issued by {crl.issuer.rfc4514_string()!r}")
    try:
        ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (UnsupportedAlgorithm, TypeError) as exc:
        raise CertificateChainInvalid(f"the CRL for {what} cannot be checked ({exc})") from exc
    if not ok:
        raise CertificateChainInvalid(f"the CRL for {what} is not signed by its issuer")
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        raise CertificateRevoked(f"{what} (serial {cert.serial_number:x}) is revoked")


def load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    """Parse a CRL given as DER or PEM; raises :class:`EvidenceMalformed`."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise EvidenceMalformed(f"{what} is not a CRL") from exc


_FINGERPRINTS: dict[int, tuple[x509.Certificate, str]] = {}


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding.

    Remembered per certificate object (the verifiers reuse parsed roots and cached chain
    certificates, and ask for the same fingerprints on every report); the entry holds the
    object, so an id is never reused while its fingerprint is stored.
    """
    hit = _FINGERPRINTS.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    if len(_FINGERPRINTS) >= 4096:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(cert)] = (cert, fingerprint)
    return fingerprint
