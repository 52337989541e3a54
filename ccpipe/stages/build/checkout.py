"""Checkout of one commit into a fresh, private directory, from git's raw objects.

The tree is written from ``git ls-tree -r`` and ``git cat-file --batch`` (plumbing), not from
``git checkout`` or ``git archive``, because those run what the repository asks for:
hooks (checkout), smudge/clean filters and ``ident``/eol conversion (checkout and archive),
``export-subst`` and ``export-ignore`` (archive). Here the files are the blobs' exact bytes.

What else is shut off:

* git runs with ``core.hooksPath=/dev/null``, no system or global configuration, no
  ``GIT_*`` variables from our environment, ``GIT_NO_REPLACE_OBJECTS`` (a ``refs/replace``
  ref cannot swap the content behind a commit id), no lazy fetches of a partial clone and
  ``protocol.allow=never`` (nothing is fetched from anywhere);
* submodules (gitlinks) become empty directories, as in a fresh clone: their content is not
  part of the commit;
* every path is checked (no '..', '.', empty or '.git' component) and created with
  ``O_NOFOLLOW`` relative to its parent's descriptor, so no symlink in the tree can redirect
  a write outside the work directory;
* files get exactly mode 0644 or 0755, and every entry gets the commit time as its mtime,
  so the tree is the same on every machine, whatever its umask or clock.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ccpipe.stages.build.errors import CheckoutFailed

_OID_RE = re.compile(rb"[0-9a-f]{40}([0-9a-f]{24})?")
_CHUNK = 1 << 20
_REF_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Checkout:
    """A commit written out as a plain directory tree."""

    path: Path
    """The private work directory holding the tree (mode 0700)."""
    repo: Path
    """The repository it came from."""
    ref: str
    """The ref as asked for."""
    commit: str
    """Full commit id the ref resolved to."""
    commit_time: int
    """Committer timestamp (seconds since the epoch): the build's SOURCE_DATE_EPOCH."""


def git_env() -> dict[str, str]:
    """The environment git runs in: ours without ``GIT_*``, no system/global config, no replace refs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_NO_LAZY_FETCH="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


def _git_dir(repo: Path) -> Path:
    if not repo.is_dir():
        raise CheckoutFailed(f"repository {repo} does not exist or is not a directory")
    dot_git = repo / ".git"
    return dot_git if dot_git.exists() else repo


def _git_cmd(git_dir: Path, *args: str) -> list[str]:
    return [
        "git",
        f"--git-dir={git_dir}",
        "-c", "core.hooksPath=/dev/null",
        "-c", "core.fsmonitor=false",
        "-c", "protocol.allow=never",
        *args,
    ]  # fmt: skip


def _run_git(git_dir: Path, *args: str, what: str) -> bytes:
    try:
        proc = subprocess.run(
            _git_cmd(git_dir, *args), env=git_env(), capture_output=True, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError:
        raise CheckoutFailed("git is not installed", hint="install git (scripts/install-system-deps.sh)") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CheckoutFailed(f"{what}: {detail[-1]}" if detail else what)
    return proc.stdout


def resolve_commit(repo: Path, ref: str) -> tuple[str, int]:
    """The full commit id ``ref`` names in ``repo`` and its committer time.

    Raises :class:`CheckoutFailed` naming the repository or the ref.
    """
    repo = Path(repo)
    git_dir = _git_dir(repo)
    if not ref or ref.startswith("-") or _REF_FORBIDDEN.search(ref):
        raise CheckoutFailed(f"{ref!r} is not a usable ref", hint="give a branch, tag or full commit id")
    out = _run_git(
        git_dir,
        "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
        what=f"ref {ref!r} does not name a commit in repository {repo}",
    ).strip()  # fmt: skip
    if not _OID_RE.fullmatch(out):
        raise CheckoutFailed(f"ref {ref!r} does not name a commit in repository {repo}")
    commit = out.decode()
    raw = _run_git(git_dir, "cat-file", "commit", commit, what=f"commit {commit} of {repo} cannot be read")
    return commit, _committer_time(raw, commit)


def _committer_time(raw: bytes, commit: str) -> int:
    for line in raw.split(b"\n"):
        if not line:
            break
        if line.startswith(b"committer "):
            fields = line.rsplit(b" ", 2)
            try:
                return int(fields[1])
            except (IndexError, ValueError):
                break
    raise CheckoutFailed(f"commit {commit} has no readable committer time")


def _tree_entries(git_dir: Path, commit: str, repo: Path) -> list[tuple[str, str, bytes, list[str]]]:
    out = _run_git(
        git_dir, "ls-tree", "-r", "-z", "--full-tree", commit, what=f"tree of commit {commit} in {repo} cannot be read"
    )
    entries = []
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, _, raw_path = rec.partition(b"\t")
        try:
            mode, otype, oid = meta.decode("ascii").split(" ")
        except ValueError:
            raise CheckoutFailed(f"unexpected ls-tree output for {commit}: {rec[:80]!r}") from None
        path = raw_path.decode("utf-8", "surrogateescape")
        parts = path.split("/")
        for p in parts:
            if p in ("", ".", "..") or p.lower() == ".git":
                raise CheckoutFailed(
                    f"commit {commit} of {repo} holds the unsafe path {path!r}",
                    hint="the repository holds a crafted tree; `git fsck` reports it",
                    code="build.checkout.unsafe_path",
                )
        entries.append((mode, otype, oid.encode(), parts))
    return entries


class _Tree:
    """Creates directories and files below ``root`` through directory descriptors, no symlink followed."""

    def __init__(self, root: Path, mtime: int) -> None:
        self.root = root
        self.mtime = mtime
        self._dir_parts: tuple[str, ...] | None = None
        self._dir_fd = -1
        self.dirs: set[tuple[str, ...]] = set()

    def parent_fd(self, parts: tuple[str, ...]) -> int:
        if parts == self._dir_parts:
            return self._dir_fd
        self.close()
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for i, part in enumerate(parts):
            if parts[: i + 1] not in self.dirs:
                os.mkdir(part, 0o755, dir_fd=fd)
                self.dirs.add(parts[: i + 1])
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        self._dir_parts, self._dir_fd = parts, fd
        return fd

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
        self._dir_parts, self._dir_fd = None, -1

    def stamp_dirs(self) -> None:
        for parts in sorted(self.dirs, key=len, reverse=True):
            path = self.root.joinpath(*parts)
            os.chmod(path, 0o755, follow_symlinks=False)
            os.utime(path, (self.mtime, self.mtime), follow_symlinks=False)
        os.utime(self.root, (self.mtime, self.mtime))


class _CatFile:
    """One ``git cat-file --batch`` process; object ids go in from a thread, content comes out."""

    def __init__(self, git_dir: Path, oids: list[bytes]) -> None:
        self.proc = subprocess.Popen(
            _git_cmd(git_dir, "cat-file", "--batch", "--buffer"),
            env=git_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out: IO[bytes] = self.proc.stdout
        stdin = self.proc.stdin

        def feed() -> None:
            try:
                for oid in oids:
                    stdin.write(oid + b"\n")
                stdin.close()
            except (BrokenPipeError, ValueError):
                pass

        self.feeder = threading.Thread(target=feed, daemon=True)
        self.feeder.start()

    def next_object(self, oid: bytes) -> tuple[int, Iterator[bytes]]:
        header = self.out.readline()
        fields = header.split()
        if len(fields) != 3 or fields[0] != oid:
            raise CheckoutFailed(f"object {oid.decode()} cannot be read: {header.decode(errors='replace').strip()!r}")
        size = int(fields[2])

        def chunks() -> Iterator[bytes]:
            remaining = size
            while remaining:
                chunk = self.out.read(min(_CHUNK, remaining))
                if not chunk:
                    raise CheckoutFailed(f"object {oid.decode()} was cut short by git")
                remaining -= len(chunk)
                yield chunk
            if self.out.read(1) != b"\n":
                raise CheckoutFailed(f"object {oid.decode()}: unexpected git output after its content")

        return size, chunks()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.feeder.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def checkout_commit(repo: Path | str, ref: str, dest: Path | None = None, *, work_root: Path | None = None) -> Checkout:
    """Write the tree of the commit ``ref`` names into a fresh private directory.

    ``dest`` must not exist or be an empty directory; by default a new ``ccpipe-build-*``
    directory (mode 0700) is made under ``work_root`` (or the system temporary directory). On
    error the partly written directory is removed. Raises :class:`CheckoutFailed` naming the
    repository, ref or object that could not be read.
    """
    repo = Path(repo).absolute()
    commit, commit_time = resolve_commit(repo, ref)
    git_dir = _git_dir(repo)
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="ccpipe-build-", dir=work_root))
    else:
        dest = Path(dest)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise CheckoutFailed(f"checkout directory {dest} is not empty", hint="give an empty or new directory")
    os.chmod(dest, 0o700)
    try:
        _write_tree(git_dir, repo, commit, commit_time, dest)
    except BaseException:
        _remove_tree(dest)
        raise
    return Checkout(path=dest, repo=repo, ref=ref, commit=commit, commit_time=commit_time)


def _write_tree(git_dir: Path, repo: Path, commit: str, mtime: int, dest: Path) -> None:
    entries = _tree_entries(git_dir, commit, repo)
    blobs = [oid for mode, otype, oid, _ in entries if otype == "blob"]
    tree = _Tree(dest, mtime)
    cat = _CatFile(git_dir, blobs)
    try:
        for mode, otype, oid, parts in entries:
            name = parts[-1]
            if otype not in ("blob", "commit"):
                raise CheckoutFailed(f"commit {commit}: unexpected {otype} at {'/'.join(parts)}")
            try:
                fd = tree.parent_fd(tuple(parts[:-1]))
                if otype == "commit":  # a submodule: an empty directory, as in a fresh clone
                    os.mkdir(name, 0o755, dir_fd=fd)
                    tree.dirs.add(tuple(parts))
                    continue
                _size, chunks = cat.next_object(oid)
                if mode == "120000":
                    target = b"".join(chunks)
                    os.symlink(target, name.encode("utf-8", "surrogateescape"), dir_fd=fd)
                    os.utime(name, (mtime, mtime), dir_fd=fd, follow_symlinks=False)
                    continue
                perm = 0o755 if mode == "100755" else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                out = os.open(name, flags, perm, dir_fd=fd)
                try:
                    for chunk in chunks:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(out, view) :]
                    os.fchmod(out, perm)
                    os.utime(out, (mtime, mtime))
                finally:
                    os.close(out)
            except FileExistsError:
                raise CheckoutFailed(
                    f"commit {commit} of {repo} holds {'/'.join(parts)!r} twice",
                    hint="the repository holds a crafted tree; `git fsck` reports it",
                    code="build.checkout.unsafe_path",
                ) from None
            except NotADirectoryError:
                raise CheckoutFailed(
                    f"commit {commit} of {repo} holds {'/'.join(parts)!r} below a non-directory",
                    hint="the repository holds a crafted tree; `git fsck` reports it",
                    code="build.checkout.unsafe_path",
                ) from None
            except OSError as exc:
                raise CheckoutFailed(f"cannot write {'/'.join(parts)!r} of commit {commit}: {exc.strerror}") from exc
        tree.close()
        tree.stamp_dirs()
        if cat.out.read(1):
            raise CheckoutFailed(f"git printed more objects than commit {commit} holds")
        if cat.proc.wait() != 0:
            err = cat.proc.stderr.read().decode(errors="replace").strip() if cat.proc.stderr else ""
            raise CheckoutFailed(f"reading the objects of {commit} from {repo} failed: {err}")
    finally:
        tree.close()
        cat.close()


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_checkout(checkout: Checkout) -> None:
    """Delete a checkout's work directory."""
    _remove_tree(checkout.path)
