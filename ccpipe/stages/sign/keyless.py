"""Keyless Sigstore signing and verification of image signatures (off by default).

Signing goes through sigstore-python against the instance a ``ClientTrustConfig`` names (a
private one here; the public-good instance needs a network route these machines lack): an
ephemeral P-256 key, a short-lived certificate from the CA for the OIDC identity token, and a
``hashedrekord`` entry in the transparency log. :class:`SigstoreSigner` plugs that into
:func:`ccpipe.stages.sign.cosign.sign_image` / ``attest_image`` (the :class:`~ccpipe.stages.sign.cosign.Signer`
protocol). Each signature layer then carries, besides cosign's signature annotation:

* ``dev.sigstore.cosign/certificate`` and ``dev.sigstore.cosign/chain`` (PEM), and
  ``dev.sigstore.cosign/bundle`` = ``{"SignedEntryTimestamp", "Payload": {"body",
  "integratedTime", "logIndex", "logID"}}`` — what cosign and containers/image read;
* ``dev.ccpipe.sigstore/bundle`` — the whole Sigstore bundle (certificate, log entry with its
  inclusion proof and signed checkpoint), so verification needs no network.

:func:`verify_image_keyless` accepts a signature only if sigstore-python verifies that bundle
against the trusted root (certificate chain to the CA at the log's time, SCT, SET, inclusion
proof, checkpoint), for the expected identity and OIDC issuer, over the exact payload bytes
stored in the layer, with the same signature as the cosign annotation; then the payload checks
of :func:`~ccpipe.stages.sign.cosign.verify_image` apply (digest, identity).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, ClientTrustConfig
from sigstore.oidc import IdentityToken
from sigstore.sign import Signer as SigstoreSessionSigner
from sigstore.sign import SigningContext
from sigstore.verify import Verifier, policy

from ccpipe.oci.cosign_names import (
    ANNOTATION_CERTIFICATE,
    ANNOTATION_CHAIN,
    ANNOTATION_REKOR_BUNDLE,
    SIGNATURE_ANNOTATION,
)
from ccpipe.schemas.errors import ConfigurationError, TransientError
from ccpipe.stages.sign.config import SignConfig
from ccpipe.stages.sign.cosign import verify_image_with

ANNOTATION_SIGSTORE_BUNDLE = "dev.ccpipe.sigstore/bundle"


class KeylessUnavailable(TransientError):
    """The Sigstore CA or transparency log did not answer or refused the request."""

    code = "sign.keyless.unavailable"
    default_hint = "check the CA and log URLs of the Sigstore trust configuration and the identity token"


def load_trust_config(source: str | Path | Mapping[str, Any]) -> ClientTrustConfig:
    """A ``ClientTrustConfig`` from a file, JSON text or data; raises :class:`ConfigurationError`."""
    try:
        if isinstance(source, Mapping):
            text = json.dumps(dict(source))
        elif isinstance(source, Path) or not source.lstrip().startswith("{"):
            text = Path(source).read_text()
        else:
            text = source
        return ClientTrustConfig.from_json(text)
    except (OSError, ValueError, SigstoreError) as exc:
        raise ConfigurationError(
            f"the Sigstore trust configuration cannot be used: {exc}",
            hint="give a ClientTrustConfig JSON (trustedRoot + signingConfig), e.g. `sigstore --trust-config`'s",
            code="sign.keyless.trust_config",
        ) from exc


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class SigstoreSigner:
    """A cosign :class:`~ccpipe.stages.sign.cosign.Signer` that signs through Sigstore (Fulcio + Rekor).

    One ephemeral key and certificate serve every signature made before the certificate expires.
    """

    def __init__(self, trust_config: ClientTrustConfig, identity_token: str, *, rekor_pem: bytes = b"") -> None:
        self.trust_config = trust_config
        self.rekor_pem = rekor_pem
        try:
            self._token = IdentityToken(identity_token)
        except SigstoreError as exc:
            raise ConfigurationError(f"the Sigstore identity token is not usable: {exc}",
                                     code="sign.keyless.token") from exc  # fmt: skip
        self._session: SigstoreSessionSigner | None = None
        self._bundles: dict[bytes, Bundle] = {}

    def _signer(self) -> SigstoreSessionSigner:
        if self._session is None:
            self._session = SigstoreSessionSigner(self._token, SigningContext.from_trust_config(self.trust_config))
        return self._session

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (ECDSA P-256 / SHA-256, as a key would) and log it; returns the DER signature.

        Raises :class:`KeylessUnavailable` when the CA or the log fails.
        """
        try:
            bundle = self._signer().sign_artifact(data)
        except Exception as exc:
            raise KeylessUnavailable(f"keyless signing failed: {type(exc).__name__}: {exc}") from exc
        self._bundles[bundle.signature] = bundle
        return bundle.signature

    def policy_requirement(self) -> dict[str, Any]:
        """The containers-policy.json ``sigstoreSigned`` requirement a guest checks these signatures with.

        The CA chain, the token's OIDC issuer and identity, and (when known) the log's public key.
        """
        fulcio = {
            "caData": base64.b64encode(self.chain_pem()).decode(),
            "oidcIssuer": self._token.issuer,
            "subjectEmail": self._token.identity,
        }
        requirement: dict[str, Any] = {"type": "sigstoreSigned", "fulcio": fulcio,
                                       "signedIdentity": {"type": "matchRepository"}}  # fmt: skip
        if self.rekor_pem:
            requirement["rekorPublicKeyData"] = base64.b64encode(self.rekor_pem).decode()
        return requirement

    def chain_pem(self) -> bytes:
        """The CA certificates of the trusted root (PEM), which certificates are checked against."""
        return "".join(_pem(c) for c in self.trust_config.trusted_root.get_fulcio_certs()).encode()

    def annotations(self, payload: bytes, signature: bytes) -> dict[str, str]:
        """Certificate, chain and log entry of the signature ``sign`` just made."""
        bundle = self._bundles.pop(signature)
        doc = json.loads(bundle.to_json())
        entry = doc["verificationMaterial"]["tlogEntries"][0]
        rekor = {
            "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {
                "body": entry["canonicalizedBody"],
                "integratedTime": int(entry["integratedTime"]),
                "logIndex": int(entry["logIndex"]),
                "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
            },
        }
        return {
            ANNOTATION_CERTIFICATE: _pem(bundle.signing_certificate),
            ANNOTATION_CHAIN: self.chain_pem().decode(),
            ANNOTATION_REKOR_BUNDLE: json.dumps(rekor, separators=(",", ":")),
            ANNOTATION_SIGSTORE_BUNDLE: bundle.to_json(),
        }


def keyless_signer(config: SignConfig, *, data_dir: Path) -> tuple[SigstoreSigner, bytes]:
    """The sign stage's keyless signer from its configuration, and the CA chain (PEM) guests trust.

    Raises :class:`ConfigurationError` when the trust configuration or the token cannot be read.
    """
    if config.sigstore_trust_config is None or config.sigstore_token_file is None:
        raise ConfigurationError("keyless signing needs CCPIPE_SIGN_SIGSTORE_TRUST_CONFIG and "
                                 "CCPIPE_SIGN_SIGSTORE_TOKEN_FILE", code="sign.config.keyless")  # fmt: skip
    try:
        token = config.sigstore_token_file.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"the identity token file {config.sigstore_token_file} cannot be read",
                                 code="sign.keyless.token") from exc  # fmt: skip
    signer = SigstoreSigner(
        load_trust_config(config.sigstore_trust_config),
        token,
        rekor_pem=rekor_public_key_pem(config.sigstore_trust_config),
    )
    return signer, signer.chain_pem()


def rekor_public_key_pem(trust_config_file: Path) -> bytes:
    """The first transparency log's public key (PEM) named by a ClientTrustConfig file; b"" if none."""
    try:
        tlogs = json.loads(trust_config_file.read_text())["trustedRoot"]["tlogs"]
        der = base64.b64decode(tlogs[0]["publicKey"]["rawBytes"])
        key = serialization.load_der_public_key(der)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return b""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_image_keyless(
    layout_path: str | Path,
    ref: str | None,
    trust_config: ClientTrustConfig,
    *,
    cert_identity: str,
    cert_oidc_issuer: str,
    identity: str | None = None,
) -> dict[str, Any]:
    """The verified simple-signing payload of image ``ref``, signed keylessly by ``cert_identity``.

    ``cert_identity`` (email or URI SAN) and ``cert_oidc_issuer`` are what the certificate must
    name, like cosign's ``--certificate-identity`` / ``--certificate-oidc-issuer``; ``identity``
    the docker-reference. Raises what :func:`~ccpipe.stages.sign.cosign.verify_image` raises.
    """
    verifier = Verifier(trusted_root=trust_config.trusted_root)
    wanted = policy.Identity(identity=cert_identity, issuer=cert_oidc_issuer)

    def check(payload: bytes, sig: bytes, annotations: Mapping[str, str]) -> str | None:
        raw = annotations.get(ANNOTATION_SIGSTORE_BUNDLE)
        if raw is None:
            return "the signature carries no Sigstore bundle (not keyless)"
        try:
            bundle = Bundle.from_json(raw)
            if bundle.signature != sig:
                return f"the {SIGNATURE_ANNOTATION} annotation is not the bundle's signature"
            verifier.verify_artifact(payload, bundle, wanted)
        except (SigstoreError, ValueError) as exc:
            return f"Sigstore verification failed: {exc}"
        return None

    return verify_image_with(layout_path, ref, check, identity=identity, what="verifies keylessly")
