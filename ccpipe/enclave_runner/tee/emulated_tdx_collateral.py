"""DCAP collateral for the emulated TDX platform, shaped like Intel PCS v4 responses.

* TCB info (``GET /tdx/certification/v4/tcb?fmspc=…``): body
  ``{"tcbInfo":{…},"signature":"<hex r‖s>"}``, the signature being ECDSA P-256/SHA-256 by the
  TCB Signing key over the exact bytes of the ``tcbInfo`` value as it appears in the body;
  issuer chain (PCS header ``TCB-Info-Issuer-Chain``) = TCB Signing cert ‖ Root CA.
* QE identity (``GET /tdx/certification/v4/qe/identity``): ``{"enclaveIdentity":{…},"signature":…}``,
  same signing rule and issuer chain.
* PCK CRL (issued by the PCK Platform CA) and Root CA CRL, DER, with no revoked serials.

The TCB info has one ``UpToDate`` level equal to the emulated platform (SGX components, PCESVN,
TDX components = TEE_TCB_SVN) and one ``OutOfDate`` level below it, so a verifier running
Intel's level-matching algorithm finds ``UpToDate`` for emulated quotes. The QE identity
matches the emulated QE report (MRSIGNER, ISVPRODID 2, masked attributes, ISVSVN).
Collateral is issued fresh on each call, valid from ``now`` for ``validity`` days.

Verifiers never hold the TCB Signing key: the emulated TDX backend *publishes* the collateral
(:func:`ensure_published`) into the installation's DCAP collateral directory
(:func:`ccpipe.evidence.emulated_roots.tdx_collateral_dir`), as Intel PCS publishes the real
one, reissuing it once it is a day old, and verifiers read it from there.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ccpipe.enclave_runner.tee.emulated_pki import (
    QE_ATTRIBUTES,
    QE_ISV_PROD_ID,
    KeyStore,
    load_p256_key,
    sign_p256_raw,
    tdx_store,
)
from ccpipe.evidence import dcap_collateral
from ccpipe.evidence.emulated_roots import tdx_collateral_dir
from ccpipe.evidence.errors import EmulatedPkiError

TCB_EVALUATION_DATA_NUMBER = 17


@dataclass(frozen=True)
class TdxCollateral:
    """Everything an offline DCAP verifier needs for emulated quotes."""

    tcb_info: str
    """PCS TCB info body (JSON text; the signature covers the ``tcbInfo`` value's exact text)."""
    tcb_info_issuer_chain: str
    """PEM: TCB Signing certificate, then Root CA."""
    qe_identity: str
    """PCS QE identity body (JSON text)."""
    qe_identity_issuer_chain: str
    """PEM: TCB Signing certificate, then Root CA."""
    pck_crl: bytes
    """DER CRL of the PCK Platform CA (empty)."""
    pck_crl_issuer_chain: str
    """PEM: PCK Platform CA, then Root CA."""
    root_ca_crl: bytes
    """DER CRL of the Root CA (empty)."""
    root_ca_pem: str
    """PEM of the emulated Root CA (the trust anchor)."""


def _ts(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed_body(store: KeyStore, key_name: str, value: dict[str, Any]) -> str:
    """``{"<key_name>":<value>,"signature":"<hex>"}`` with the signature over the value's exact text."""
    text = json.dumps(value, separators=(",", ":"))
    signature = sign_p256_raw(load_p256_key(store, "tcb-signing"), text.encode()).hex()
    return f'{{"{key_name}":{text},"signature":"{signature}"}}'


def _components(svns: list[int] | bytes) -> list[dict[str, int]]:
    return [{"svn": int(s)} for s in svns]


def _tcb_info(p: dict[str, Any], issued: dt.datetime, next_update: dt.datetime) -> dict[str, Any]:
    up_to_date = {
        "tcb": {
            "sgxtcbcomponents": _components(p["sgx_tcb_components"]),
            "pcesvn": p["pce_svn"],
            "tdxtcbcomponents": _components(bytes.fromhex(p["tee_tcb_svn"])),
        },
        "tcbDate": p["tcb_date"],
        "tcbStatus": "UpToDate",
    }
    out_of_date = {
        "tcb": {"sgxtcbcomponents": _components([0] * 16), "pcesvn": 0, "tdxtcbcomponents": _components([0] * 16)},
        "tcbDate": "2018-01-04T00:00:00Z",
        "tcbStatus": "OutOfDate",
        "advisoryIDs": ["EMULATED-SA-00001"],
    }
    return {
        "id": "TDX",
        "version": 3,
        "issueDate": _ts(issued),
        "nextUpdate": _ts(next_update),
        "fmspc": p["fmspc"],
        "pceId": p["pce_id"],
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "tdxModule": {"mrsigner": "00" * 48, "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
        "tcbLevels": [up_to_date, out_of_date],
    }


def _qe_identity(p: dict[str, Any], issued: dt.datetime, next_update: dt.datetime) -> dict[str, Any]:
    return {
        "id": "TD_QE",
        "version": 2,
        "issueDate": _ts(issued),
        "nextUpdate": _ts(next_update),
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": QE_ATTRIBUTES[:8].hex().upper() + "00" * 8,
        "attributesMask": "FBFFFFFFFFFFFFFF" + "00" * 8,
        "mrsigner": p["qe_mrsigner"].upper(),
        "isvprodid": QE_ISV_PROD_ID,
        "tcbLevels": [{"tcb": {"isvsvn": p["qe_isv_svn"]}, "tcbDate": p["tcb_date"], "tcbStatus": "UpToDate"}],
    }


def _crl(store: KeyStore, ca: str, issued: dt.datetime, next_update: dt.datetime) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(store.cert(ca).subject)
        .last_update(issued)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    return builder.sign(load_p256_key(store, ca), hashes.SHA256()).public_bytes(Encoding.DER)


def emulated_tdx_collateral(data_dir: Path, *, now: dt.datetime | None = None, validity: int = 30) -> TdxCollateral:
    """Signed TCB info, QE identity and CRLs for the emulated TDX platform at ``data_dir``.

    Raises :class:`EmulatedPkiError` if the emulated roots are unusable.
    """
    store = tdx_store(data_dir)
    issued = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    next_update = issued + dt.timedelta(days=validity)
    p = store.platform()

    def pem(*stems: str) -> str:
        return "".join(store.cert(s).public_bytes(Encoding.PEM).decode() for s in stems)

    try:
        tcb_info = _signed_body(store, "tcbInfo", _tcb_info(p, issued, next_update))
        qe_identity = _signed_body(store, "enclaveIdentity", _qe_identity(p, issued, next_update))
    except (KeyError, TypeError, ValueError) as exc:
        raise EmulatedPkiError(f"{store.path / 'platform.json'} is not an emulated TDX platform: {exc}") from exc
    return TdxCollateral(
        tcb_info=tcb_info,
        tcb_info_issuer_chain=pem("tcb-signing", "root-ca"),
        qe_identity=qe_identity,
        qe_identity_issuer_chain=pem("tcb-signing", "root-ca"),
        pck_crl=_crl(store, "pck-ca", issued, next_update),
        pck_crl_issuer_chain=pem("pck-ca", "root-ca"),
        root_ca_crl=_crl(store, "root-ca", issued, next_update),
        root_ca_pem=pem("root-ca"),
    )


REPUBLISH_AFTER_S = 24 * 3600.0
"""Age after which :func:`ensure_published` reissues the collateral (well inside its 30 days)."""


def publish(data_dir: Path, *, now: dt.datetime | None = None, validity: int = 30) -> Path:
    """Issue collateral (:func:`emulated_tdx_collateral`) and write it where verifiers read it.

    Returns the platform's collateral directory. Raises :class:`EmulatedPkiError` if the roots
    are unusable or the directory cannot be written.
    """
    c = emulated_tdx_collateral(data_dir, now=now, validity=validity)
    fmspc = str(tdx_store(data_dir).platform()["fmspc"])
    published = dcap_collateral.TdxCollateral(
        tcb_info=c.tcb_info.encode(),
        qe_identity=c.qe_identity.encode(),
        tcb_signing_chain=c.tcb_info_issuer_chain.encode(),
        pck_crl=c.pck_crl,
        root_crl=c.root_ca_crl,
    )
    try:
        return dcap_collateral.write_collateral_dir(tdx_collateral_dir(data_dir), fmspc, published)
    except OSError as exc:
        raise EmulatedPkiError(f"cannot publish the emulated TDX collateral under {data_dir}: {exc}") from exc


def ensure_published(data_dir: Path, fmspc: str) -> None:
    """Publish the collateral unless a set younger than :data:`REPUBLISH_AFTER_S` is there (one ``stat``)."""
    tcb_info = tdx_collateral_dir(data_dir) / fmspc.lower() / dcap_collateral.TCB_INFO_FILE
    try:
        age = time.time() - tcb_info.stat().st_mtime
    except OSError:
        age = REPUBLISH_AFTER_S
    if age >= REPUBLISH_AFTER_S:
        publish(data_dir)
