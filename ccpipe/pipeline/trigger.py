"""The git trigger: a ``post-receive`` hook and ``ccpipe submit`` turn a push into ``submitted``.

The pure part (:func:`make_submission`) reads ``ccpipe.toml`` at the pushed commit and
returns either the ``submitted`` event or raises :class:`InvalidInput` naming the field; the
caller publishes that event, or a ``failed`` event carrying the error — nothing else.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ccpipe.schemas.errors import CcpipeError, InvalidInput

if TYPE_CHECKING:
    import uuid

    from ccpipe.schemas.envelope import Event

SPEC_FILE = "ccpipe.toml"
ZERO_COMMIT = "0" * 40
HOOK_MARKER = "# installed by ccpipe hook install"


def _git_bytes(repo: Path, *args: str) -> bytes:
    """Run git in ``repo``; its stdout as bytes (a file's content need not be text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise InvalidInput(
            f"git {' '.join(args)} failed in {repo}: {said}",
            hint="check that the path is a git repository and the ref exists",
            code="submit.git",
        )
    return proc.stdout


def _git(repo: Path, *args: str) -> str:
    return _git_bytes(repo, *args).decode(errors="replace").strip()


def _uuid7_int() -> int:
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((time.time_ns() // 1_000_000) & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    return value | 0b10 << 62 | rand & (1 << 62) - 1


def uuid7() -> uuid.UUID:
    """A fresh UUIDv7 (RFC 9562): Unix milliseconds, then 74 random bits.

    Made here rather than with the ``uuid6`` package, which loads ``importlib.metadata`` for its
    version, a tenth of what ``ccpipe submit`` may cost. A submit makes one or two; order within
    a millisecond does not matter for them.
    """
    import uuid  # here: it loads ``platform``; the quick submit path needs only the text (uuid7_text)

    return uuid.UUID(int=_uuid7_int())


def uuid7_text() -> str:
    """``str(uuid7())`` without the ``uuid`` module: 8-4-4-4-12 lowercase hex digits."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_workload_id(name: str) -> str:
    """``<name>-<10 hex>``: readable, unique, one NATS subject token."""
    return f"{name}-{_uuid7_int() & (1 << 40) - 1:010x}"


def _fallback_name(repo: Path) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", repo.name.lower().removesuffix(".git")).strip("-")
    return cleaned[:40] or "workload"


@dataclass(frozen=True)
class Push:
    """One updated ref of a push."""

    repo: Path
    ref: str
    old: str
    new: str
    pusher: str


def resolve_push(repo: Path, ref: str | None) -> Push:
    """A by-hand submission of ``ref`` (default: HEAD) of ``repo``."""
    repo = repo.resolve()
    ref = ref or "HEAD"
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    full_ref = _git(repo, "rev-parse", "--symbolic-full-name", ref) or ref
    return Push(repo=repo, ref=full_ref, old=ZERO_COMMIT, new=commit, pusher=current_user())


def current_user() -> str:
    """Who is pushing, as the hook sees it."""
    for var in ("GL_USERNAME", "GITEA_PUSHER_NAME", "REMOTE_USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def make_submission(push: Push) -> Event:
    """The ``submitted`` event for a push; raises :class:`InvalidInput` for a bad ``ccpipe.toml``."""
    # The models load here, not with the module: ``ccpipe submit`` builds a valid push's event
    # without them (ccpipe.pipeline.quick_submit) and comes here only for what that path declines.
    from ccpipe.schemas.envelope import Event, Source, Subject
    from ccpipe.schemas.events import EventType, Submitted
    from ccpipe.schemas.workload import parse_workload_spec_bytes

    try:
        raw = _git_bytes(push.repo, "show", f"{push.new}:{SPEC_FILE}")
    except InvalidInput as exc:
        raise InvalidInput(
            f"{SPEC_FILE} is missing at commit {push.new[:12]} of {push.repo}",
            hint=f"add a {SPEC_FILE} at the repository root (see README: 'ccpipe.toml')",
            code="spec.missing",
        ) from exc
    spec = parse_workload_spec_bytes(raw, source=f"{SPEC_FILE} at {push.new[:12]}")
    return Event(
        type=EventType.SUBMITTED,
        workload_id=new_workload_id(spec.workload.name),
        source=Source(component="submit", instance=push.pusher),
        subject=Subject(commit=push.new),
        payload=Submitted(
            repo=str(push.repo), ref=push.ref, old_commit=push.old, new_commit=push.new, pusher=push.pusher, spec=spec
        ),
    )


def submission_failure(push: Push, error: CcpipeError) -> Event:
    """The ``failed`` event published instead of ``submitted`` when a push cannot start a workload."""
    from ccpipe.schemas.envelope import Event, Source, Subject
    from ccpipe.schemas.events import EventType, Failed
    from ccpipe.schemas.failure import FailureReason

    return Event(
        type=EventType.FAILED,
        workload_id=new_workload_id(_fallback_name(push.repo)),
        source=Source(component="submit", instance=push.pusher),
        subject=Subject(commit=push.new),
        payload=Failed(reason=FailureReason(stage="submit", code=error.code, message=error.message, hint=error.hint)),
    )


def parse_hook_input(repo: Path, text: str) -> list[Push]:
    """``post-receive`` stdin lines ``<old> <new> <ref>`` → pushes (deletions are skipped)."""
    pushes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        if set(new) == {"0"}:
            continue
        pushes.append(Push(repo=repo.resolve(), ref=ref, old=old, new=new, pusher=current_user()))
    return pushes


def install_hook(repo: Path, data_dir: Path, *, force: bool = False) -> Path:
    """Install a ``post-receive`` hook in ``repo`` that submits every push.

    The hook runs this ccpipe (same interpreter) with this data directory. An existing hook
    that ccpipe did not write is kept unless ``force``; raises :class:`InvalidInput` then.
    """
    git_dir = Path(_git(repo, "rev-parse", "--absolute-git-dir"))
    hooks = git_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / "post-receive"
    if hook.exists() and HOOK_MARKER not in hook.read_text(errors="replace") and not force:
        raise InvalidInput(
            f"{hook} exists and was not written by ccpipe",
            hint="merge it by hand, or pass --force to replace it",
            code="hook.exists",
        )
    python = shlex.quote(sys.executable)
    hook.write_text(
        "#!/bin/sh\n"
        f"{HOOK_MARKER}: every pushed ref starts a ccpipe workload.\n"
        "# The data directory of the ccpipe this hook was installed for, whatever the pusher's environment says.\n"
        f"CCPIPE_DATA_DIR={shlex.quote(str(data_dir))}\n"
        "export CCPIPE_DATA_DIR\n"
        f"exec {python} -m ccpipe.pipeline.cli.main submit --hook \"$GIT_DIR\"\n"
    )
    hook.chmod(0o755)
    return hook
