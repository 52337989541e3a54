"""The audit service's self-checks, pure: the store's tail against the stream, the stream's identity, its status."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ccpipe.pipeline.audit.liveness import (
    AuditState,
    AuditStatus,
    StreamMark,
    read_status,
    stream_problem,
    tail_problem,
    write_status,
)
from ccpipe.pipeline.audit.merkle import leaf_hash
from ccpipe.pipeline.audit.store.interface import StoredLeaf

MARK = StreamMark("2025-01-01T00:00:00+00:00", 1, 100)


def leaf(index: int, data: bytes, hashed: bytes | None = None) -> StoredLeaf:
    return StoredLeaf(index, index + 1, None, hashed if hashed is not None else leaf_hash(data), data, None)


def test_a_stream_that_still_holds_the_log_is_fine() -> None:
    assert stream_problem("S", 100, MARK, MARK) is None
    assert stream_problem("S", 40, None, StreamMark(None, 1, 100)) is None  # behind: the lag, not a problem
    assert stream_problem("S", 100, MARK, StreamMark(MARK.created, 101, 100)) is None  # purged after logging


def test_a_missing_re_created_shrunk_or_purged_stream_is_named() -> None:
    assert stream_problem("S", 100, MARK, None) == "stream S is missing; the log holds events up to sequence 100"
    again = stream_problem("S", 100, MARK, StreamMark("2025-02-02T00:00:00+00:00", 1, 500))
    assert again is not None and "re-created at 2025-02-02" in again
    shrunk = stream_problem("S", 100, None, StreamMark(None, 1, 7))
    assert shrunk is not None and "ends at sequence 7" in shrunk
    lost = stream_problem("S", 100, MARK, StreamMark(MARK.created, 150, 200))
    assert lost is not None and "events 101–149 were removed before they were logged" in lost


def test_the_tail_is_checked_against_the_stream() -> None:
    good = [leaf(i, b"e%d" % i) for i in range(3)]
    stream = {i + 1: b"e%d" % i for i in range(3)}
    assert tail_problem(good, stream) is None
    forged = [*good[:2], leaf(2, b"forged")]
    assert tail_problem(forged, stream) == ("leaf 2 (stream sequence 3) differs from the stream's message "
                                            "at that sequence")
    torn = [*good[:1], leaf(1, b"e1", leaf_hash(b"other"))]
    assert tail_problem(torn, stream) == ("leaf 1 (stream sequence 2): its stored bytes do not hash to its "
                                          "stored leaf hash")


def test_a_stale_or_missing_status_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert not read_status(path).ready
    write_status(path, AuditStatus(AuditState.LEADING, logged_seq=5, stream_last_seq=9))
    fresh = read_status(path)
    assert fresh.ready and fresh.lag == 4
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "updated": time.time() - 60}))
    stale = read_status(path)
    assert not stale.ready and "last reported 60 s ago" in stale.reason
    path.write_text("{")
    assert "unreadable" in read_status(path).reason
