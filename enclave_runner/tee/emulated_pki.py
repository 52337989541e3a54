"""The emulated endorsement roots: generated once per installation, kept under the data directory.

Layout (``<data_dir>/tee/emulated/``, directories 0700, private keys 0600)::

    snp/ ark.pem ark.key ask.pem ask.key vcek.pem vcek.key platform.json
    tdx/ root-ca.pem root-ca.key pck-ca.pem pck-ca.key pck.pem pck.key
         tcb-signing.pem tcb-signing.key attestation.key platform.json

SEV-SNP mirrors AMD's chain: ARK (self-signed) → ASK → VCEK, RSA-4096 CAs signing with
RSASSA-PSS/SHA-384 (salt 48), an ECDSA P-384 VCEK carrying AMD's extensions (structVersion,
productName, blSPL/teeSPL/snpSPL/ucodeSPL and spl_4..7, hwID = the emulated chip id).
TDX mirrors Intel's: Root CA → PCK Platform CA → PCK certificate (with the SGX extension:
FMSPC, PCE-ID, TCB, PPID…), and Root CA → TCB Signing, all ECDSA P-256/SHA-256.

Every subject says **Emulated** (CN and O), so these roots are never confused with AMD's or
Intel's: a verifier loads :func:`emulated_anchors` as a separate trust anchor, and only when
its policy allows emulated evidence. Creation is atomic (a temporary directory renamed into
place), so two processes starting at once end up sharing one root.

The anchors a verifier loads are in :mod:`.anchors`.

Raises :class:`EmulatedPkiError` when the stored material is unreadable or its key files are
readable by others.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from enclave_runner.tee.errors import EmulatedPkiError

EMULATED_MARKER = "emulated"
ORGANIZATION = "ccpipe Emulated TEE (development only, not a hardware root)"
_RSA_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def pki_dir(data_dir: Path) -> Path:
    """Where the emulated roots of an installation live."""
    return Path(data_dir) / "tee" / "emulated"


def is_emulated_certificate(cert: x509.Certificate) -> bool:
    """True when the certificate's subject says it belongs to an emulated root."""
    return EMULATED_MARKER in cert.subject.rfc4514_string().lower()


def name(common_name: str) -> x509.Name:
    """An emulated subject: the CN given, O and OU saying it is emulated."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Emulated"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def issue(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    *,
    ca: bool,
    years: int,
    path_length: int | None = None,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.Certificate:
    """One certificate (self-signed when ``issuer`` is None); RSA issuers sign with PSS/SHA-384."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    issuer_name = subject if issuer is None else issuer.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    signer_public = issuer_key.public_key()
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        return builder.sign(issuer_key, hashes.SHA384(), rsa_padding=_RSA_PSS)
    return builder.sign(issuer_key, hashes.SHA256() if issuer_key.curve.key_size == 256 else hashes.SHA384())


class KeyStore:
    """One directory of PEM certificates, private keys (0600) and a ``platform.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def cert(self, stem: str) -> x509.Certificate:
        """The certificate ``<stem>.pem``."""
        try:
            return x509.load_pem_x509_certificate((self.path / f"{stem}.pem").read_bytes())
        except (OSError, ValueError) as exc:
            raise EmulatedPkiError(f"emulated certificate {self.path / stem}.pem is unreadable: {exc}") from exc

    def key(self, stem: str) -> PrivateKey:
        """The private key ``<stem>.key``; refused if group or others may read it."""
        path = self.path / f"{stem}.key"
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise EmulatedPkiError(
                    f"emulated private key {path} is accessible to other users (mode {mode & 0o777:o})",
                    hint=f"run: chmod 600 {path}",
                )
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise EmulatedPkiError(f"emulated private key {path} is unreadable: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise EmulatedPkiError(f"emulated private key {path} is neither RSA nor EC")
        return key

    def platform(self) -> dict[str, Any]:
        """The stored platform description."""
        try:
            value = json.loads((self.path / "platform.json").read_text())
        except (OSError, ValueError) as exc:
            raise EmulatedPkiError(f"{self.path / 'platform.json'} is unreadable: {exc}") from exc
        if not isinstance(value, dict):
            raise EmulatedPkiError(f"{self.path / 'platform.json'} is not a JSON object")
        return value

    def write_cert(self, stem: str, cert: x509.Certificate) -> None:
        """Write ``<stem>.pem``."""
        (self.path / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def write_key(self, stem: str, key: PrivateKey) -> None:
        """Write ``<stem>.key`` created with mode 0600 (never readable by others, even briefly)."""
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(self.path / f"{stem}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    def write_platform(self, platform: dict[str, Any]) -> None:
        """Write ``platform.json``."""
        (self.path / "platform.json").write_text(json.dumps(platform, indent=2, sort_keys=True) + "\n")


def load_or_create(directory: Path, create: Callable[[KeyStore], None]) -> KeyStore:
    """The key store at ``directory``, filled by ``create`` first if it does not exist yet.

    ``create`` writes into a private temporary directory that is then renamed into place; if
    another process won the race, its store is used and ours is discarded. Raises
    :class:`EmulatedPkiError` if the parent directory cannot be created or written.
    """
    if (directory / "platform.json").is_file():
        return KeyStore(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    except OSError as exc:
        raise EmulatedPkiError(f"cannot create the emulated roots under {directory.parent}: {exc}") from exc
    try:
        create(KeyStore(tmp))
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / "platform.json").is_file():
                raise
    except OSError as exc:
        raise EmulatedPkiError(f"cannot store the emulated roots in {directory}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return KeyStore(directory)


def random_hex(size: int) -> str:
    """``size`` random bytes as hex (chip ids, PPIDs)."""
    return secrets.token_bytes(size).hex()
