"""``audit export``: a self-contained evidence bundle for one workload that verifies offline.

Layout of the bundle directory::

    README.txt        what is inside and how to check it
    manifest.json     {"workload_id", "checkpoint": "checkpoint.note", "events": [{leaf_index,
                       event_id, type, file, signature, proof}, …]}
    checkpoint.note   the signed checkpoint every proof is against
    keyring.json      component event keys and the log's verifier key
    events/NNNNNNNNN-<type>.json   the logged canonical bytes of each event
    proofs/<event_id>.json         one ``audit prove --json`` document per event
    verify.py         a copy of :mod:`ccpipe.pipeline.audit.offline` (standard library only)

``python3 verify.py BUNDLE_DIR`` checks every proof against the checkpoint and every
event's signature against the keyring, without ccpipe.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ccpipe.pipeline.audit import offline
from ccpipe.pipeline.audit.errors import AuditError
from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.audit.prove import EventNotLogged, latest_checkpoint, prove_event
from ccpipe.pipeline.audit.query import AuditIndex
from ccpipe.pipeline.audit.store.interface import LogStore
from ccpipe.pipeline.event_signature import SIGNATURE_HEADER

_README = """\
ccpipe audit evidence bundle for workload {workload}

Every file under events/ is an event exactly as it was published and logged (RFC 8785 JSON).
proofs/ holds, for each event, an RFC 9162 inclusion proof into the Merkle tree whose signed
C2SP checkpoint is checkpoint.note; keyring.json holds the log's verifier key and the
components' Ed25519 event keys ({header} signatures, over "ccpipe event signature v1\\n" + bytes).

Check it with nothing but Python 3:  python3 verify.py .
"""


class ExportError(AuditError):
    """The bundle cannot be written."""

    code = "audit.export.failed"


def export_workload(store: LogStore, index: AuditIndex, keyring: Keyring, workload_id: str, out: Path,
                    extra_checkpoints: list[bytes] | None = None) -> dict[str, object]:
    """Write the bundle of ``workload_id`` into ``out`` (a new or empty directory); returns the manifest.

    Raises :class:`EventNotLogged` when the workload has no logged event and
    :class:`ExportError` when ``out`` is not empty or cannot be written.
    """
    events = index.journey(workload_id)
    if not events:
        raise EventNotLogged(f"workload {workload_id} has no event in the audit log")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty", hint="choose a new directory for the bundle")
    cp = latest_checkpoint(store, keyring, extra_checkpoints)
    try:
        (out / "events").mkdir(parents=True, exist_ok=True)
        (out / "proofs").mkdir(exist_ok=True)
        entries = []
        for e in events:
            if e.leaf_index >= cp.size:
                continue  # not covered yet: a later export will include it
            leaf = next(store.leaves(e.leaf_index, e.leaf_index + 1))
            name = f"events/{e.leaf_index:09d}-{e.type}.json"
            (out / name).write_bytes(leaf.data)
            doc = prove_event(store, keyring, e.event_id, cp) if e.event_id else None
            proof = f"proofs/{e.leaf_index:09d}.json"
            if doc is not None:
                (out / proof).write_text(json.dumps(doc, indent=2) + "\n")
            entries.append({"leaf_index": e.leaf_index, "event_id": e.event_id, "type": e.type, "file": name,
                            "signature": leaf.signature, "signature_state": e.signature,
                            "proof": proof if doc is not None else None})
        manifest = {"workload_id": workload_id, "checkpoint": "checkpoint.note", "tree_size": cp.size,
                    "events": entries}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (out / "checkpoint.note").write_bytes(cp.note)
        (out / "keyring.json").write_text(json.dumps(keyring.to_json(), indent=2, sort_keys=True) + "\n")
        (out / "README.txt").write_text(_README.format(workload=workload_id, header=SIGNATURE_HEADER))
        shutil.copyfile(offline.__file__, out / "verify.py")
    except OSError as exc:
        raise ExportError(f"cannot write the bundle to {out}: {exc.strerror}") from exc
    return manifest
