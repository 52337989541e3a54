"""Pure parts of the registry client: challenges, Retry-After, status mapping, names."""

from __future__ import annotations

import email.utils
import time

import pytest

from ccpipe.oci.cosign_names import referrers_tag
from ccpipe.oci.registry.auth import Authenticator, Credentials, parse_challenge
from ccpipe.oci.registry.errors import (
    BlobMissing,
    DigestMismatch,
    ManifestBlobsCollected,
    ManifestInvalid,
    ManifestNotFound,
    RegistryAuthError,
    RegistryDenied,
    RegistryRateLimited,
    RegistryRequestRejected,
    RegistryServerError,
)
from ccpipe.oci.registry.manifests import check_reference, check_repository, descriptors, parse_manifest
from ccpipe.oci.registry.transport import error_for, parse_retry_after
from ccpipe.schemas.errors import TransientError


def test_bearer_challenge_with_comma_in_quoted_scope() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push repository:c:pull"'
    )
    assert c.scheme == "bearer"
    assert c.params["realm"] == "https://auth.example/token"
    assert c.params["service"] == "registry.example"
    assert c.scopes == ["repository:a/b:pull,push", "repository:c:pull"]


def test_basic_challenge_and_unreadable_header() -> None:
    assert parse_challenge('Basic realm="Registry Realm"').scheme == "basic"
    with pytest.raises(RegistryAuthError):
        parse_challenge("realm=x")


async def test_authenticator_asks_for_challenge_and_request_scopes_then_reuses_token() -> None:
    calls: list[tuple[str, list[tuple[str, str]], str | None]] = []

    async def fetch(realm: str, query: list[tuple[str, str]], basic: str | None) -> str:
        calls.append((realm, query, basic))
        return f"t{len(calls)}"

    auth = Authenticator(Credentials("u", "p"), "r.example")
    scope = "repository:a:pull,push repository:b:pull"
    header = 'Bearer realm="https://t/x",service="s",scope="repository:a:pull,push"'
    assert await auth.answer(header, scope, None, fetch)
    assert auth.header_for(scope) == "Bearer t1"
    realm, query, basic = calls[0]
    assert realm == "https://t/x" and basic == Credentials("u", "p").basic_header()
    assert query == [("service", "s"), ("scope", "repository:a:pull,push"), ("scope", "repository:b:pull")]
    # refused with the current token: fetch once more; refused again with the same token: stop
    assert await auth.answer(header, scope, "Bearer t1", fetch)

    async def same(realm: str, query: list[tuple[str, str]], basic: str | None) -> str:
        return "t2"

    assert not await auth.answer(header, scope, "Bearer t2", same)


async def test_basic_challenge_without_credentials_is_refused() -> None:
    async def never(realm: str, query: list[tuple[str, str]], basic: str | None) -> str:
        raise AssertionError("no token fetch for Basic")

    with pytest.raises(RegistryAuthError, match="none were configured"):
        await Authenticator(None, "r").answer('Basic realm="x"', "s", None, never)
    with pytest.raises(RegistryAuthError, match="'negotiate'"):
        await Authenticator(None, "r").answer("Negotiate", "s", None, never)


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("7") == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "kind", "body", "cls", "transient"),
    [
        (500, "blob", b"", RegistryServerError, True),
        (503, "manifest", b"", RegistryServerError, True),
        (429, "blob", b"", RegistryRateLimited, True),
        (401, "blob", b"", RegistryAuthError, False),
        (403, "blob", b"", RegistryDenied, False),
        (404, "blob", b"", BlobMissing, False),
        (404, "manifest", b"", ManifestNotFound, False),
        (400, "upload", b'{"errors":[{"code":"DIGEST_INVALID","message":"m"}]}', DigestMismatch, False),
        (
            400,
            "manifest",
            b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"m"}]}',
            ManifestBlobsCollected,  # uploaded first, collected since (a GC racing the push): retried
            True,
        ),
        (400, "manifest", b'{"errors":[{"code":"MANIFEST_INVALID","message":"m"}]}', RegistryRequestRejected, False),
    ],
)
def test_status_mapping(status: int, kind: str, body: bytes, cls: type[Exception], transient: bool) -> None:
    err = error_for(status, {"Retry-After": "3"}, body, "registry r, repository p, sha256:x", kind)
    assert type(err) is cls
    assert isinstance(err, TransientError) is transient
    assert "registry r, repository p, sha256:x" in str(err)
    if transient:
        assert getattr(err, "retry_after", None) == 3.0


def test_names_and_fallback_tag() -> None:
    assert referrers_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    assert check_repository("team/app-1") == "team/app-1"
    for bad in ("Team/app", "a//b", "../x", "a:b"):
        with pytest.raises(ValueError):
            check_repository(bad)
    assert check_reference("v1.0") == "v1.0"
    with pytest.raises(ValueError):
        check_reference("-bad")


def test_descriptors_refuse_malformed_digests() -> None:
    good = {"digest": "sha256:" + "b" * 64, "size": 3}
    assert descriptors({"config": good, "layers": [good]}, "w") == ([good, good], [])
    with pytest.raises(Exception, match="malformed digest"):
        descriptors({"layers": [{"digest": "sha256:../../etc", "size": 1}]}, "w")


async def test_malformed_names_are_refused_before_any_request() -> None:
    from ccpipe.oci.registry import RegistryClient, list_referrers
    from ccpipe.oci.registry.errors import ReferenceInvalid

    # port 9 on loopback: nothing listens, so a request that went out would be "unavailable"
    async with RegistryClient("127.0.0.1:9", plain_http=True) as c:
        with pytest.raises(ReferenceInvalid):
            await c.blob_size("../../v2/x", "sha256:" + "a" * 64)
        with pytest.raises(ReferenceInvalid):
            await c.get_blob("repo", "sha256:../../etc/passwd")
        with pytest.raises(ReferenceInvalid):
            await c.get_manifest("repo", "../tags/list")
        with pytest.raises(ReferenceInvalid):
            await list_referrers(c, "repo", "md5:abc")
        assert c.stats.requests == 0


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
"""A reply nested beyond json's recursion limit (found by tests/fuzz): it raised RecursionError."""


def test_deeply_nested_manifest_is_manifest_invalid() -> None:
    with pytest.raises(ManifestInvalid, match="manifest is not JSON"):
        parse_manifest(DEEP_JSON, "registry r, repository p")


def test_deeply_nested_error_body_still_maps_to_the_status() -> None:
    err = error_for(500, {}, DEEP_JSON, "registry r", "manifest")
    assert isinstance(err, RegistryServerError) and "nested" not in str(err)
