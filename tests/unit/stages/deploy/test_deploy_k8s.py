"""Kubernetes output: CoCo runtime classes, NFD selectors, the initdata annotation, schema validity."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from ccpipe.evidence.initdata import initdata_digest, make_initdata, parse_initdata
from ccpipe.schemas.envelope import Event, Source
from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.events import EventType, Pushed, Scheduled, Signed, Submitted
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import WorkloadSpec
from ccpipe.stages.deploy.k8s import (
    INITDATA_ANNOTATION,
    WorkloadManifest,
    decode_initdata,
    encode_initdata,
    workload_manifest,
)
from ccpipe.stages.deploy.k8s_trail import DEFAULT_IMAGE_POLICY, manifest_from_events

K8S_VERSION = "1.37.0"
DIGEST = "sha256:" + "12" * 32
IMAGE = f"registry.example:5000/ccpipe/hello@{DIGEST}"
INITDATA = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = "x"\n'


def valid(doc: dict[str, Any]) -> None:
    """Validate against the Kubernetes OpenAPI-derived JSON schema (strict: unknown fields refused)."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def make(tee: TeeType, emulated: bool = False, kind: str = "Pod", replicas: int = 1) -> dict[str, Any]:
    return workload_manifest(WorkloadManifest(
        name="hello", workload_id="hello-0123456789", image=IMAGE, tee=tee, emulated=emulated,
        initdata=INITDATA, kind=kind, replicas=replicas))


@pytest.mark.parametrize(
    ("tee", "emulated", "runtime", "selector"),
    [
        (TeeType.SNP, False, "kata-qemu-snp", {"amd.feature.node.kubernetes.io/snp": "true"}),
        (TeeType.TDX, False, "kata-qemu-tdx", {"intel.feature.node.kubernetes.io/tdx": "true"}),
        (TeeType.SGX, False, "enclave-cc", {"intel.feature.node.kubernetes.io/sgx": "true"}),
        (TeeType.SNP, True, "kata-qemu-coco-dev", None),
        (TeeType.SAMPLE, False, "kata-qemu-coco-dev", None),
    ],
)
def test_pod_runtime_class_and_node_selector_follow_the_tee(
    tee: TeeType, emulated: bool, runtime: str, selector: dict[str, str] | None
) -> None:
    pod = make(tee, emulated)
    valid(pod)
    assert pod["spec"]["runtimeClassName"] == runtime
    assert pod["spec"].get("nodeSelector") == selector
    assert pod["spec"]["containers"][0]["image"] == IMAGE
    if runtime.startswith("kata-"):
        assert decode_initdata(pod["metadata"]["annotations"][INITDATA_ANNOTATION]) == INITDATA
    else:  # enclave-cc does not read Kata's annotation
        assert "annotations" not in pod["metadata"]


def test_deployment_spreads_replicas_and_carries_initdata_on_its_pods() -> None:
    dep = make(TeeType.TDX, kind="Deployment", replicas=3)
    valid(dep)
    assert dep["spec"]["replicas"] == 3
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"].items() >= dep["spec"]["selector"]["matchLabels"].items()
    assert INITDATA_ANNOTATION in template["metadata"]["annotations"]
    assert template["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_schema_validation_catches_a_broken_manifest() -> None:
    # the validator is not a rubber stamp: the same manifest with a wrong type or field is refused
    pod = make(TeeType.SNP)
    bad_type = copy.deepcopy(pod)
    bad_type["spec"]["runtimeClassName"] = 5
    bad_field = copy.deepcopy(pod)
    bad_field["spec"]["containers"][0]["imageDigest"] = DIGEST
    for doc in (bad_type, bad_field):
        with pytest.raises(kubernetes_validate.ValidationError):
            valid(doc)


def test_initdata_annotation_is_deterministic_and_checked() -> None:
    assert encode_initdata(INITDATA) == encode_initdata(INITDATA)
    with pytest.raises(InvalidInput, match="base64 of gzip"):
        decode_initdata("bm90IGd6aXA=")  # base64 of "not gzip"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"kind": "Job"}, "kind 'Job'"),
        ({"replicas": 2}, "a Pod has one replica"),
        ({"kind": "Deployment", "replicas": 0}, "at least 1"),
        ({"image": "registry.example/ccpipe/hello:latest"}, "sha256"),
        ({"namespace": "Bad_NS"}, "not a DNS label"),
    ],
)
def test_bad_options_are_refused(change: dict[str, Any], match: str) -> None:
    base = {"name": "hello", "workload_id": "w", "image": IMAGE, "tee": TeeType.SNP, "emulated": False,
            "initdata": INITDATA}
    with pytest.raises(InvalidInput, match=match):
        workload_manifest(WorkloadManifest(**{**base, **change}))


# --- from the trail ----------------------------------------------------------------------------


def ev(etype: EventType, payload: Any) -> Event:
    return Event(type=etype, workload_id="hello-1", source=Source(component="t"), payload=payload)


def trail(*, scheduled: Scheduled | None, initdata_digest_hex: str = "ab" * 32,
          initdata: str | None = None) -> list[Event]:
    spec = WorkloadSpec.model_validate({"workload": {"name": "hello"}, "tee": {"types": ["snp", "tdx"]}})
    events = [
        ev(EventType.SUBMITTED, Submitted(repo="/r", ref="refs/heads/main", old_commit="0" * 40,
                                          new_commit="1" * 40, pusher="t", spec=spec)),
        ev(EventType.SIGNED, Signed(image_digest=DIGEST, source_image_digest=DIGEST, layout="/x",
                                    key_resource="kbs:///default/image-key/t", signature_digest=DIGEST,
                                    initdata_digest=initdata_digest_hex, initdata=initdata)),
        ev(EventType.PUSHED, Pushed(registry="127.0.0.1:5000", repository="ccpipe/hello", image_digest=DIGEST,
                                    reference=f"docker://127.0.0.1:5000/ccpipe/hello@{DIGEST}")),
    ]
    if scheduled is not None:
        events.append(ev(EventType.SCHEDULED, scheduled))
    return events


def test_manifest_from_the_trail_uses_the_scheduled_tee_and_the_pushed_digest() -> None:
    events = trail(scheduled=Scheduled(node_id="n1", tee=TeeType.TDX, backend="configfs-tsm"))
    got = manifest_from_events("hello-1", events, kbs_url="https://kbs.example:8080", registry="reg.example",
                               namespace="coco")
    valid(got.manifest)
    assert got.manifest["metadata"]["namespace"] == "coco"
    spec = got.manifest["spec"]
    assert spec["runtimeClassName"] == "kata-qemu-tdx"
    assert spec["containers"][0]["image"] == f"reg.example/ccpipe/hello@{DIGEST}"
    doc = parse_initdata(decode_initdata(got.manifest["metadata"]["annotations"][INITDATA_ANNOTATION]))
    assert 'url = "https://kbs.example:8080"' in doc["data"]["cdh.toml"]
    assert DIGEST in doc["data"]["ccpipe.toml"]
    # the trail's initdata digest was another one: the user is told, not silently given a mismatch
    assert any("digest the sign stage registered" in w for w in got.warnings)


def test_matching_initdata_digest_gives_no_warning_and_emulated_node_gets_the_dev_runtime() -> None:
    first = manifest_from_events("hello-1", trail(scheduled=None), kbs_url="http://kbs:8080")
    digest = initdata_digest(first.initdata).hex()
    events = trail(scheduled=Scheduled(node_id="n", tee=TeeType.SNP, backend="emulated"), initdata_digest_hex=digest)
    got = manifest_from_events("hello-1", events, kbs_url="http://kbs:8080", kind="Deployment", replicas=2)
    valid(got.manifest)
    assert got.warnings == ("the workload does not allow emulated TEEs; its key will not be released there",)
    assert got.manifest["spec"]["template"]["spec"]["runtimeClassName"] == "kata-qemu-coco-dev"


def test_the_registered_initdata_is_used_as_is_unless_the_cluster_names_things_differently() -> None:
    registered = make_initdata("http://kbs.internal:8080", DIGEST, DEFAULT_IMAGE_POLICY)
    events = trail(scheduled=None, initdata_digest_hex=initdata_digest(registered).hex(), initdata=registered)
    got = manifest_from_events("hello-1", events, kbs_url="http://elsewhere:1")
    # exactly the document the KBS checks: its digest matches what the sign stage registered
    assert got.initdata == registered
    assert decode_initdata(got.manifest["metadata"]["annotations"][INITDATA_ANNOTATION]) == registered
    assert not any("digest the sign stage registered" in w for w in got.warnings)
    # the cluster reaches the KBS under another name: a new document, and the user is told
    other = manifest_from_events("hello-1", events, kbs_url="https://kbs.cluster:8443", registered_initdata=False)
    assert other.initdata != registered
    assert any("digest the sign stage registered" in w for w in other.warnings)


def test_a_workload_that_was_not_pushed_has_no_manifest() -> None:
    events = [e for e in trail(scheduled=None) if e.type != EventType.PUSHED]
    with pytest.raises(InvalidInput, match="has not been pushed"):
        manifest_from_events("hello-1", events, kbs_url="http://kbs")
