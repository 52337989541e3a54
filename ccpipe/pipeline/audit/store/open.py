"""Open the configured audit database: SQLite by default, PostgreSQL for ``postgresql://…``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ccpipe.pipeline.audit.query import QueryError, sqlite_path
from ccpipe.schemas.config import Settings

if TYPE_CHECKING:
    from ccpipe.pipeline.audit.store.postgres import PostgresAudit
    from ccpipe.pipeline.audit.store.sqlite_audit import SqliteAudit


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
