"""Content digests (``<algorithm>:<lower-case hex>``): the project's one definition.

A digest names content everywhere in ccpipe: OCI blobs and manifests, the events' image,
provenance and evidence digests, audit queries. One table gives the algorithms and their hex
lengths; each place says which of them it accepts by passing one of the named sets:

* :data:`SHA256_ONLY` — the registry client (it hashes with sha256 only, as the distribution
  spec requires of every registry), cosign's ``sha256-<hex>`` tags and image references;
* :data:`OCI_ALGORITHMS` — OCI image layouts and base images: the algorithms the image-spec
  registers for descriptor digests (sha256 and sha512);
* :data:`RECORD_ALGORITHMS` — digests carried by events and queried in the audit trail
  (provenance is sha384).

A digest is always checked whole: a known algorithm, a colon, exactly that algorithm's number
of lower-case hex digits. So a checked digest can never name a path outside ``blobs/`` nor
change a URL. Imports nothing of the project but :mod:`ccpipe.schemas.errors`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Collection
from typing import Annotated

from pydantic import StringConstraints

from ccpipe.schemas.errors import InvalidInput

#: hex digits of each algorithm's digest
HEX_LENGTHS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

SHA256_ONLY: tuple[str, ...] = ("sha256",)
OCI_ALGORITHMS: tuple[str, ...] = ("sha256", "sha512")
RECORD_ALGORITHMS: tuple[str, ...] = ("sha256", "sha384", "sha512")


class DigestInvalid(InvalidInput, ValueError):
    """A value is not a digest of an accepted algorithm.

    It is also a :class:`ValueError`, so pydantic validators and callers that check names with
    ``ValueError`` treat it as the input error it is.
    """

    code = "digest.invalid"


def digest_pattern(algorithms: Collection[str] = OCI_ALGORITHMS) -> str:
    """The regular expression of a digest of one of ``algorithms``, built from :data:`HEX_LENGTHS`.

    It is not anchored: match it whole (``fullmatch``, or ``^(…)$`` in a JSON schema).
    """
    return "|".join(f"{alg}:[0-9a-f]{{{HEX_LENGTHS[alg]}}}" for alg in algorithms)


@functools.cache
def _compiled(algorithms: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(digest_pattern(algorithms))


def _names(algorithms: Collection[str]) -> str:
    *rest, last = algorithms
    return f"{', '.join(rest)} or {last}" if rest else last


def is_digest(value: object, algorithms: Collection[str] = OCI_ALGORITHMS) -> bool:
    """True if ``value`` is a digest of one of ``algorithms``."""
    # fullmatch, not match: "$" would let a trailing newline through
    return isinstance(value, str) and _compiled(tuple(algorithms)).fullmatch(value) is not None


def parse_digest(value: object, algorithms: Collection[str] = OCI_ALGORITHMS) -> tuple[str, str]:
    """Split a digest into ``(algorithm, hex)``; raises :class:`DigestInvalid` naming ``value``."""
    if not is_digest(value, algorithms):
        raise DigestInvalid(f"{value!r} is not a {_names(algorithms)} digest")
    assert isinstance(value, str)  # is_digest checked it; this narrows the type
    alg, _, hexpart = value.partition(":")
    return alg, hexpart


def check_digest(value: object, algorithms: Collection[str] = OCI_ALGORITHMS) -> str:
    """Return ``value`` if it is a digest of one of ``algorithms``; raises :class:`DigestInvalid`."""
    parse_digest(value, algorithms)
    return str(value)


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_tag(digest: str) -> str:
    """The tag form of a sha256 digest, ``sha256-<hex>`` (a colon is not allowed in a tag).

    Raises :class:`DigestInvalid` for anything but a sha256 digest: the OCI referrers tag
    schema truncates longer digests, so only sha256 gives a tag that names one image exactly.
    """
    return check_digest(digest, SHA256_ONLY).replace(":", "-", 1)


Digest = Annotated[str, StringConstraints(pattern=f"^(?:{digest_pattern(RECORD_ALGORITHMS)})$")]
"""A pydantic field holding a content digest of :data:`RECORD_ALGORITHMS` (``sha256:<hex>``, …)."""
