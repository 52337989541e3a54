"""Reading the entries of a layer's tar stream so that every malformed byte is a ``tarfile.TarError``.

:mod:`tarfile` reports most bad headers as :class:`tarfile.ReadError`, but lets two faults of
outside input through as other types: a malformed number in a PAX or GNU sparse record
(``GNU.sparse.map=x``) raises a bare :class:`ValueError`, and the ``zlib_ng`` decompressor used
for gzip layers raises :class:`zlib_ng.error`, which is not the :class:`zlib.error` tarfile
itself wraps. The node agent's unpacker and the builder's base index read layers through
:func:`open_tar_stream` and :func:`tar_members` and catch :data:`LAYER_READ_ERRORS`, so each
turns any malformed layer into its own error.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, cast

from zlib_ng import gzip_ng, zlib_ng

LAYER_READ_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError,
    gzip_ng.BadGzipFile,
    zlib.error,
    # zlib_ng's stubs declare ``error`` as an instance; at run time it is the exception class.
    cast("type[Exception]", zlib_ng.error),
    EOFError,
)
"""What reading a malformed layer raises: bad tar headers (through :func:`open_tar_stream` and
:func:`tar_members`), a gzip stream that is corrupt or truncated."""


@contextmanager
def open_tar_stream(fileobj: IO[bytes]) -> Iterator[tarfile.TarFile]:
    """``fileobj`` opened as a forward-only tar stream (mode ``r|``), closed on exit.

    Opening reads the first header: raises :class:`tarfile.ReadError` if it is malformed,
    including the numbers tarfile reports as :class:`ValueError`.
    """
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|")  # noqa: SIM115 - closed below
    except ValueError as exc:
        raise tarfile.ReadError(f"malformed tar header: {exc}") from exc
    with tar:
        yield tar


def tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The entries of ``tar`` in stream order (works on ``r|`` streams).

    Raises :class:`tarfile.ReadError` for a header tarfile cannot read, including the malformed
    PAX / GNU sparse numbers it reports as :class:`ValueError`.
    """
    while True:
        try:
            member = tar.next()
        except ValueError as exc:
            raise tarfile.ReadError(f"malformed tar header: {exc}") from exc
        if member is None:
            return
        yield member
