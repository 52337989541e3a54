"""Initdata: the TOML document that binds the exact workload into the TEE's launch data.

CoCo's initdata (``version = "0.1.0"``, ``algorithm = "sha256" | "sha384" | "sha512"``, a
``[data]`` table of file name → text) carries the guest's configuration. Its digest is the
``algorithm`` hash of the **whole document's bytes** (re-encoding changes it), and the host
puts that digest in the TEE's launch data where the guest cannot change it:

* SEV-SNP ``HOST_DATA`` (32 bytes): the SHA-256 digest as is;
* TDX ``MRCONFIGID`` (48 bytes): the SHA-256 digest followed by 16 zero bytes. We pick the
  SHA-256 digest zero-padded (not SHA-384) because that is what Trustee's verifier compares
  (the digest of ``algorithm``, padded to the field) and what Kata writes, so one document has
  one digest on both TEEs.

What ccpipe writes in ``[data]``:

* ``aa.toml`` — the attestation agent's KBS (``[token_configs.kbs] url``);
* ``cdh.toml`` — the confidential data hub: ``[kbc] name = "cc_kbc"``, ``url`` and
  ``[image] image_security_policy_uri`` (a ``kbs:///…`` or ``file://`` URI) or
  ``image_security_policy`` (the containers-policy.json text itself);
* ``ccpipe.toml`` — ``[workload] image_digest`` (and ``image`` when a reference is given): the
  image the runner must pull, so a report proves which workload it was launched for.

Pure functions; no I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from collections.abc import Mapping
from typing import Any

import tomli_w

from ccpipe.evidence.errors import InvalidInitdata
from ccpipe.schemas.digest import SHA256_ONLY, is_digest

INITDATA_VERSION = "0.1.0"
ALGORITHMS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
SNP_HOST_DATA_SIZE = 32
TDX_MR_CONFIG_ID_SIZE = 48


def make_initdata(
    kbs_url: str,
    image_digest: str,
    signature_policy: str | Mapping[str, Any],
    *,
    image: str | None = None,
    kbs_cert_pem: str | None = None,
    extra_data: Mapping[str, str] | None = None,
    algorithm: str = "sha256",
) -> str:
    """The initdata TOML for one workload.

    ``signature_policy`` is either a URI (``kbs:///default/security-policy/<tag>`` or
    ``file://…``) where the guest fetches its containers-policy.json, or that policy itself (a
    mapping, or its JSON text). ``extra_data`` adds more ``[data]`` entries (e.g. ``policy.rego``).
    The text is deterministic for the same arguments. Raises :class:`InvalidInitdata` for an
    image digest that is not ``sha256:<64 hex>``, an unknown algorithm, or a clash with the
    entries ccpipe writes.
    """
    if not is_digest(image_digest, SHA256_ONLY):
        raise InvalidInitdata(f"image digest {image_digest!r} is not sha256:<64 lower-case hex>")
    if algorithm not in ALGORITHMS:
        raise InvalidInitdata(f"initdata algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    kbc: dict[str, Any] = {"name": "cc_kbc", "url": kbs_url}
    if kbs_cert_pem:
        kbc["kbs_cert"] = kbs_cert_pem
    image_section: dict[str, str] = {}
    if isinstance(signature_policy, str) and signature_policy.startswith(("kbs://", "file://")):
        image_section["image_security_policy_uri"] = signature_policy
    else:
        image_section["image_security_policy"] = _policy_text(signature_policy)
    token: dict[str, Any] = {"url": kbs_url}
    if kbs_cert_pem:
        token["cert"] = kbs_cert_pem
    workload: dict[str, str] = {"image_digest": image_digest}
    if image:
        workload["image"] = image
    data = {
        "aa.toml": tomli_w.dumps({"token_configs": {"kbs": token}}),
        "cdh.toml": tomli_w.dumps({"kbc": kbc, "image": image_section}),
        "ccpipe.toml": tomli_w.dumps({"workload": workload}),
    }
    for name, text in (extra_data or {}).items():
        if name in data:
            raise InvalidInitdata(f"initdata entry {name!r} is written by ccpipe and cannot be given in extra_data")
        data[name] = text
    doc = {"version": INITDATA_VERSION, "algorithm": algorithm, "data": data}
    return tomli_w.dumps(doc, multiline_strings=True)


def _policy_text(policy: str | Mapping[str, Any]) -> str:
    if isinstance(policy, str):
        try:
            json.loads(policy)
        except ValueError as exc:
            raise InvalidInitdata("signature policy is neither a kbs:// or file:// URI nor JSON") from exc
        return policy
    return json.dumps(policy, sort_keys=True, indent=2)


def parse_initdata(text: str) -> dict[str, Any]:
    """Parse and check an initdata document; returns ``{"version", "algorithm", "data"}``.

    Raises :class:`InvalidInitdata` if it is not TOML, lacks ``version``/``algorithm``/``data``,
    names an unknown algorithm, or has a non-string ``data`` entry.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInitdata(f"initdata is not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or inline table
        raise InvalidInitdata("initdata nests arrays or inline tables too deeply") from exc
    for key in ("version", "algorithm", "data"):
        if key not in doc:
            raise InvalidInitdata(f"initdata has no {key!r}")
    if doc["algorithm"] not in ALGORITHMS:
        raise InvalidInitdata(f"initdata algorithm {doc['algorithm']!r} is not one of {', '.join(ALGORITHMS)}")
    data = doc["data"]
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidInitdata("initdata [data] must map file names to strings")
    return doc


@functools.lru_cache(maxsize=256)
def initdata_digest(text: str) -> bytes:
    """The digest of an initdata document: its ``algorithm`` over the UTF-8 bytes of the whole text.

    Cached by text (the KBS sees the same few documents on every handshake; parsing the TOML
    cost more than hashing it). Raises :class:`InvalidInitdata` (see :func:`parse_initdata`).
    """
    algorithm = parse_initdata(text)["algorithm"]
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. "\ud800" in the JSON that carried it
        raise InvalidInitdata("initdata holds a character that is not UTF-8 encodable (a lone surrogate)") from exc
    return ALGORITHMS[algorithm](raw).digest()


def _fit(digest: bytes, size: int) -> bytes:
    """Zero-pad or truncate to the field size, as the guest and Trustee's verifier do."""
    return digest[:size].ljust(size, b"\0")


def snp_host_data(digest: bytes) -> bytes:
    """SEV-SNP HOST_DATA (32 bytes) for an initdata digest."""
    return _fit(digest, SNP_HOST_DATA_SIZE)


def tdx_mr_config_id(digest: bytes) -> bytes:
    """TDX MRCONFIGID (48 bytes) for an initdata digest: SHA-256 digest ‖ 16 zero bytes."""
    return _fit(digest, TDX_MR_CONFIG_ID_SIZE)
