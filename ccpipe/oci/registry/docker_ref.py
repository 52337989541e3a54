"""``docker://HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX]``: an image in a registry, as skopeo and cosign name it.

The host part is required (there is no default registry: ccpipe never guesses Docker Hub), and
a reference without tag or digest means ``latest``, as both tools read it. Imports nothing of
the project but the registry client's name checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccpipe.oci.registry.manifests import ALGORITHMS, check_reference, check_repository
from ccpipe.schemas.digest import is_digest

DOCKER_TRANSPORT = "docker://"


@dataclass(frozen=True)
class DockerRef:
    """One image in a registry: ``registry`` (host[:port]), ``repository``, ``reference`` (tag or digest)."""

    registry: str
    repository: str
    reference: str

    @classmethod
    def parse(cls, value: str) -> DockerRef:
        """Parse ``docker://HOST/REPO[:TAG|@DIGEST]``; raises :class:`ValueError` saying what is wrong."""
        if not value.startswith(DOCKER_TRANSPORT):
            raise ValueError(f"{value!r} does not start with {DOCKER_TRANSPORT}")
        rest = value.removeprefix(DOCKER_TRANSPORT)
        host, slash, path = rest.partition("/")
        if not slash or not host or not path:
            raise ValueError(f"{value!r} names no registry host and repository (docker://HOST/REPO[:TAG])")
        if "@" in path:
            repository, _, reference = path.partition("@")
            if not is_digest(reference, ALGORITHMS):
                raise ValueError(f"{value!r}: {reference!r} is not a sha256 digest")
        else:
            # a ':' after the last '/' starts the tag (one before it would be part of the host)
            repository, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
            reference = tag if colon else "latest"
        check_repository(repository)
        check_reference(reference)
        return cls(host, repository, reference)

    @property
    def by_digest(self) -> bool:
        """True when the reference is a manifest digest, not a tag."""
        return is_digest(self.reference, ALGORITHMS)

    @property
    def identity(self) -> str:
        """``HOST/REPOSITORY``: the docker-reference a signature of this image names (cosign's)."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return f"{DOCKER_TRANSPORT}{self.identity}{'@' if self.by_digest else ':'}{self.reference}"
