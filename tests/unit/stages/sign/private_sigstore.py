"""A private Sigstore deployment on 127.0.0.1, for tests: OIDC tokens, a Fulcio-like CA, a Rekor-v1-like log.

* tokens: ES256 JWTs from a local issuer (``iss``, ``aud=sigstore``, ``sub``/``email``, times);
* CA (``POST /api/v2/signingCert``): checks the bearer token's signature and the CSR's proof of
  possession, issues a 10-minute leaf (empty subject, critical email SAN, codeSigning, the
  Fulcio issuer extensions ``1.3.6.1.4.1.57264.1.1``/``.1.8``) with an embedded precertificate
  SCT signed by a CT key;
* log (``POST /api/v1/log/entries``): appends the RFC 8785 body to an RFC 6962 tree and answers
  with the entry, its signed entry timestamp (SET), an inclusion proof and a signed checkpoint.

:meth:`PrivateSigstore.trust_config` is the ``ClientTrustConfig`` JSON naming all of it. Test
tooling only: nothing here is secure.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from joserfc import jwt
from joserfc.jwk import ECKey

from ccpipe.pipeline.audit.merkle import inclusion_proof, leaf_hash, root

ISSUER = "https://oidc.private.test"
OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OID_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ORIGIN = "rekor.private.test - 1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _der_len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else b"\x82" + n.to_bytes(2, "big")


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


class PrivateSigstore:
    """The deployment; use as a context manager (serves while open)."""

    def __init__(self) -> None:
        self.oidc_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.log_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "private-fulcio")])
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )  # fmt: skip
        self.start = now
        self.leaves: list[bytes] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PrivateSigstore:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- tokens ---------------------------------------------------------------------------------

    def token(self, email: str, *, issuer: str = ISSUER, ttl_s: int = 600) -> str:
        """An identity token for ``email``."""
        now = int(time.time())
        claims = {"iss": issuer, "aud": "sigstore", "sub": email, "email": email, "iat": now, "nbf": now,
                  "exp": now + ttl_s}  # fmt: skip
        return jwt.encode({"alg": "ES256"}, claims, ECKey.import_key(self.oidc_key), algorithms=["ES256"])

    # -- CA -------------------------------------------------------------------------------------

    def issue(self, csr_pem: bytes, token: str) -> list[str]:
        """Leaf and CA certificates (PEM) for a CSR, bound to the token's identity."""
        claims = jwt.decode(token, ECKey.import_key(self.oidc_key.public_key()), algorithms=["ES256"]).claims
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR proof of possession failed")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        serial = x509.random_serial_number()

        def builder() -> x509.CertificateBuilder:
            pub = csr.public_key()
            return (
                x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
                .public_key(pub).serial_number(serial).not_valid_before(now)
                .not_valid_after(now + dt.timedelta(minutes=10))
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(claims["email"])]), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                               critical=False)
                .add_extension(x509.UnrecognizedExtension(OID_ISSUER_V1, claims["iss"].encode()), critical=False)
                .add_extension(x509.UnrecognizedExtension(OID_ISSUER_V2, _der(0x0C, claims["iss"].encode())),
                               critical=False)
            )  # fmt: skip

        tbs = builder().sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        ts_ms = int(time.time() * 1000)
        issuer_hash = hashlib.sha256(_spki(self.ca_key)).digest()
        signed = struct.pack("!BBQH", 0, 0, ts_ms, 1) + issuer_hash + len(tbs).to_bytes(3, "big") + tbs + b"\0\0"
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (b"\0" + hashlib.sha256(_spki(self.ct_key)).digest() + struct.pack("!Q", ts_ms) + b"\0\0" + b"\x04\x03"
               + struct.pack("!H", len(sig)) + sig)  # fmt: skip
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        cert = (
            builder()
            .add_extension(x509.UnrecognizedExtension(OID_SCT_LIST, _der(0x04, sct_list)), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        assert cert.tbs_precertificate_bytes == tbs
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, self.ca_cert)]

    # -- log ------------------------------------------------------------------------------------

    def append(self, proposed: dict[str, Any]) -> dict[str, Any]:
        """Log one proposed entry; the Rekor v1 response."""
        body = rfc8785.dumps(proposed)
        log_id = hashlib.sha256(_spki(self.log_key)).hexdigest()
        with self.lock:
            index = len(self.leaves)
            self.leaves.append(leaf_hash(body))
            size = len(self.leaves)
            tree_root = root(self.leaves)
            proof = inclusion_proof(self.leaves, index, size)
        t = int(time.time())
        entry: dict[str, Any] = {"body": _b64(body), "integratedTime": t, "logID": log_id, "logIndex": index}
        set_sig = self.log_key.sign(rfc8785.dumps(entry), ec.ECDSA(hashes.SHA256()))
        note = f"{ORIGIN}\n{size}\n{_b64(tree_root)}\nTimestamp: {time.time_ns()}\n"
        note_sig = self.log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        key_hint = hashlib.sha256(_spki(self.log_key)).digest()[:4]
        checkpoint = f"{note}\n\u2014 {ORIGIN.split()[0]} {_b64(key_hint + note_sig)}\n"
        entry["verification"] = {
            "signedEntryTimestamp": _b64(set_sig),
            "inclusionProof": {"logIndex": index, "treeSize": size, "rootHash": tree_root.hex(),
                               "hashes": [h.hex() for h in proof], "checkpoint": checkpoint},
        }  # fmt: skip
        return {uuid.uuid4().hex: entry}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        deployment = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                try:
                    if self.path == "/api/v2/signingCert":
                        token = self.headers["Authorization"].removeprefix("Bearer ")
                        chain = deployment.issue(base64.b64decode(body["certificateSigningRequest"]), token)
                        out: Any = {"signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}}
                        status = 200
                    elif self.path == "/api/v1/log/entries":
                        out, status = deployment.append(body), 201
                    else:
                        out, status = {"message": "not found"}, 404
                except Exception as exc:
                    out, status = {"message": str(exc)}, 400
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    # -- trust ----------------------------------------------------------------------------------

    def trust_config(self) -> dict[str, Any]:
        """The ``ClientTrustConfig`` JSON of this deployment."""
        start = {"start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ")}

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": _b64(_spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": start},
                    "logId": {"keyId": _b64(hashlib.sha256(_spki(key)).digest())}}  # fmt: skip

        ca_der = self.ca_cert.public_bytes(serialization.Encoding.DER)
        trusted_root = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.log_key, self.url)],
            "ctlogs": [log(self.ct_key, self.url + "/ct")],
            "certificateAuthorities": [{
                "subject": {"organization": "ccpipe tests", "commonName": "private-fulcio"}, "uri": self.url,
                "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]},
                "validFor": start,
            }],
            "timestampAuthorities": [],
        }  # fmt: skip
        signing_config = {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [{"url": self.url, "majorApiVersion": 1, "validFor": start, "operator": "tests"}],
            "oidcUrls": [],
            "rekorTlogUrls": [{"url": self.url, "majorApiVersion": 1, "validFor": start, "operator": "tests"}],
            "tsaUrls": [],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        }
        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": trusted_root,
            "signingConfig": signing_config,
        }
