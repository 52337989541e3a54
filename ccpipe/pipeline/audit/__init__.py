"""The audit trail: Merkle log of every event, signed checkpoints, index, queries, proofs.

Vocabulary (as in Tessera, used the same way in code, metrics and docs):

* **sequence** — give each event, in stream order, the next leaf index;
* **integrate** — extend the RFC 6962 Merkle tree by those leaves
  (:mod:`.integrate`, pure; :mod:`.store` persists the result in one transaction);
* **publish** — sign a C2SP checkpoint over the tree (:mod:`.checkpoint`, :mod:`.publisher`).

Modules: :mod:`.entry` (leaf bytes and hash), :mod:`.merkle` (pure hashing and proofs),
:mod:`.proofs` (read side over node-fetch functions), :mod:`.event_signing` (the keyring
and the verdict on each event's ``Ccpipe-Signature``; components sign with
:mod:`ccpipe.pipeline.event_signature`), :mod:`.verify` (``verify_log``; ``verify_tail``, the leaves
after the last checkpoint against the stream; ``verify_index``, the index against a rebuild), :mod:`.offline`
(stdlib-only proof and bundle checker for export bundles), :mod:`.errors`.

The live trail: :mod:`.service` (``serve_audit_log``: durable consumer over ``CCPIPE_EVENTS``,
checkpoints on ``ccpipe.audit.checkpoint``, failures retried and reported), :mod:`.liveness`
(its status and lag for ``/readyz``; the store-tail and stream-identity checks), :mod:`.lease`
(one writer through a NATS KV lease; other services stand by), :mod:`.ingest` (signature flags, batches),
:mod:`.fields` (what is indexed), :mod:`.query` (the query API: ``EventFilter``,
``IndexedEvent``, ``AuditIndex``), :mod:`.store` (SQLite and PostgreSQL; ``store.open``
opens the configured one), :mod:`.logkey` (the log key), :mod:`.prove`, :mod:`.export`,
:mod:`.streamcheck` (``audit prove``/``export``/``verify`` against the stream).

Nothing is imported here, so ``ccpipe.pipeline.audit.offline`` stays importable without the
rest of the package's dependencies.
"""
