"""cosign's names: one spelling of the tags every part reads and writes."""

from __future__ import annotations

import pytest

from ccpipe.oci.cosign_names import (
    attestation_tag,
    is_digest_tag,
    names_attachment_of,
    referrers_tag,
    repository_for,
    signature_tag,
)
from ccpipe.schemas.digest import DigestInvalid

DIGEST = "sha256:" + "ab" * 32
HEX = "ab" * 32


def test_tags_of_an_image() -> None:
    assert referrers_tag(DIGEST) == f"sha256-{HEX}"
    assert signature_tag(DIGEST) == f"sha256-{HEX}.sig"
    assert attestation_tag(DIGEST) == f"sha256-{HEX}.att"


@pytest.mark.parametrize("bad", ["sha512:" + "a" * 128, "sha256:" + "a" * 63, "latest", "sha256:../x"])
def test_only_sha256_digests_are_named(bad: str) -> None:
    with pytest.raises(DigestInvalid, match="is not a sha256 digest"):
        signature_tag(bad)


def test_attachment_names() -> None:
    assert names_attachment_of(signature_tag(DIGEST), DIGEST)
    assert names_attachment_of(referrers_tag(DIGEST), DIGEST)
    assert not names_attachment_of(signature_tag("sha256:" + "cd" * 32), DIGEST)
    assert not names_attachment_of(f"sha256-{HEX}x.sig", DIGEST)
    assert is_digest_tag(attestation_tag(DIGEST)) and not is_digest_tag("v1")


def test_repository_of_a_workload() -> None:
    assert repository_for("hello") == "ccpipe/hello"
