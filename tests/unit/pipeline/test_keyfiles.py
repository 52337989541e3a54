"""Key files created by racing processes: one winner, everyone uses its key, never a partial one."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

from ccpipe.pipeline.keyfiles import create_private_file, load_or_create_private_file


def _race(args: tuple[str, int]) -> tuple[bool, str]:
    path, n = args
    created = create_private_file(Path(path), f"key of racer {n}".encode() * 100)
    return created, hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _kbs_keys(data_dir: str) -> tuple[str, str, str, str]:
    from cryptography.hazmat.primitives import serialization

    from ccpipe.stages.attest.kbs.admin_auth import ensure_admin_keypair
    from ccpipe.stages.attest.kbs.sessions import load_session_key
    from ccpipe.stages.attest.kbs.store import FileKek
    from ccpipe.stages.attest.kbs.tokens import load_token_key

    d = Path(data_dir)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    admin = ensure_admin_keypair(d).public_bytes(*raw).hex()
    token = load_token_key(d).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()
    session = hashlib.sha256(load_session_key(d)).hexdigest()
    return admin, token, session, FileKek.for_data_dir(d).key_id


def test_one_racer_creates_the_file_and_all_read_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k"
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        results = pool.map(_race, [(str(path), n) for n in range(6)])
    assert sum(created for created, _ in results) == 1
    assert len({digest for _, digest in results}) == 1
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no litter


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "k"
    assert create_private_file(path, b"first")
    assert not create_private_file(path, b"second")
    assert load_or_create_private_file(path, lambda: b"third") == b"first"


def test_kbs_workers_starting_together_share_every_key(tmp_path: Path) -> None:
    """Workers of 'ccpipe kbs serve' on a fresh data directory end up with one set of keys."""
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        results = pool.map(_kbs_keys, [str(tmp_path)] * 6)
    assert len(set(results)) == 1
