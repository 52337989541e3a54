"""The one digest type: which algorithms each place accepts, and what a refusal says."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import BaseModel, ValidationError

from ccpipe.schemas.digest import (
    OCI_ALGORITHMS,
    RECORD_ALGORITHMS,
    SHA256_ONLY,
    Digest,
    DigestInvalid,
    check_digest,
    digest_tag,
    is_digest,
    parse_digest,
    sha256_digest,
)
from ccpipe.schemas.errors import InvalidInput

SHA256 = "sha256:" + "a" * 64
SHA384 = "sha384:" + "b" * 96
SHA512 = "sha512:" + "c" * 128


@pytest.mark.parametrize(
    ("algorithms", "accepted"),
    [
        (SHA256_ONLY, {SHA256}),
        (OCI_ALGORITHMS, {SHA256, SHA512}),
        (RECORD_ALGORITHMS, {SHA256, SHA384, SHA512}),
    ],
)
def test_each_place_accepts_its_algorithms(algorithms: tuple[str, ...], accepted: set[str]) -> None:
    for value in (SHA256, SHA384, SHA512):
        assert is_digest(value, algorithms) is (value in accepted)


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:" + "a" * 63,  # one digit short
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,  # upper case
        "sha256:" + "a" * 128,  # sha512's length under sha256's name
        "sha384:" + "a" * 64,
        SHA256 + "\n",  # a trailing newline must not slip through an anchored match
        " " + SHA256,
        "sha256-" + "a" * 64,  # the tag form is not a digest
        "sha256:../../etc/passwd",
        "md5:" + "a" * 32,
        "",
        None,
        64,
    ],
)
def test_malformed_values_are_refused_with_the_value_named(bad: object) -> None:
    assert not is_digest(bad, RECORD_ALGORITHMS)
    with pytest.raises(DigestInvalid) as err:
        parse_digest(bad, RECORD_ALGORITHMS)
    assert repr(bad) in err.value.message
    assert err.value.code == "digest.invalid"
    # the project's input-error family, and a ValueError for pydantic and name checks
    assert isinstance(err.value, InvalidInput)
    assert isinstance(err.value, ValueError)


def test_message_names_the_accepted_algorithms() -> None:
    with pytest.raises(DigestInvalid, match=r"is not a sha256 or sha512 digest"):
        check_digest("sha384:" + "b" * 96, OCI_ALGORITHMS)
    with pytest.raises(DigestInvalid, match=r"is not a sha256 digest"):
        check_digest(SHA512, SHA256_ONLY)


def test_parse_splits_and_check_returns_the_value() -> None:
    assert parse_digest(SHA512) == ("sha512", "c" * 128)
    assert check_digest(SHA256, SHA256_ONLY) == SHA256


def test_sha256_digest_and_its_tag_form() -> None:
    digest = sha256_digest(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert digest_tag(digest) == "sha256-" + hashlib.sha256(b"hello").hexdigest()
    with pytest.raises(DigestInvalid):
        digest_tag(SHA512)  # the referrers tag schema would truncate it


class _Record(BaseModel):
    digest: Digest


def test_the_pydantic_type_follows_the_same_table() -> None:
    for good in (SHA256, SHA384, SHA512):
        assert _Record(digest=good).digest == good
    for bad in ("sha256:" + "a" * 128, "sha384:" + "a" * 64, "sha256:" + "A" * 64, SHA256 + "\n"):
        with pytest.raises(ValidationError):
            _Record(digest=bad)
