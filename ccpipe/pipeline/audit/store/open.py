"""Open the configured audit database: SQLite by default, PostgreSQL for ``postgresql://…``.

SQLite lives at ``<data_dir>/audit/index.sqlite`` (the embedded default, the same file as the
Merkle log, so a leaf and its index row are written in one transaction); PostgreSQL is used
when ``settings.audit_db`` is ``postgresql://…``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ccpipe.pipeline.audit.query import AuditIndex, QueryError
from ccpipe.schemas.config import Settings

if TYPE_CHECKING:
    from ccpipe.pipeline.audit.store.postgres import PostgresAudit
    from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit


def audit_dir(settings: Settings) -> Path:
    """``<data_dir>/audit``: the log/index database and the service's state."""
    return settings.data_dir / "audit"


def sqlite_path(settings: Settings) -> Path:
    """The embedded log and index: ``<data_dir>/audit/index.sqlite``."""
    return audit_dir(settings) / "index.sqlite"


def open_audit_store(settings: Settings) -> SqliteAudit | PostgresAudit:
    """The audit log + index of ``settings`` (created if absent).

    Raises :class:`QueryError` for an ``audit_db`` URL that is not PostgreSQL and
    :class:`~ccpipe.pipeline.audit.errors.StoreError` when the database cannot be opened.
    """
    url = settings.audit_db
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise QueryError(
                f"CCPIPE_AUDIT_DB {url.split('://')[0]}://… is not supported",
                hint="use postgresql://USER@HOST/DB, or unset it for the embedded SQLite index",
            )
        from ccpipe.pipeline.audit.store.postgres import PostgresAudit

        return PostgresAudit(url)
    from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit

    return SqliteAudit(sqlite_path(settings))


def open_index(settings: Settings) -> AuditIndex:
    """The configured index, opened for reading (and writing, for the audit service).

    Raises what :func:`open_audit_store` raises.
    """
    return open_audit_store(settings)
