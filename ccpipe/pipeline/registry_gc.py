"""Removing images from the embedded registry: manifests deleted with an admin credential, then
docker-registry's own garbage collector.

The served registry refuses deletes to every client (``storage.delete.enabled: false``: its
htpasswd users differ in name only, so a push credential could otherwise delete). A removal
therefore goes in two steps, both run by the process that started the registry:

1. A second docker-registry on the same storage, with deletes on, on a free loopback port, whose
   only user is ``ccpipe-admin`` with a password made for this one removal (its bcrypt hash in a
   0600 file removed afterwards; the password itself never leaves memory). Through it each image
   is deleted by digest together with what travels with it: cosign's ``.sig`` and ``.att``
   manifests and the referrers-tag index with the referrers it lists. Deleting a manifest by
   digest also removes the tags that point at it. This instance stops before step 2.
2. ``docker-registry garbage-collect CONFIG`` removes the blobs no manifest references any more.
   distribution's documentation requires the registry to be stopped or read-only meanwhile (a
   blob uploaded but not yet referenced by its manifest would be removed), so the served registry
   is stopped for the collection and started again on its port. Clients see a restart of about a
   second: the registry client retries, and a runner waits for a restarted registry
   (``RESTART_PATIENCE_S``). A push that uploaded its blobs but not yet its manifest would still
   lose them, so every push to the embedded registry holds a shared lock (:func:`pushing`,
   ``<registry root>/push.lock``) and the collection runs under the exclusive one: it waits for the
   pushes in progress (at most :data:`PUSH_WAIT_S`, else it is left for the next round) and new
   ones wait for it. The deletes of step 1 run under it too (distribution's delete reads every
   tag of the repository and fails on one a push is writing).

Which images may go is the caller's decision (see
:mod:`ccpipe.stages.deploy.registry_retention`); this module deletes what it is given.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from ccpipe.pipeline.servers import EmbeddedRegistry, _stop, _wait_http_ok, find_binary, free_port
from ccpipe.schemas.digest import digest_tag
from ccpipe.schemas.errors import TransientError

ADMIN_USER = "ccpipe-admin"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
GC_TIMEOUT_S = 300.0
GC_LOG = "gc.log"
"""The output of the latest collection, beside ``registry.log`` (replaced at every collection)."""
PUSH_LOCK = "push.lock"
PUSH_WAIT_S = 30.0
"""How long a collection waits for the pushes in progress before it gives up until the next round."""


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@asynccontextmanager
async def pushing(registry_root: Path | None) -> AsyncIterator[None]:
    """Hold the push lock of the embedded registry at ``registry_root`` while the block runs (None: a
    registry ccpipe does not collect, nothing to hold); waits while a collection runs."""
    if registry_root is None:
        yield
        return
    registry_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(registry_root / PUSH_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while not _try_lock(fd, fcntl.LOCK_SH):  # polled: a cancelled wait leaves no thread behind
            await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ImageRef:
    """One image in the embedded registry: its repository and manifest digest."""

    repository: str
    digest: str


@dataclass
class Collection:
    """What one removal did."""

    deleted: list[str] = field(default_factory=list)
    """Manifest digests deleted (images and what travels with them)."""
    failed: dict[ImageRef, str] = field(default_factory=dict)
    """Images whose deletion the registry refused this time, and why (left for the next round:
    one refused delete must not hold back the others)."""
    freed_bytes: int = 0
    """How much smaller the registry's storage is after the collection."""


def storage_bytes(root: Path) -> int:
    """Bytes of the regular files below ``root`` (what the registry holds on disk)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += st.st_size
    return total


class _Admin:
    """HTTP to the admin instance, as ``ccpipe-admin`` (urllib: a few requests, from a thread)."""

    def __init__(self, address: str, password: str) -> None:
        self.base = f"http://{address}/v2/"
        token = base64.b64encode(f"{ADMIN_USER}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": ", ".join(MANIFEST_TYPES)}

    def _call(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def manifest(self, repository: str, reference: str) -> tuple[str, bytes] | None:
        """(digest, body) of a manifest by tag or digest; None when there is none."""
        status, headers, body = self._call("GET", f"{repository}/manifests/{reference}")
        if status == 404:
            return None
        if status != 200:
            raise TransientError(f"the registry answered {status} for manifest {repository}:{reference}",
                                 code="registry.gc.read")
        return headers.get("Docker-Content-Digest", ""), body

    def delete(self, repository: str, digest: str) -> bool:
        """Delete a manifest by digest (and the tags pointing at it); False when it was gone already."""
        status, _, body = self._call("DELETE", f"{repository}/manifests/{digest}")
        if status in (200, 202):
            return True
        if status == 404:
            return False
        raise TransientError(f"the registry refused deleting {repository}@{digest} ({status}): {body[:200]!r}",
                             code="registry.gc.delete")


def _image_manifests(admin: _Admin, image: ImageRef) -> list[str]:
    """The digests to delete for ``image``: its attachments and referrers first, the image last."""
    out: list[str] = []
    stem = digest_tag(image.digest)
    for tag in (f"{stem}.sig", f"{stem}.att", stem):
        found = admin.manifest(image.repository, tag)
        if found is None or not found[0]:
            continue
        digest, body = found
        if tag == stem:  # the referrers-tag index: the referrer manifests it lists go with it
            try:
                listed = json.loads(body).get("manifests") or []
            except (ValueError, AttributeError):
                listed = []
            out += [m["digest"] for m in listed if isinstance(m, dict) and isinstance(m.get("digest"), str)]
        out.append(digest)
    out.append(image.digest)
    return list(dict.fromkeys(d for d in out if d))


def _admin_config(registry: EmbeddedRegistry, htpasswd: Path, port: int) -> str:
    return (
        "# written by ccpipe for one removal of images; deletes on, only the admin user\n"
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(str(registry.storage))}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: ccpipe-admin\n    path: {json.dumps(str(htpasswd))}\n"
    )


def _delete_manifests(registry: EmbeddedRegistry, images: Sequence[ImageRef], timeout: float,
                      result: Collection) -> None:
    binary = find_binary(registry.binary, "docker-registry", "set CCPIPE_REGISTRY_BIN")
    password = secrets.token_urlsafe(32)
    htpasswd = registry.root / "admin.htpasswd"
    conf = registry.root / "admin-config.yml"
    htpasswd.unlink(missing_ok=True)
    fd = os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{ADMIN_USER}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    port = free_port()
    conf.write_text(_admin_config(registry, htpasswd, port))
    log = registry.root / "registry.log"
    with log.open("ab") as out_log:
        proc = EmbeddedRegistry._spawn([binary, "serve", str(conf)], out_log)
    try:
        _wait_http_ok(f"http://127.0.0.1:{port}/v2/", proc, log, timeout, "docker-registry (admin)", (200, 401))
        admin = _Admin(f"127.0.0.1:{port}", password)
        for image in images:
            try:
                for digest in _image_manifests(admin, image):
                    if admin.delete(image.repository, digest):
                        result.deleted.append(digest)
            except TransientError as exc:  # e.g. a 500 while another host's push writes a tag
                result.failed[image] = exc.message
    finally:
        _stop(proc)
        htpasswd.unlink(missing_ok=True)
        conf.unlink(missing_ok=True)


def remove_images(registry: EmbeddedRegistry, images: Sequence[ImageRef], *, timeout: float = 20.0,
                  restart: bool = True) -> Collection:
    """Delete ``images`` (with their attachments) from the running embedded ``registry`` and collect
    the garbage; the registry serves again on its port when this returns (see the module docstring).

    With ``restart`` False the served registry is left stopped for the caller to start: a caller
    running this in a worker thread must, since a server started from a thread that ends gets no
    parent-death signal to outlive (it would survive a SIGKILLed ``ccpipe up``).

    Raises :class:`TransientError` when the admin instance or the collection fails; the served
    registry is started again in every case (unless ``restart`` is False).
    """
    result = Collection()
    if not images:
        return result
    with registry.lock:
        if registry.pid is None:
            raise TransientError("the embedded registry is not running", code="registry.gc.stopped")
        binary = find_binary(registry.binary, "docker-registry", "set CCPIPE_REGISTRY_BIN")
        fd = os.open(registry.root / PUSH_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # deletes too run without pushes: distribution's delete reads every tag of the repository
            # and fails (500, "invalid checksum digest format") on one a push is writing
            deadline = time.monotonic() + PUSH_WAIT_S
            while not _try_lock(fd, fcntl.LOCK_EX):
                if time.monotonic() > deadline:
                    raise TransientError(f"pushes kept the registry busy for {PUSH_WAIT_S:.0f} s; the images "
                                         "are removed next round", code="registry.gc.busy")
                time.sleep(0.05)
            before = storage_bytes(registry.storage)
            _delete_manifests(registry, images, timeout, result)
            registry.stop()  # the collection must not race an upload
            try:
                # the last collection's output only: it names every blob it marks and deletes, and
                # appended to registry.log it grew by kilobytes per workload
                with (registry.root / GC_LOG).open("wb") as out:
                    done = subprocess.run([binary, "garbage-collect", str(registry.config_path)], stdout=out,
                                          stderr=out, stdin=subprocess.DEVNULL, timeout=GC_TIMEOUT_S, check=False)
            finally:
                if restart:
                    registry.start(timeout)
        finally:
            os.close(fd)
        if done.returncode != 0:
            raise TransientError(f"docker-registry garbage-collect exited with status {done.returncode}",
                                 hint=f"see {registry.root / GC_LOG}", code="registry.gc.failed")
        result.freed_bytes = max(0, before - storage_bytes(registry.storage))
    return result


__all__ = ["ADMIN_USER", "Collection", "ImageRef", "pushing", "remove_images", "storage_bytes"]
