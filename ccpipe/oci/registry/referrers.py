"""OCI 1.1 referrers: the ``/v2/<name>/referrers/<digest>`` API and the tag-schema fallback.

A registry with the API answers ``GET /v2/<name>/referrers/<digest>`` with an image index
(200, even when empty). One without it (distribution 2.8 answers 404) keeps referrers in the
fallback tag ``sha256-<hex>`` of the subject, an index the client updates by
read-modify-write. That update is not atomic: two writers racing on the same subject can lose
one entry; ccpipe's deploy stage is the only writer of its images' referrers.
"""

from __future__ import annotations

import json

from ccpipe.oci.cosign_names import referrers_tag
from ccpipe.oci.documents import MEDIA_TYPE_INDEX
from ccpipe.oci.registry.client import RegistryClient
from ccpipe.oci.registry.errors import ManifestInvalid, ManifestNotFound, ReferenceInvalid
from ccpipe.oci.registry.manifests import ALGORITHMS, Json, media_type_of, parse_manifest
from ccpipe.oci.registry.transport import pull_scope
from ccpipe.schemas.digest import DigestInvalid, check_digest


def _check(client: RegistryClient, repository: str, digest: str) -> None:
    """Refuse a malformed repository or digest before it reaches a URL or a tag."""
    client.where(repository)
    try:
        check_digest(digest, ALGORITHMS)
    except DigestInvalid as exc:
        raise ReferenceInvalid(f"{client.where(repository)}: {exc.message}") from exc


async def _api(client: RegistryClient, repository: str, digest: str) -> list[Json] | None:
    """Referrers from the API, or None when the registry does not have it."""
    _check(client, repository, digest)
    reply = await client.transport.call(
        "GET",
        client.transport.url(f"/v2/{repository}/referrers/{digest}"),
        scope=pull_scope(repository),
        where=client.where(repository, f"referrers of {digest}"),
        kind="referrers",
        ok=(200, 404),
        headers={"Accept": MEDIA_TYPE_INDEX},
    )
    if reply.status == 404:
        return None
    doc = parse_manifest(reply.body, client.where(repository, f"referrers of {digest}"))
    return [m for m in doc.get("manifests") or [] if isinstance(m, dict)]


async def referrers_supported(client: RegistryClient, repository: str, digest: str) -> bool:
    """True if the registry serves the referrers API (for ``digest`` in ``repository``)."""
    return await _api(client, repository, digest) is not None


async def list_referrers(
    client: RegistryClient, repository: str, digest: str, *, artifact_type: str | None = None
) -> list[Json]:
    """Descriptors of the manifests whose ``subject`` is ``digest``, optionally one artifact type.

    Uses the API when the registry has it, else the ``sha256-<hex>`` fallback tag (absent → []).
    Raises ``RegistryError``s (``DigestMismatch`` if the fallback index is tampered with).
    """
    found = await _api(client, repository, digest)
    if found is None:
        try:
            index = await client.get_manifest(repository, referrers_tag(digest))
        except ManifestNotFound:
            return []
        doc = parse_manifest(index.body, client.where(repository, referrers_tag(digest)))
        found = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
    if artifact_type is not None:
        found = [m for m in found if m.get("artifactType") == artifact_type]
    return found


def referrer_descriptor(body: bytes, digest: str, where: str) -> tuple[Json, str]:
    """The index entry for referrer manifest ``body`` and its subject's digest.

    Raises :class:`ManifestInvalid` if the manifest has no subject.
    """
    doc = parse_manifest(body, where)
    subject = doc.get("subject")
    if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
        raise ManifestInvalid(f"{where}: manifest {digest} has no subject, so it is not a referrer")
    entry: Json = {"mediaType": media_type_of(doc), "digest": digest, "size": len(body)}
    artifact = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
    if artifact:
        entry["artifactType"] = artifact
    if doc.get("annotations"):
        entry["annotations"] = doc["annotations"]
    return entry, subject["digest"]


async def record_referrer(client: RegistryClient, repository: str, body: bytes, digest: str) -> bool:
    """After referrer manifest ``body`` was pushed, make it findable; True if the fallback tag was written.

    With the API the registry indexes it itself; without, the entry is added to the subject's
    ``sha256-<hex>`` index unless it is there already. Raises ``RegistryError``s.
    """
    where = client.where(repository, f"referrer {digest}")
    entry, subject = referrer_descriptor(body, digest, where)
    _check(client, repository, subject)
    if await referrers_supported(client, repository, subject):
        return False
    tag = referrers_tag(subject)
    try:
        current = await client.get_manifest(repository, tag)
        index = parse_manifest(current.body, client.where(repository, tag))
    except ManifestNotFound:
        index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": []}
    manifests = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    if any(m.get("digest") == digest for m in manifests):
        return False
    index["manifests"] = [*manifests, entry]
    new = json.dumps(index, separators=(",", ":")).encode()
    await client.push_manifest(repository, tag, new, MEDIA_TYPE_INDEX)
    return True
