"""The pushed source reaches the build host by digest, sealed to the build stage: no shared disk.

Where components are enrolled (an admin key pinned in the data directory), ``ccpipe submit`` and
the git hook do not name the pusher's repository by path. They pack the pushed commit's snapshot
— the commit object, its tree and its blobs, no history (:func:`pack_source`: ``git rev-list
--objects --no-walk`` into ``git pack-objects``) — seal it to every in-force sealing key enrolled
for the ``build`` stage (:func:`ccpipe.pipeline.artifacts.seal`, read from the enrolment bucket at
that moment, so a build replica enrolled a second ago gets it too), store it in ``CCPIPE_ARTIFACTS``
as ``<workload>/source/<sha256>``, and put that reference in ``submitted.repo``
(:func:`store_source`).

The build stage fetches exactly that object (its digest is checked), opens it with its own sealing
key, and unpacks it into a fresh bare repository (:func:`unpack_source`): ``git index-pack --strict``
recomputes every object id and refuses a pack that does not hold every object the commit's tree
names, the commit is marked shallow (its parents are not sent), and ``ref`` is pointed at the
pushed commit, which must be there. The build's checkout then reads that repository like any
other. The build stage purges the object once ``built`` is stored, or at once when the build fails
for good; the bucket's max age removes what a crash left.

In a data directory without an admin key (one host, library use) ``repo`` stays a local path;
where components are enrolled a local path is refused (:func:`source_ref`), since the build would
otherwise read whatever the event pointed it at on the build host.

This module stays light (no models, no bus module, no NATS client at import): ``ccpipe submit``
runs it on every push, and talks to NATS through :mod:`ccpipe.pipeline.light_nats` there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ccpipe.crypto import jose
from ccpipe.pipeline.artifacts import (
    ArtifactError,
    ArtifactRef,
    get_artifact,
    put_artifact,
    seal,
    sealing_recipients,
    unseal,
)
from ccpipe.pipeline.signing import enrolled_mode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec
    from nats.js import JetStreamContext

    from ccpipe.pipeline.trigger import Push
    from ccpipe.schemas.envelope import Event

SOURCE_KIND = "source"
"""The artifact kind of a pushed source: ``<workload>/source/<sha256>``."""
CONSUMER = "build"
"""The component a source is sealed to."""
MAX_SOURCE_BYTES = 256 << 20
"""The largest packed source that is stored (a snapshot of the commit, compressed): beyond it a
push is refused with that figure, rather than filling the object store."""
GIT_TIMEOUT_S = 300
_OID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_PACK_MAGIC = b"PACK"


class SourceBundleError(ArtifactError):
    """A pushed source that cannot be packed, or a stored one that is not the commit its event names."""

    code = "source.invalid"
    default_hint = "the build reads the pushed commit only from the sealed source its submitted event names"


def _git_env() -> dict[str, str]:
    # ours without GIT_* (a hook runs with GIT_DIR and friends set), no system or global config,
    # no replace refs: the objects packed and unpacked are exactly the commit's
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_NO_REPLACE_OBJECTS="1",
               GIT_NO_LAZY_FETCH="1", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    return env


def _git(git_dir: Path, *args: str, stdin: bytes | None = None, what: str) -> bytes:
    cmd = ["git", f"--git-dir={git_dir}", "-c", "core.hooksPath=/dev/null", "-c", "protocol.allow=never", *args]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env=_git_env(), timeout=GIT_TIMEOUT_S,
                              stdin=None if stdin is not None else subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise SourceBundleError("git is not installed", hint="install git (scripts/install-system-deps.sh)") from None
    except subprocess.TimeoutExpired as exc:
        raise SourceBundleError(f"{what}: git took more than {GIT_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceBundleError(f"{what}: {said[-1] if said else f'git exited {proc.returncode}'}")
    return proc.stdout


def _git_dir_of(repo: Path) -> Path:
    dot_git = repo / ".git"
    return dot_git if dot_git.exists() else repo


def _check_commit_id(commit: str) -> None:
    if not _OID.fullmatch(commit):
        raise SourceBundleError(f"{commit[:80]!r} is not a full commit id", code="source.commit")


# --- packing (the pusher's side) ------------------------------------------------------------------


def pack_source(repo: Path, commit: str) -> bytes:
    """A git pack of ``commit`` of ``repo``: the commit object, its tree and its blobs (no parents).

    Raises :class:`SourceBundleError` naming the repository or commit that cannot be read, or the
    size when the pack exceeds :data:`MAX_SOURCE_BYTES`.
    """
    _check_commit_id(commit)
    git_dir = _git_dir_of(Path(repo))
    what = f"commit {commit[:12]} of {repo} cannot be packed"
    # --no-walk: the commit alone, not its history; --objects: with everything its tree names
    objects = _git(git_dir, "rev-list", "--objects", "--no-walk", commit, what=what)
    # No delta search and no zlib: the hook pays this CPU on every push, and the pack is sealed
    # (incompressible) and kept at most an hour, so the bytes saved would be few.
    # Measured on this repository's tree: 0.21 s of CPU with git's defaults, 0.04 s so, 2x the bytes.
    pack = _git(git_dir, "pack-objects", "--stdout", "-q", "--window=0", "--compression=0", stdin=objects,
                what=what)
    if len(pack) > MAX_SOURCE_BYTES:
        raise SourceBundleError(f"commit {commit[:12]} of {repo} packs to {len(pack)} bytes, more than the "
                                f"{MAX_SOURCE_BYTES} a pushed source may hold", code="source.too_large",
                                hint="keep large binaries out of the repository (or in the base image)")
    return pack


def seal_source(repo: Path, commit: str, recipients: list[jose.PublicKey]) -> bytes:
    """:func:`pack_source`, sealed to ``recipients`` (the build stage's sealing keys)."""
    return seal(pack_source(repo, commit), recipients)


async def store_source(js: JetStreamContext, data_dir: Path, workload_id: str, repo: Path, commit: str,
                       records: list[bytes] | None = None) -> ArtifactRef:
    """Pack ``commit`` of ``repo``, seal it to the build stage, store it; returns its reference.

    The build stage's sealing keys are those the enrolment bucket holds now (``records``: the stored
    records, when the caller read them already for several pushes). Raises
    :class:`~ccpipe.schemas.errors.ConfigurationError` when no build sealing key is enrolled,
    :class:`SourceBundleError` for a commit that cannot be packed, and
    :class:`~ccpipe.schemas.errors.TransientError` when NATS does not answer.
    """
    if records is None:
        from ccpipe.pipeline.enrolment_bus import read_records

        _, records = await read_records(js)
    recipients = sealing_recipients(data_dir, CONSUMER, records)
    import asyncio  # here, not at module level: ``ccpipe submit`` loads this module without it

    sealed = await asyncio.to_thread(seal_source, repo, commit, recipients)
    return await put_artifact(js, workload_id, SOURCE_KIND, sealed)


async def pipeline_submission(js: JetStreamContext, data_dir: Path, push: Push) -> Event:
    """The ``submitted`` event of ``push`` as ``ccpipe submit`` publishes it from ``data_dir``: where
    components are enrolled, its source stored sealed to the build stage and named by the event
    (for library callers that publish submissions themselves: benches, fault tests).

    Raises what :func:`~ccpipe.pipeline.trigger.make_submission` and :func:`store_source` raise.
    """
    from ccpipe.pipeline.trigger import make_submission
    from ccpipe.schemas.events import Submitted

    event = make_submission(push)
    if not enrolled_mode(data_dir) or not isinstance(event.payload, Submitted):
        return event
    ref = await store_source(js, data_dir, event.workload_id, push.repo, push.new)
    return event.model_copy(update={"payload": event.payload.model_copy(update={"repo": str(ref)})})


# --- unpacking (the build host's side) ------------------------------------------------------------


def source_ref(data_dir: Path, repo: str) -> ArtifactRef | None:
    """The stored source a ``submitted`` event's ``repo`` names, or None for a local path, which is
    accepted only in a data directory without an admin key (one host, library use).

    Raises :class:`SourceBundleError` for a local path where components are enrolled, or for an
    artifact that is not a source.
    """
    ref = ArtifactRef.parse(repo)
    if ref is None:
        if enrolled_mode(data_dir):
            raise SourceBundleError(
                f"the submitted event names the local path {repo[:200]!r} as its repository; enrolled "
                "components read the pushed source only by digest (ccpipe-artifact:…)", code="source.path",
                hint="submit with a ccpipe whose data directory pins the admin key (it stores the source)")
        return None
    if ref.name.split("/")[1:2] != [SOURCE_KIND]:
        raise SourceBundleError(f"{ref} is not a pushed source (kind {SOURCE_KIND!r})", code="source.kind")
    return ref


def unpack_source(pack: bytes, into: Path, commit: str, ref: str) -> Path:
    """A fresh bare repository at ``into`` (which must not exist) holding ``pack``, with ``ref`` (a
    full ref name; HEAD for anything else) pointing at ``commit``; returns ``into``.

    ``git index-pack --strict`` recomputes each object's id from its bytes and checks that every
    object the pack's commit and trees name is in it; ``commit`` is then required to be a commit
    there whose tree is complete. Raises :class:`SourceBundleError` naming what is missing or
    wrong; ``into`` is removed then.
    """
    _check_commit_id(commit)
    if not pack.startswith(_PACK_MAGIC):
        raise SourceBundleError("the stored source is not a git pack", code="source.pack")
    # a push names a full ref; a by-hand submit of a bare commit id names none: HEAD then
    target = ref if ref.startswith("refs/") else "HEAD"
    into.parent.mkdir(parents=True, exist_ok=True)
    into.mkdir(mode=0o700)
    try:
        _git(into, "init", "-q", "--bare", str(into), what=f"a repository cannot be made at {into}")
        # the parents are not sent: a shallow boundary at the commit, so git does not look for them
        (into / "shallow").write_text(commit + "\n")
        _git(into, "index-pack", "--stdin", "--strict", stdin=pack,
             what="the stored source is not a complete, valid git pack")
        kind = _git(into, "cat-file", "-t", commit, what=f"the stored source does not hold commit {commit}")
        if kind.strip() != b"commit":
            raise SourceBundleError(f"{commit} in the stored source is a {kind.strip().decode()}, not a commit",
                                    code="source.commit")
        _git(into, "rev-list", "--objects", "--no-walk", commit,
             what=f"the stored source does not hold every object of commit {commit}")
        _git(into, "update-ref", "--no-deref", target, commit, what=f"{target!r} cannot be pointed at {commit}")
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise
    return into


def open_source(blob: bytes, key: ec.EllipticCurvePrivateKey, into: Path, commit: str, ref: str) -> Path:
    """Unseal a stored source with the build host's sealing key and :func:`unpack_source` it."""
    return unpack_source(unseal(blob, key), into, commit, ref)


async def fetch_source(js: JetStreamContext, source: ArtifactRef, into: Path, key: ec.EllipticCurvePrivateKey,
                       commit: str, ref: str) -> Path:
    """Fetch ``source`` (checked against its digest), open it with ``key``, unpack it into ``into``.

    Raises :class:`ArtifactError` for a missing, altered or foreign object (sealed to other keys),
    :class:`SourceBundleError` for one that does not hold ``commit``, and
    :class:`~ccpipe.schemas.errors.TransientError` when NATS does not answer.
    """
    blob = await get_artifact(js, source)
    import asyncio  # here, not at module level: ``ccpipe submit`` loads this module without it

    return await asyncio.to_thread(open_source, blob, key, into, commit, ref)
