"""``ccpipe.toml`` parsing: every problem names its field."""

from __future__ import annotations

import pytest

from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import parse_workload_spec

GOOD = """
[workload]
name = "hello"
[build]
entrypoint = ["/app/hello.sh"]
env = { GREETING = "hi" }
[[build.copy]]
src = "app/"
dst = "/app/"
mode = "0755"
[tee]
types = ["snp", "tdx"]
allow_emulated = true
[release]
policy = "default"
"""


def test_the_documented_example_parses() -> None:
    spec = parse_workload_spec(GOOD)
    assert spec.workload.name == "hello"
    assert spec.tee.types == [TeeType.SNP, TeeType.TDX] and spec.tee.allow_emulated
    assert spec.build.copy_[0].mode == "0755" and spec.build.base == "scratch"


@pytest.mark.parametrize(
    ("old", "new", "field", "code"),
    [
        ('name = "hello"', "", "workload.name: required field is missing", "spec.field.missing"),
        ("allow_emulated = true", 'allow_emulated = "yes"', "tee.allow_emulated", "spec.field.invalid"),
        ('types = ["snp", "tdx"]', 'types = ["snp", "tpm"]', "tee.types: item 1: unknown TEE type 'tpm'",
         "spec.field.invalid"),
        ('mode = "0755"', 'mode = "rwx"', r"build.copy\[0\].mode", "spec.field.invalid"),
        ('src = "app/"', 'src = "../etc/"', r"build.copy\[0\].src", "spec.field.invalid"),
        ('dst = "/app/"', 'dst = "app/"', r"build.copy\[0\].dst", "spec.field.invalid"),
        ('name = "hello"', 'name = "Hello World"', "workload.name", "spec.field.invalid"),
        ('policy = "default"', 'policy = "default"\nsurprise = 1', "release.surprise: unknown field",
         "spec.field.invalid"),
        ('types = ["snp", "tdx"]', "types = []", "tee.types", "spec.field.invalid"),
    ],
    ids=["missing-name", "wrong-type", "unknown-tee", "bad-mode", "src-escapes", "dst-relative", "bad-name",
         "unknown-key", "no-tee"],
)
def test_errors_name_the_field(old: str, new: str, field: str, code: str) -> None:
    with pytest.raises(InvalidInput, match=field) as err:
        parse_workload_spec(GOOD.replace(old, new, 1), source="ccpipe.toml")
    assert err.value.code == code
    assert err.value.message.startswith("ccpipe.toml: ")


def test_toml_syntax_error() -> None:
    with pytest.raises(InvalidInput, match="not valid TOML") as err:
        parse_workload_spec("[workload\nname=1")
    assert err.value.code == "spec.toml.syntax"


def test_registry_base_needs_a_digest() -> None:
    with pytest.raises(InvalidInput, match="build.base"):
        parse_workload_spec(GOOD.replace("[build]", '[build]\nbase = "registry.example/busybox:latest"'))
    spec = parse_workload_spec(GOOD.replace("[build]", f'[build]\nbase = "r.example/b@sha256:{"a" * 64}"'))
    assert spec.build.base.endswith("a" * 64)


def test_tee_type_that_is_not_a_string_is_named() -> None:
    # Found by tests/fuzz: an array as a TEE type raised TypeError (unhashable) in the validator.
    with pytest.raises(InvalidInput, match=r"tee.types: item 0: unknown TEE type \[\]") as err:
        parse_workload_spec(GOOD.replace('types = ["snp", "tdx"]', "types = [[]]"))
    assert err.value.code == "spec.field.invalid"
