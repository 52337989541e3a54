"""Initdata: the TOML CoCo guests read, its digest, and its place in HOST_DATA / MRCONFIGID."""

from __future__ import annotations

import hashlib
import json
import tomllib

import pytest

from ccpipe.evidence.errors import InvalidInitdata
from ccpipe.evidence.initdata import (
    initdata_digest,
    make_initdata,
    parse_initdata,
    snp_host_data,
    tdx_mr_config_id,
)
from tests.unit.evidence.evidence_helpers import read_vector

DIGEST = "sha256:" + "ab" * 32
KBS = "http://127.0.0.1:8080"


def test_real_initdata_digest_is_sha256_of_the_whole_file() -> None:
    text = read_vector("trustee/initdata", "init-data-with-policy.toml").decode()
    assert initdata_digest(text).hex() == "0deccded0d87ec44702c7330fac3eb936b68dcca5c9f6b5df1fb3480c0b525ac"
    assert "policy.rego" in parse_initdata(text)["data"]


def test_make_initdata_names_kbs_image_and_policy_uri() -> None:
    text = make_initdata(KBS, DIGEST, "kbs:///default/security-policy/hello", image="reg/hello@" + DIGEST)
    doc = parse_initdata(text)
    assert (doc["version"], doc["algorithm"]) == ("0.1.0", "sha256")
    aa = tomllib.loads(doc["data"]["aa.toml"])
    cdh = tomllib.loads(doc["data"]["cdh.toml"])
    workload = tomllib.loads(doc["data"]["ccpipe.toml"])["workload"]
    assert aa["token_configs"]["kbs"]["url"] == KBS
    assert cdh["kbc"] == {"name": "cc_kbc", "url": KBS}
    assert cdh["image"]["image_security_policy_uri"] == "kbs:///default/security-policy/hello"
    assert workload == {"image_digest": DIGEST, "image": "reg/hello@" + DIGEST}


def test_inline_policy_and_certificate() -> None:
    policy = {"default": [{"type": "reject"}]}
    text = make_initdata(KBS, DIGEST, policy, kbs_cert_pem="-----BEGIN CERTIFICATE-----\nX\n")
    cdh = tomllib.loads(parse_initdata(text)["data"]["cdh.toml"])
    assert json.loads(cdh["image"]["image_security_policy"]) == policy
    assert cdh["kbc"]["kbs_cert"].startswith("-----BEGIN")


def test_digest_binds_every_input_and_is_deterministic() -> None:
    base = make_initdata(KBS, DIGEST, "kbs:///default/security-policy/a")
    assert make_initdata(KBS, DIGEST, "kbs:///default/security-policy/a") == base
    assert initdata_digest(base) == hashlib.sha256(base.encode()).digest()
    others = [
        make_initdata("http://127.0.0.1:9", DIGEST, "kbs:///default/security-policy/a"),
        make_initdata(KBS, "sha256:" + "cd" * 32, "kbs:///default/security-policy/a"),
        make_initdata(KBS, DIGEST, "kbs:///default/security-policy/b"),
    ]
    assert len({initdata_digest(t) for t in [base, *others]}) == 4


def test_sha384_algorithm_is_honoured() -> None:
    text = make_initdata(KBS, DIGEST, "kbs:///p", algorithm="sha384")
    assert initdata_digest(text) == hashlib.sha384(text.encode()).digest()


def test_binding_fields_pad_the_digest() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert snp_host_data(digest) == digest
    assert tdx_mr_config_id(digest) == digest + bytes(16)
    assert snp_host_data(hashlib.sha384(b"x").digest()) == hashlib.sha384(b"x").digest()[:32]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_digest": "sha256:XYZ"}, "image digest"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"signature_policy": "not json nor uri"}, "neither"),
        ({"extra_data": {"cdh.toml": "x"}}, "written by ccpipe"),
    ],
)
def test_make_initdata_refuses_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"kbs_url": KBS, "image_digest": DIGEST, "signature_policy": "kbs:///p", **kwargs}
    with pytest.raises(InvalidInitdata, match=message):
        make_initdata(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = ", "not valid TOML"),
        ('algorithm = "sha256"\n[data]\n', "'version'"),
        ('version = "0.1.0"\n[data]\n', "'algorithm'"),
        ('version = "0.1.0"\nalgorithm = "sha-384"\n[data]\n', "sha-384"),
        ('version = "0.1.0"\nalgorithm = "sha256"\n[data]\nx = 1\n', "strings"),
    ],
)
def test_bad_initdata_documents(text: str, message: str) -> None:
    with pytest.raises(InvalidInitdata, match=message):
        initdata_digest(text)


def test_initdata_nested_beyond_the_recursion_limit_is_invalid() -> None:
    # Found by tests/fuzz through the KBS's /attest init-data: tomllib's RecursionError escaped.
    text = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\na = ' + "[" * 5000 + "]" * 5000
    with pytest.raises(InvalidInitdata, match="too deeply"):
        parse_initdata(text)


def test_initdata_with_a_lone_surrogate_is_invalid() -> None:
    # Found by tests/fuzz through /attest: JSON "\ud800" in init-data made the digest raise UnicodeEncodeError.
    with pytest.raises(InvalidInitdata, match="lone surrogate"):
        initdata_digest('version = "0.1.0"\nalgorithm = "sha384"\n[data]\na = "\ud800"\n')
