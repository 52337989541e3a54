"""The SQLite store (atomic batches, resume, redelivery, crashes) and verify_log on tampered stores."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ccpipe.pipeline.audit.checkpoint import NoteSigner
from ccpipe.pipeline.audit.entry import Entry
from ccpipe.pipeline.audit.errors import InconsistencyError, StoreError
from ccpipe.pipeline.audit.event_signing import Keyring, keyring_from
from ccpipe.pipeline.audit.publisher import publish_checkpoint
from ccpipe.pipeline.audit.store.sqlite import SqliteLogStore
from ccpipe.pipeline.audit.verify import Damage, verify_log
from ccpipe.pipeline.event_signature import ComponentKey, signature_header
from ccpipe.pipeline.event_trust import SignatureVerdict
from tests.unit.pipeline.audit import audit_naive as naive

ORIGIN = "ccpipe.test/audit"
BUILD = ComponentKey.generate("build")


def entries(n: int, start: int = 0) -> list[Entry]:
    out = []
    for i in range(start, start + n):
        data = json.dumps({"id": f"ev-{i}", "source": {"component": "build"}, "n": i}, sort_keys=True).encode()
        out.append(Entry(data, stream_seq=i + 1, signature=signature_header(BUILD, data)))
    return out


def keyring(log: NoteSigner) -> Keyring:
    ring = keyring_from([BUILD])
    ring.add_log_key(log.verifier)
    return ring


def test_batches_integrate_to_the_oracle_root_and_survive_reopening(tmp_path: Path) -> None:
    es = entries(100)
    with SqliteLogStore(tmp_path / "log.db") as store:
        for a, b in [(0, 1), (1, 7), (7, 64), (64, 100)]:
            done = store.append(es[a:b])
            assert (done.first_index, done.size) == (a, b)
            assert done.root == naive.mth([e.leaf_hash for e in es[:b]])
    with SqliteLogStore(tmp_path / "log.db") as store:
        assert (store.size(), store.last_stream_seq()) == (100, 100)
        assert store.indexes_of("ev-42") == [42]
        leaf = store.leaf(42)
        assert leaf is not None and leaf.data == es[42].data and leaf.signature == es[42].signature


def test_redelivered_messages_are_skipped_and_changed_ones_refused(tmp_path: Path) -> None:
    es = entries(10)
    store = SqliteLogStore(tmp_path / "log.db")
    store.append(es[:6])
    done = store.append(es[3:])  # the consumer crashed before acking 4..6
    assert (done.skipped, done.size) == (3, 10)
    evil = Entry(b'{"id":"ev-4","rewritten":true}', stream_seq=5)
    with pytest.raises(StoreError, match="other bytes"):
        store.append([evil])


def test_gaps_and_unsequenced_entries_are_refused_without_writing(tmp_path: Path) -> None:
    store = SqliteLogStore(tmp_path / "log.db")
    store.append(entries(3))
    with pytest.raises(StoreError, match="gap"):
        store.append(entries(2, start=4))  # sequence 4 was never seen
    with pytest.raises(StoreError, match="without a stream sequence"):
        store.append([Entry(b"{}")])
    assert store.size() == 3


class FailingConnection:
    """Wraps a real connection; the Nth execute/executemany after arming fails (or kills us)."""

    def __init__(self, path: str, fail_at: int | None, hard: bool) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self.fail_at, self.hard, self.calls = fail_at, hard, 0

    def _tick(self, sql: str) -> None:
        if self.fail_at is None or sql.startswith(("ROLLBACK", "PRAGMA", "SELECT")):
            return
        self.calls += 1
        if self.calls == self.fail_at:
            if self.hard:
                import os

                os._exit(9)  # a crash: no rollback, no close
            raise sqlite3.OperationalError("disk I/O error (injected)")

    def execute(self, sql: str, *args: Any) -> Any:
        self._tick(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._tick(sql)
        return self._db.executemany(sql, *args)

    def close(self) -> None:
        self._db.close()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5])
def test_a_failed_write_anywhere_in_a_batch_leaves_the_previous_state(tmp_path: Path, fail_at: int) -> None:
    log = NoteSigner.generate(ORIGIN)
    path = str(tmp_path / "log.db")
    with SqliteLogStore(path) as store:
        store.append(entries(10))
        note = publish_checkpoint(store, log)
    conn: dict[str, FailingConnection] = {}

    def connect(p: str) -> FailingConnection:
        conn["c"] = FailingConnection(p, None, False)
        return conn["c"]

    store = SqliteLogStore(path, connect=connect)
    conn["c"].fail_at = fail_at  # BEGIN, leaves, (frontier reads), nodes, state, COMMIT
    with pytest.raises(StoreError, match="not written"):
        store.append(entries(7, start=10))
    assert (store.size(), store.last_stream_seq()) == (10, 10)
    report = verify_log(store, note, keyring(log))
    assert report.ok, report.finding
    conn["c"].fail_at = None
    assert store.append(entries(7, start=10)).size == 17  # and the consumer simply retries


@pytest.mark.parametrize("crash_at", [2, 3, 4])
def test_a_process_killed_mid_batch_leaves_a_consistent_resumable_log(tmp_path: Path, crash_at: int) -> None:
    log = NoteSigner.generate(ORIGIN)
    path = tmp_path / "log.db"
    with SqliteLogStore(path) as store:
        store.append(entries(10))
        note = publish_checkpoint(store, log)
    child = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from test_audit_store_verify import FailingConnection, entries
        from ccpipe.pipeline.audit.store.sqlite import SqliteLogStore
        store = SqliteLogStore({str(path)!r}, connect=lambda p: FailingConnection(p, {crash_at}, True))
        store.append(entries(50, start=10))
        """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    with SqliteLogStore(path) as store:
        assert (store.size(), store.last_stream_seq()) == (10, 10)
        assert verify_log(store, note, keyring(log)).ok
        store.append(entries(50, start=10))
        assert store.root() == naive.mth([e.leaf_hash for e in entries(60)])


@pytest.fixture
def logged(tmp_path: Path) -> tuple[SqliteLogStore, bytes, Keyring]:
    log = NoteSigner.generate(ORIGIN)
    store = SqliteLogStore(tmp_path / "log.db")
    store.append(entries(40))
    publish_checkpoint(store, log)
    store.append(entries(60, start=40))
    note = publish_checkpoint(store, log)
    return store, note, keyring(log)


def test_an_untouched_log_verifies(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    report = verify_log(store, note, ring)
    assert report.ok and report.leaves_checked == 100 and not report.flags


def _sql(store: SqliteLogStore, *stmts: tuple[str, tuple[Any, ...]]) -> None:
    db = sqlite3.connect(store.path, isolation_level=None)
    for sql, args in stmts:
        db.execute(sql, args)
    db.close()


def test_a_deleted_leaf_is_named(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    _sql(store, ("DELETE FROM leaves WHERE idx = 57", ()))
    report = verify_log(store, note, ring)
    assert (report.first_bad_index, report.finding and report.finding.damage) == (57, Damage.DELETED)


def test_a_deleted_leaf_hidden_by_renumbering_is_named(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    _sql(
        store,
        ("DELETE FROM leaves WHERE idx = 57", ()),
        ("UPDATE leaves SET idx = -idx - 1 WHERE idx > 57", ()),
        ("UPDATE leaves SET idx = -idx - 2 WHERE idx < 0", ()),
    )
    report = verify_log(store, note, ring)
    assert (report.first_bad_index, report.finding and report.finding.damage) == (57, Damage.DELETED)


def test_modified_bytes_are_named_with_the_broken_signature(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    _sql(store, ("UPDATE leaves SET data = replace(data, '\"n\": 23', '\"n\": 24') WHERE idx = 23", ()))
    report = verify_log(store, note, ring)
    assert (report.first_bad_index, report.finding and report.finding.damage) == (23, Damage.MODIFIED)
    assert [(f.index, f.check.verdict) for f in report.flags] == [(23, SignatureVerdict.BAD_SIGNATURE)]


def test_bytes_and_leaf_hash_rewritten_together_are_still_named(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    forged = Entry(json.dumps({"id": "ev-66", "source": {"component": "build"}, "n": -1}, sort_keys=True).encode())
    _sql(store, ("UPDATE leaves SET data = ?, leaf_hash = ? WHERE idx = 66", (forged.data, forged.leaf_hash)))
    report = verify_log(store, note, ring)
    assert (report.first_bad_index, report.finding and report.finding.damage) == (66, Damage.MODIFIED)


def test_swapped_leaves_are_named_as_reordered(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    _sql(
        store,
        ("UPDATE leaves SET idx = -1 WHERE idx = 12", ()),
        ("UPDATE leaves SET idx = 12 WHERE idx = 30", ()),
        ("UPDATE leaves SET idx = 30 WHERE idx = -1", ()),
    )
    report = verify_log(store, note, ring)
    assert (report.first_bad_index, report.finding and report.finding.damage) == (12, Damage.REORDERED)
    assert not report.flags  # both events are genuine: only their order is wrong


def test_an_inserted_leaf_is_named(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, note, ring = logged
    forged = entries(1, start=500)[0]  # validly signed, but never on the stream at this point
    _sql(
        store,
        ("UPDATE leaves SET idx = -idx - 1 WHERE idx >= 71", ()),
        ("UPDATE leaves SET idx = -idx WHERE idx < 0", ()),
        (
            "INSERT INTO leaves VALUES (71, 9999, ?, ?, ?, ?)",
            (forged.event_id, forged.leaf_hash, forged.data, forged.signature),
        ),
    )
    report = verify_log(store, note, ring)
    assert (report.first_bad_index, report.finding and report.finding.damage) == (71, Damage.INSERTED)


def test_a_wholesale_rewrite_is_caught_by_the_signed_checkpoints(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    # Rewrite leaf 50 consistently everywhere the store keeps it (leaf, hash, every node):
    # only the log's signatures remain to tell.
    store, note, ring = logged
    es = entries(100)
    forged = Entry(es[50].data.replace(b'"n": 50', b'"n": 5'), stream_seq=51, signature=es[50].signature)
    es[50] = forged
    other = tmp = Path(store.path).with_name("rebuilt.db")
    with SqliteLogStore(tmp) as rebuilt:
        rebuilt.append(es)
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("ATTACH ? AS r", (str(other),))
    db.execute("DELETE FROM leaves")
    db.execute("INSERT INTO leaves SELECT * FROM r.leaves")
    db.execute("DELETE FROM nodes")
    db.execute("INSERT INTO nodes SELECT * FROM r.nodes")
    db.close()
    report = verify_log(store, note, ring)
    assert report.finding is not None and report.finding.damage is Damage.ROOT_MISMATCH
    assert report.first_bad_index == 40  # localised by the older signed checkpoint (size 40)
    assert [f.index for f in report.flags] == [50]


def test_a_checkpoint_from_another_key_is_not_trusted(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, _, ring = logged
    note = publish_checkpoint(store, NoteSigner.generate(ORIGIN))
    report = verify_log(store, note, ring)
    assert report.finding is not None and report.finding.damage is Damage.CHECKPOINT


def test_the_log_refuses_to_sign_a_rewritten_history(logged: tuple[SqliteLogStore, bytes, Keyring]) -> None:
    store, _, _ = logged
    _sql(store, ("UPDATE nodes SET hash = zeroblob(32) WHERE level = 6 AND idx = 0", ()))
    store.append(entries(1, start=100))
    with pytest.raises(InconsistencyError) as info:
        publish_checkpoint(store, NoteSigner.generate(ORIGIN))
    assert info.value.old == store.checkpoints()[-1].note and info.value.proof
