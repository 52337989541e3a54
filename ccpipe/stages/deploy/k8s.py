"""Kubernetes output: a Pod or Deployment that runs a workload on a Confidential Containers cluster.

What makes the manifest confidential:

* ``runtimeClassName`` picks the CoCo runtime for the TEE: ``kata-qemu-snp`` (AMD SEV-SNP),
  ``kata-qemu-tdx`` (Intel TDX), ``enclave-cc`` (Intel SGX), and ``kata-qemu-coco-dev`` for an
  emulated or sample TEE (CoCo's development runtime, no hardware);
* ``nodeSelector`` on the Node Feature Discovery TEE labels
  (``amd.feature.node.kubernetes.io/snp: "true"``, ``intel.feature.node.kubernetes.io/tdx``,
  ``intel.feature.node.kubernetes.io/sgx``), so the pod only lands on a host that has the TEE;
* the initdata annotation ``io.katacontainers.config.hypervisor.cc_init_data``: base64 of the
  gzip'd initdata TOML (KBS URL, image signature policy, image digest), whose digest Kata
  puts in the TEE's launch data (SNP HOST_DATA, TDX MRCONFIGID) — Kata runtimes only;
* the image by digest, never by tag.

Replicas of a Deployment are spread over hosts (``topologySpreadConstraints``).

Pure: dictionaries in, dictionaries out; no NATS, no cluster access.
"""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass
from typing import Any

from ccpipe.schemas.digest import SHA256_ONLY, is_digest
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.spec_rules import TeeType

INITDATA_ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
DEV_RUNTIME_CLASS = "kata-qemu-coco-dev"
RUNTIME_CLASSES: dict[TeeType, str] = {
    TeeType.SNP: "kata-qemu-snp",
    TeeType.TDX: "kata-qemu-tdx",
    TeeType.SGX: "enclave-cc",
    TeeType.SAMPLE: DEV_RUNTIME_CLASS,
}
NFD_LABELS: dict[TeeType, str] = {
    TeeType.SNP: "amd.feature.node.kubernetes.io/snp",
    TeeType.TDX: "intel.feature.node.kubernetes.io/tdx",
    TeeType.SGX: "intel.feature.node.kubernetes.io/sgx",
}
KINDS = ("Pod", "Deployment")
WORKLOAD_LABEL = "ccpipe.dev/workload-id"
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IMAGE_NAME_RE = re.compile(r"[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+")


def runtime_class(tee: TeeType, emulated: bool) -> str:
    """The CoCo runtime class for a TEE (the development one when it is emulated)."""
    return DEV_RUNTIME_CLASS if emulated else RUNTIME_CLASSES[tee]


def node_selector(tee: TeeType, emulated: bool) -> dict[str, str]:
    """NFD labels a host must carry; none for an emulated or sample TEE (any host will do)."""
    if emulated or tee not in NFD_LABELS:
        return {}
    return {NFD_LABELS[tee]: "true"}


def encode_initdata(text: str) -> str:
    """The annotation value: base64 of the gzip'd TOML (mtime 0, so the same text gives the same value)."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), mtime=0)).decode("ascii")


def decode_initdata(value: str) -> str:
    """The TOML text of an annotation value; raises :class:`InvalidInput` if it is not base64 of gzip."""
    try:
        return gzip.decompress(base64.b64decode(value, validate=True)).decode("utf-8")
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInput(f"initdata annotation is not base64 of gzip'd UTF-8: {exc}",
                           code="deploy.k8s.initdata") from exc


@dataclass(frozen=True)
class WorkloadManifest:
    """What a manifest is made from."""

    name: str
    """Workload name (DNS label): the object and container name."""
    workload_id: str
    image: str
    """``HOST[:PORT]/REPO@sha256:<hex>`` (by digest)."""
    tee: TeeType
    emulated: bool
    initdata: str
    """The initdata TOML text."""
    kind: str = "Pod"
    replicas: int = 1
    namespace: str | None = None


def _check(m: WorkloadManifest) -> None:
    if m.kind not in KINDS:
        raise InvalidInput(f"kind {m.kind!r} is not one of {', '.join(KINDS)}", code="deploy.k8s.kind")
    if m.replicas < 1:
        raise InvalidInput(f"replicas must be at least 1 (got {m.replicas})", code="deploy.k8s.replicas")
    if m.kind == "Pod" and m.replicas != 1:
        raise InvalidInput("a Pod has one replica", hint="use --kind Deployment for more", code="deploy.k8s.replicas")
    if m.namespace is not None and not _DNS_LABEL_RE.match(m.namespace):
        raise InvalidInput(f"namespace {m.namespace!r} is not a DNS label", code="deploy.k8s.namespace")
    name, _, digest = m.image.rpartition("@")
    if not (_IMAGE_NAME_RE.fullmatch(name) and is_digest(digest, SHA256_ONLY)):
        raise InvalidInput(f"image {m.image!r} is not HOST/REPO@sha256:<64 hex>", code="deploy.k8s.image")


def pod_spec(m: WorkloadManifest) -> dict[str, Any]:
    """The pod spec shared by both kinds."""
    spec: dict[str, Any] = {
        "runtimeClassName": runtime_class(m.tee, m.emulated),
        "containers": [{"name": m.name, "image": m.image, "imagePullPolicy": "Always"}],
    }
    selector = node_selector(m.tee, m.emulated)
    if selector:
        spec["nodeSelector"] = selector
    return spec


def _metadata(m: WorkloadManifest, *, named: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "labels": {"app.kubernetes.io/name": m.name, "app.kubernetes.io/managed-by": "ccpipe",
                   WORKLOAD_LABEL: m.workload_id},
    }
    if named:
        meta["name"] = m.name
        if m.namespace:
            meta["namespace"] = m.namespace
    if runtime_class(m.tee, m.emulated).startswith("kata-"):
        meta["annotations"] = {INITDATA_ANNOTATION: encode_initdata(m.initdata)}
    return meta


def workload_manifest(m: WorkloadManifest) -> dict[str, Any]:
    """The Pod or Deployment for ``m``; raises :class:`InvalidInput` for a bad kind, count or image."""
    _check(m)
    if m.kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(m, named=True), "spec": pod_spec(m)}
    match = {"app.kubernetes.io/name": m.name, WORKLOAD_LABEL: m.workload_id}
    template_spec = pod_spec(m)
    template_spec["topologySpreadConstraints"] = [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": match},
    }]
    deployment_meta = _metadata(m, named=True)
    deployment_meta.pop("annotations", None)  # the initdata belongs on the pods
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": deployment_meta,
        "spec": {
            "replicas": m.replicas,
            "selector": {"matchLabels": match},
            "template": {"metadata": _metadata(m, named=False), "spec": template_spec},
        },
    }
