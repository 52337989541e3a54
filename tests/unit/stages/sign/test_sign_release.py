"""Reference values, initdata and the guest's signature policy, checked against their consumers' parsers."""

from __future__ import annotations

import hashlib
import json
import tomllib

import pytest

from ccpipe.evidence.errors import InvalidInitdata
from ccpipe.evidence.initdata import initdata_digest, parse_initdata
from ccpipe.evidence.measurement import launch_measurement_for, tdx_measurements_for
from ccpipe.stages.attest.rvps import MemoryReferenceValueStore, parse_message
from ccpipe.stages.sign.release import (
    launch_reference_values,
    reference_values,
    rvps_message,
    signature_policy,
    workload_initdata,
)

DIGEST = "sha256:" + "ab" * 32
PUBKEY = "kbs:///ccpipe/wl-1/cosign-pubkey"


def test_rvps_message_is_read_by_the_attestation_service_scoped_to_the_workload() -> None:
    values = reference_values(DIGEST, "cd" * 32, {"snp_launch_measurement": ["ef" * 48]})
    parsed = parse_message(rvps_message("wl-1", values))
    assert parsed == {
        ("wl-1", "image_digest"): [DIGEST],
        ("wl-1", "init_data_digest"): ["cd" * 32],
        ("wl-1", "snp_launch_measurement"): ["ef" * 48],
    }
    store = MemoryReferenceValueStore()
    store.register(rvps_message("wl-1", values))
    assert store.values_for("wl-1")["image_digest"] == [DIGEST]
    assert "image_digest" not in store.values_for("wl-2")  # another workload sees none of them


def test_launch_values_are_the_runner_measurements() -> None:
    values = launch_reference_values({"cpus": 1})
    assert values["snp_launch_measurement"] == [launch_measurement_for({"cpus": 1}).hex()]
    tdx = tdx_measurements_for({"cpus": 1})
    assert values["mr_td"] == [tdx.mr_td.hex()] and values["rtmr_2"] == [tdx.rtmrs[2].hex()]
    assert launch_reference_values({"cpus": 2})["snp_launch_measurement"] != values["snp_launch_measurement"]


def test_initdata_binds_image_kbs_and_policy() -> None:
    text, digest_hex = workload_initdata("http://127.0.0.1:8080", DIGEST, "reg/ccpipe/hello", PUBKEY)
    assert digest_hex == initdata_digest(text).hex() == hashlib.sha256(text.encode()).hexdigest()
    data = parse_initdata(text)["data"]
    workload = tomllib.loads(data["ccpipe.toml"])["workload"]
    assert workload == {"image_digest": DIGEST, "image": f"reg/ccpipe/hello@{DIGEST}"}
    policy = json.loads(tomllib.loads(data["cdh.toml"])["image"]["image_security_policy"])
    assert policy == signature_policy("reg/ccpipe/hello", PUBKEY)
    assert policy["default"] == [{"type": "reject"}]  # anything else is refused
    assert policy["transports"]["docker"]["reg/ccpipe/hello"][0]["keyPath"] == PUBKEY
    _, other_hex = workload_initdata("http://127.0.0.1:8080", "sha256:" + "00" * 32, "reg/ccpipe/hello", PUBKEY)
    assert other_hex != digest_hex


def test_initdata_refuses_a_malformed_digest() -> None:
    with pytest.raises(InvalidInitdata):
        workload_initdata("http://kbs", "sha256:XYZ", "reg/x", PUBKEY)
