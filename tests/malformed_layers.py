"""Minimal malformed layers the fuzz targets found, shared by the unpacker's and the builder's
regression tests (both read layers through ``ccpipe.oci.tar_stream``)."""

from __future__ import annotations

import io
import tarfile


def bad_sparse_header_layer() -> bytes:
    """One PAX entry that claims GNU sparse format 1.0 but has no sparse map: tarfile raised a raw ValueError."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "1"}
        tar.addfile(info)
    return buf.getvalue()


def after_a_good_entry(data: bytes) -> bytes:
    """``data`` behind one whole, valid entry (no end marker): the fault is met past the first header."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    return buf.getvalue()[: 2 * tarfile.BLOCKSIZE] + data


CORRUPT_GZIP_LAYER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff\xff"
"""A gzip header followed by an invalid deflate block: zlib_ng raised its own ``error``, not zlib's."""

MALFORMED_LAYERS = {
    "bad-sparse-header": (bad_sparse_header_layer(), "application/vnd.oci.image.layer.v1.tar"),
    "corrupt-gzip": (CORRUPT_GZIP_LAYER, "application/vnd.oci.image.layer.v1.tar+gzip"),
}
"""Name → (layer bytes, media type)."""
