"""Pushing small images to a real docker-registry with plain HTTP (anonymous or Basic), for tests
of what the registry keeps; no part of ccpipe's registry client is involved."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _request(url: str, method: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def push_blob(address: str, repository: str, data: bytes, auth: tuple[str, str] | None = None) -> str:
    """Upload one blob (monolithic); returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, body = _request(f"http://{address}/v2/{repository}/blobs/uploads/", "POST", b"", auth=auth)
    assert status == 202, (status, body)
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{address}{location}"
    sep = "&" if "?" in location else "?"
    status, _, body = _request(f"{location}{sep}digest={digest}", "PUT", data,
                               {"Content-Type": "application/octet-stream"}, auth=auth)
    assert status == 201, (status, body)
    return digest


def push_image(address: str, repository: str, tag: str, layers: list[bytes],
               auth: tuple[str, str] | None = None) -> str:
    """Push an OCI image of ``layers`` under ``tag``; returns the manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": push_blob(address, repository, config, auth), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push_blob(address, repository,
                                                                                              layer, auth),
                    "size": len(layer)} for layer in layers],
    }
    raw = json.dumps(manifest).encode()
    status, _, body = _request(f"http://{address}/v2/{repository}/manifests/{tag}", "PUT", raw,
                               {"Content-Type": OCI_MANIFEST}, auth=auth)
    assert status == 201, (status, body)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def manifest_status(address: str, repository: str, reference: str, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of a GET of a manifest (200 present, 404 gone)."""
    status, _, _ = _request(f"http://{address}/v2/{repository}/manifests/{reference}", "GET",
                            headers={"Accept": OCI_MANIFEST}, auth=auth)
    return status


def blob_status(address: str, repository: str, digest: str, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of a HEAD of a blob."""
    status, _, _ = _request(f"http://{address}/v2/{repository}/blobs/{digest}", "HEAD", auth=auth)
    return status


def delete_manifest(address: str, repository: str, digest: str, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of a DELETE of a manifest by digest."""
    status, _, _ = _request(f"http://{address}/v2/{repository}/manifests/{digest}", "DELETE", auth=auth)
    return status


def retag(address: str, repository: str, digest: str, tag: str) -> None:
    """Tag the manifest ``digest`` as ``tag`` too (the same bytes, so the same digest)."""
    status, headers, body = _request(f"http://{address}/v2/{repository}/manifests/{digest}", "GET",
                                     headers={"Accept": OCI_MANIFEST})
    assert status == 200, status
    status, _, answer = _request(f"http://{address}/v2/{repository}/manifests/{tag}", "PUT", body,
                                 {"Content-Type": headers.get("Content-Type", OCI_MANIFEST)})
    assert status == 201, (status, answer)
