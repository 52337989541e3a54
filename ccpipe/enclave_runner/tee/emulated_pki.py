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
Intel's: a verifier loads their public half (:mod:`ccpipe.evidence.emulated_roots`, which also
owns this layout) as a separate trust anchor, and only when
its policy allows emulated evidence. Creation is atomic (a temporary directory renamed into
place), so two processes starting at once end up sharing one root.

Raises :class:`EmulatedPkiError` when the stored material is unreadable or its key files are
readable by others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ccpipe.evidence.cert_extensions import PckExtensions, VcekExtensions
from ccpipe.evidence.emulated_roots import EmulatedAnchors, pki_dir, read_emulated_anchors
from ccpipe.evidence.errors import EmulatedPkiError

EMULATED_MARKER = "emulated"
ORGANIZATION = "ccpipe Emulated TEE (development only, not a hardware root)"
_RSA_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


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


SNP_PLATFORM: dict[str, Any] = {
    "product": "Genoa",
    "cpuid": [0x19, 0x11, 0x01],
    "tcb": {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 25},
    "firmware": [1, 55, 40],
}


def _create_snp(store: KeyStore) -> None:
    platform: dict[str, Any] = {**SNP_PLATFORM, "chip_id": random_hex(64)}
    tcb = platform["tcb"]
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ark = issue(name("ARK-Emulated"), ark_key.public_key(), None, ark_key, ca=True, years=25)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ask = issue(name("SEV-Emulated"), ask_key.public_key(), ark, ark_key, ca=True, path_length=0, years=25)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    extensions = VcekExtensions(
        struct_version=0,
        product_name=platform["product"],
        bl_spl=tcb["bootloader"],
        tee_spl=tcb["tee"],
        snp_spl=tcb["snp"],
        ucode_spl=tcb["microcode"],
        fmc_spl=None,
        hw_id=bytes.fromhex(platform["chip_id"]),
    ).extensions()
    vcek = issue(
        name("SEV-VCEK-Emulated"), vcek_key.public_key(), ask, ask_key, ca=False, years=7, extensions=extensions
    )
    for stem, cert, key in (("ark", ark, ark_key), ("ask", ask, ask_key), ("vcek", vcek, vcek_key)):
        store.write_cert(stem, cert)
        store.write_key(stem, key)
    store.write_platform(platform)


def snp_store(data_dir: Path) -> KeyStore:
    """The emulated SEV-SNP key store of the installation (created on first use)."""
    return load_or_create(pki_dir(data_dir) / "snp", _create_snp)


TDX_PLATFORM: dict[str, Any] = {
    "fmspc": "e3e3e3000000",  # fictitious: no real platform has this FMSPC
    "pce_id": "0000",
    "sgx_tcb_components": [5, 5, 2, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
    "pce_svn": 11,
    "tee_tcb_svn": "03000500000000000000000000000000",
    "mr_seam": hashlib.sha384(b"ccpipe/emulated-tdx-module/v1").hexdigest(),
    "qe_mrsigner": hashlib.sha256(b"ccpipe/emulated-td-qe/v1").hexdigest(),
    "qe_isv_svn": 4,
}

QE_ISV_PROD_ID = 2  # TD_QE: the emulated quoting enclave's identity, in its report and in the QE identity
QE_ATTRIBUTES = bytes.fromhex("1100000000000000e700000000000000")


def sign_p256_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as r ‖ s, 32 bytes each, big-endian (the DCAP encoding)."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def load_p256_key(store: KeyStore, stem: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key ``<stem>.key`` of ``store``; raises :class:`EmulatedPkiError` otherwise."""
    key = store.key(stem)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise EmulatedPkiError(f"emulated key {store.path / stem}.key is not ECDSA P-256")
    return key


def _create_tdx(store: KeyStore) -> None:
    platform = {**TDX_PLATFORM, "ppid": random_hex(16), "platform_instance_id": random_hex(16)}
    platform["cpu_svn"] = bytes(platform["sgx_tcb_components"]).hex()
    platform["qe_auth_data"] = bytes(range(32)).hex()
    platform["tcb_date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT00:00:00Z")
    keys = {stem: ec.generate_private_key(ec.SECP256R1()) for stem in ("root-ca", "pck-ca", "pck", "tcb-signing")}
    root = issue(
        name("Emulated SGX Root CA"),
        keys["root-ca"].public_key(),
        None,
        keys["root-ca"],
        ca=True,
        years=25,
        path_length=1,
    )
    pck_ca = issue(
        name("Emulated SGX PCK Platform CA"),
        keys["pck-ca"].public_key(),
        root,
        keys["root-ca"],
        ca=True,
        years=15,
        path_length=0,
    )
    pck_ext = PckExtensions(
        ppid=bytes.fromhex(platform["ppid"]),
        sgx_tcb_components=tuple(platform["sgx_tcb_components"]),
        pce_svn=platform["pce_svn"],
        cpu_svn=bytes.fromhex(platform["cpu_svn"]),
        pce_id=bytes.fromhex(platform["pce_id"]),
        fmspc=bytes.fromhex(platform["fmspc"]),
        sgx_type=1,  # Scalable
        platform_instance_id=bytes.fromhex(platform["platform_instance_id"]),
        configuration=(True, False, True),
    )
    pck = issue(
        name("Emulated SGX PCK Certificate"), keys["pck"].public_key(), pck_ca, keys["pck-ca"], ca=False, years=7,
        extensions=[pck_ext.extension()],
    )  # fmt: skip
    tcb = issue(
        name("Emulated SGX TCB Signing"), keys["tcb-signing"].public_key(), root, keys["root-ca"], ca=False, years=7
    )
    for stem, cert in (("root-ca", root), ("pck-ca", pck_ca), ("pck", pck), ("tcb-signing", tcb)):
        store.write_cert(stem, cert)
        store.write_key(stem, keys[stem])
    store.write_key("attestation", ec.generate_private_key(ec.SECP256R1()))
    store.write_platform(platform)


def tdx_store(data_dir: Path) -> KeyStore:
    """The emulated TDX key store of the installation (created on first use)."""
    return load_or_create(pki_dir(data_dir) / "tdx", _create_tdx)


def emulated_anchors(data_dir: Path, *, create: bool = True) -> EmulatedAnchors:
    """The emulated roots of the installation at ``data_dir``.

    With ``create`` (the default) missing roots are generated first; without it, only roots that
    an emulated backend already made are read (absent ones are None), as a verifier does with
    :func:`ccpipe.evidence.emulated_roots.read_emulated_anchors`. Raises :class:`EmulatedPkiError`
    if they cannot be created or read.
    """
    if create:
        snp_store(data_dir)
        tdx_store(data_dir)
    return read_emulated_anchors(data_dir)
