"""Small OCI images written by hand into OCI layouts, for the registry client's tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    """Write a blob into the layout; returns a descriptor without mediaType."""
    d = digest_of(data)
    path = layout / "blobs" / "sha256" / d.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": d, "size": len(data)}


def tar_gz_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip'd tar of ``files``; returns (blob bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), digest_of(tar_bytes)


def add_ref(layout: Path, desc: dict[str, Any], name: str | None) -> None:
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    entry = dict(desc)
    if name is not None:
        entry["annotations"] = {REF_NAME: name}
    index["manifests"].append(entry)
    index_path.write_text(json.dumps(index))


def init(layout: Path) -> None:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    if not (layout / "index.json").exists():
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))


def make_image(layout: Path, tag: str, layer_sizes: tuple[int, ...] = (3000, 70000), seed: bytes = b"") -> str:
    """Write an image with random-content tar.gz layers into ``layout`` under ``tag``; returns its digest."""
    init(layout)
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        content = seed + os.urandom(size)
        blob, diff_id = tar_gz_layer({f"file{i}.bin": content})
        layers.append({"mediaType": LAYER_GZ, **put_blob(layout, blob)})
        diff_ids.append(diff_id)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **put_blob(layout, config)},
        "layers": layers,
    }
    body = json.dumps(manifest).encode()
    desc = {"mediaType": OCI_MANIFEST, **put_blob(layout, body)}
    add_ref(layout, desc, tag)
    return str(desc["digest"])


def make_raw_blob_image(layout: Path, tag: str, blob_size: int) -> str:
    """An image whose single layer is ``blob_size`` random bytes (fast to make, large to push)."""
    init(layout)
    path_desc = put_blob(layout, os.urandom(blob_size))
    config = put_blob(layout, b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config},
        "layers": [{"mediaType": "application/octet-stream", **path_desc}],
    }
    desc = {"mediaType": OCI_MANIFEST, **put_blob(layout, json.dumps(manifest).encode())}
    add_ref(layout, desc, tag)
    return str(desc["digest"])


def add_cosign_sig(layout: Path, image_digest: str) -> str:
    """Add a cosign-style ``sha256-<hex>.sig`` manifest (unsigned payload; shape only)."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "example/repo"},
                "image": {"docker-manifest-digest": image_digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    layer = put_blob(layout, payload)
    cfg = put_blob(
        layout,
        json.dumps(
            {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
        ).encode(),
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **cfg},
        "layers": [
            {
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                **layer,
                "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="},
            }
        ],
    }
    desc = {"mediaType": OCI_MANIFEST, **put_blob(layout, json.dumps(manifest).encode())}
    add_ref(layout, desc, "sha256-" + image_digest.split(":")[1] + ".sig")
    return str(desc["digest"])


def referrer_manifest(layout: Path, subject: dict[str, Any], artifact_type: str, content: bytes) -> dict[str, Any]:
    """Write an OCI 1.1 artifact manifest with ``subject`` into the layout (not in index.json)."""
    empty = put_blob(layout, b"{}")
    layer = put_blob(layout, content)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": artifact_type, **layer}],
        "subject": subject,
    }
    body = json.dumps(manifest).encode()
    return {"mediaType": OCI_MANIFEST, "body": body, **put_blob(layout, body)}


def blob_bytes(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def all_blob_files(layout: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir() if not p.name.startswith(".")}
