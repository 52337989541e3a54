"""``audit verify`` against the stream: recompute the tree from ``CCPIPE_EVENTS`` itself.

:func:`verify_stream` replays the stream's messages in sequence order, recomputes the RFC
6962 tree and compares its root, at every size a trusted checkpoint was signed for, with
that checkpoint. So whoever holds the NATS store cannot delete, alter, reorder or insert an
event below the latest checkpoint unnoticed, even if they rewrote the audit database too.

Where a root differs, the damage is named by comparing the stream's leaves with the audit
store's copy (when given): a stream leaf that is not in the store where the store's next
leaf is → **inserted**; a store leaf missing from the stream → **deleted**; a leaf found
elsewhere in the range → **reordered**; otherwise → **modified**. A gap in stream sequences
is a **deleted** message (JetStream never reuses a sequence). Every event signature is
checked too, and each failure is listed as a flag.

Imports :mod:`ccpipe.pipeline.audit` modules only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ccpipe.pipeline.audit.checkpoint import Checkpoint, open_checkpoint
from ccpipe.pipeline.audit.errors import CheckpointError
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.ingest import StreamMessage
from ccpipe.pipeline.audit.merkle import CompactRange, leaf_hash
from ccpipe.pipeline.audit.store.interface import LogStore
from ccpipe.pipeline.audit.verify import Damage, Finding, LogReport, SignatureFlag
from ccpipe.pipeline.event_trust import SignatureVerdict, check_event_signature


def trusted_checkpoints(notes: Iterable[bytes], keyring: Keyring) -> tuple[dict[int, Checkpoint], list[str]]:
    """The checkpoints a log key signs, by size, and a line per note that does not verify."""
    good: dict[int, Checkpoint] = {}
    bad: list[str] = []
    for note in notes:
        try:
            cp = open_checkpoint(note, keyring.log_keys)
        except CheckpointError as exc:
            bad.append(exc.message)
            continue
        if cp.size in good and good[cp.size].root != cp.root:
            bad.append(f"two signed checkpoints of size {cp.size} carry different roots: the log forked")
        good.setdefault(cp.size, cp)
    return good, bad


def _name_damage(stream: Sequence[bytes], store: LogStore | None, lo: int, hi: int) -> Finding:
    """Name the first damaged leaf in ``[lo, hi)``, where the stream disagrees with checkpoint ``hi``."""
    short = len(stream) < hi
    tail = Finding(len(stream), Damage.DELETED,
                   f"the stream holds {len(stream)} events; the signed checkpoint covers {hi}")
    if store is None:
        return tail if short else Finding(
            lo, Damage.ROOT_MISMATCH,
            f"stream leaves {lo}–{hi - 1} differ from what the signed checkpoint of size {hi} committed to")
    logged = [leaf.leaf_hash for leaf in store.leaves(lo, hi)]
    logged_at = {h: lo + i for i, h in enumerate(logged)}
    streamed = set(stream[lo:hi + 1])
    for i in range(lo, min(hi, len(stream))):
        mine = stream[i]
        theirs = logged[i - lo] if i - lo < len(logged) else None
        if mine == theirs:
            continue
        if mine not in logged_at:
            if i + 1 < len(stream) and stream[i + 1] == theirs:
                return Finding(i, Damage.INSERTED,
                               f"stream leaf {i} was never logged and the logged leaf {i} follows it: "
                               "an event was inserted")
            return Finding(i, Damage.MODIFIED, f"stream leaf {i}'s bytes differ from the logged event: it was altered")
        if theirs is not None and theirs not in streamed:
            return Finding(i, Damage.DELETED, f"logged leaf {i} is missing from the stream: an event was deleted")
        return Finding(i, Damage.REORDERED,
                       f"stream leaf {i} is the logged leaf {logged_at[mine]}: events were moved")
    if short:
        return tail
    return Finding(lo, Damage.ROOT_MISMATCH,
                   f"stream leaves {lo}–{hi - 1} differ from the signed checkpoint of size {hi}, and the audit "
                   "store holds the same altered leaves (both were rewritten)")


def verify_stream(messages: Iterable[StreamMessage], notes: Iterable[bytes], keyring: Keyring,
                  store: LogStore | None = None) -> LogReport:
    """Check the stream's messages (in the order read) against every trusted checkpoint.

    Never raises for damage: it is in :attr:`LogReport.finding`; the report's checkpoint is
    the largest trusted one.
    """
    cps, bad_notes = trusted_checkpoints(notes, keyring)
    if bad_notes:
        return LogReport(None, 0, Finding(None, Damage.CHECKPOINT, bad_notes[0]))
    if not cps:
        return LogReport(None, 0, Finding(None, Damage.CHECKPOINT, "no checkpoint signed by a trusted log key"))
    largest = cps[max(cps)]
    cr = CompactRange()
    hashes: list[bytes] = []
    flags: list[SignatureFlag] = []
    finding: Finding | None = None
    last_good = 0
    mismatch: tuple[int, int] | None = None
    expect = 1
    for m in messages:
        check = check_event_signature(keyring, m.data, m.signature)
        if check.verdict is not SignatureVerdict.VALID:
            flags.append(SignatureFlag(len(hashes), None, check))
        if finding is not None:
            continue
        if m.seq != expect:
            what = (f"stream sequences {expect}–{m.seq - 1} are missing" if m.seq > expect
                    else f"stream sequence {m.seq} comes after {expect - 1}")
            finding = Finding(len(hashes), Damage.DELETED if m.seq > expect else Damage.REORDERED,
                              f"{what} (leaf {len(hashes)})")
            continue
        expect += 1
        h = leaf_hash(m.data)
        hashes.append(h)
        cr.append(h)
        cp = cps.get(cr.size)
        if cp is not None and mismatch is None:
            if cr.root() != cp.root:
                mismatch = (last_good, cr.size)  # named once every stream leaf is hashed
            last_good = cr.size
    if mismatch is None and cr.size < largest.size:
        mismatch = (last_good, largest.size)  # the stream ends short of a checkpoint
    if mismatch is not None:
        named = _name_damage(hashes, store, *mismatch)
        finding = named if finding is None or (named.index or 0) < (finding.index or 0) else finding
    return LogReport(largest, min(cr.size, largest.size), finding, flags)
