"""The rules of ``ccpipe.toml`` as plain functions, and a spec checked by them without pydantic.

The models of :mod:`ccpipe.schemas.workload` call these rules in their validators, so there is
one definition of each. :func:`plain_spec` applies the same rules to a decoded ``ccpipe.toml``
and returns what ``WorkloadSpec.model_validate(data).model_dump(mode="json", by_alias=True,
exclude_none=True)`` returns, without importing pydantic: ``ccpipe submit``, which the git hook
runs on every push, must stay cheap. It only accepts what it is sure the model accepts; for
anything else it returns ``None`` and the caller validates with the model, whose error names
the field. ``tests/unit/schemas/test_spec_rules.py`` checks the two agree on generated specs.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""A workload name: one DNS label."""
SHA256_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
"""``digest_pattern(SHA256_ONLY)`` of :mod:`ccpipe.schemas.digest` (a test keeps them equal)."""
_SAFE_INT = 2**53 - 1


class TeeType(StrEnum):
    """Trusted execution environments a workload may run on."""

    SNP = "snp"
    TDX = "tdx"
    SGX = "sgx"
    SAMPLE = "sample"


UNVERIFIED_TEE_TYPES = frozenset({TeeType.SGX})
"""TEE types a workload may not ask for yet: no verifier checks their evidence."""


def copy_src_problem(v: str) -> str | None:
    """Why ``v`` cannot be a ``[[build.copy]]`` source, or None."""
    parts = v.replace("\\", "/").split("/")
    if v.startswith("/") or ".." in parts or not v.strip():
        return "must be a relative path inside the repository, without '..'"
    return None


def copy_dst_problem(v: str) -> str | None:
    """Why ``v`` cannot be a ``[[build.copy]]`` destination, or None."""
    if not v.startswith("/") or ".." in v.split("/"):
        return "must be an absolute path inside the image, without '..'"
    return None


def copy_mode_problem(v: str | None) -> str | None:
    """Why ``v`` cannot be a copy's ``mode``, or None."""
    if v is not None and not re.fullmatch(r"0?[0-7]{3,4}", v):
        return "must be octal permission bits such as '0755'"
    return None


def copy_owner_problem(v: str | None) -> str | None:
    """Why ``v`` cannot be a copy's ``owner``, or None."""
    if v is not None and not re.fullmatch(r"\d+:\d+", v):
        return "must be numeric 'uid:gid' such as '0:0'"
    return None


def base_problem(v: str) -> str | None:
    """Why ``v`` cannot be ``build.base``, or None."""
    if v == "scratch" or v.startswith("oci:"):
        return None
    if "@" in v and SHA256_DIGEST_RE.fullmatch(v.rsplit("@", 1)[1]) is not None:
        return None
    return "must be 'scratch', 'oci:PATH[:TAG]' or 'REGISTRY/REPO@sha256:<64 hex>'"


def tee_type_problem(i: int, item: object) -> str | None:
    """Why item ``i`` of ``tee.types`` cannot be asked for, or None."""
    known = {t.value for t in TeeType}
    if not isinstance(item, str) or item not in known:
        return f"item {i}: unknown TEE type {item!r}; known types: {', '.join(sorted(known))}"
    if item in UNVERIFIED_TEE_TYPES:
        supported = ", ".join(sorted(known - UNVERIFIED_TEE_TYPES))
        return (f"item {i}: {item!r} is not supported yet: ccpipe has no verifier for its evidence, so "
                f"no key could ever be released to it; use one of {supported}")
    return None


def name_problem(v: str) -> str | None:
    """Why ``v`` cannot be ``workload.name``, or None."""
    if not NAME_RE.match(v):
        return "must be lower-case letters, digits and '-', 1 to 63 characters, like 'hello'"
    return None


# What plain_spec accepts: exact types only, as the strict models do (a bool is not an int).
def _is_str(v: object) -> bool:
    return type(v) is str


def _str_list(v: object) -> bool:
    return type(v) is list and all(_is_str(x) for x in v)


def _str_dict(v: object) -> bool:
    return type(v) is dict and all(_is_str(k) and _is_str(x) for k, x in v.items())


def _table(data: dict[str, Any], key: str, fields: frozenset[str]) -> dict[str, Any] | None:
    """``data[key]`` when it is a table of known fields ({} when absent), else None."""
    value = data.get(key, {})
    return value if type(value) is dict and set(value) <= fields else None


def _copy_entry(entry: object) -> dict[str, str] | None:
    if type(entry) is not dict or not {"src", "dst"} <= set(entry) <= {"src", "dst", "mode", "owner"}:
        return None
    if not all(_is_str(v) for v in entry.values()):
        return None
    problems = (copy_src_problem(entry["src"]), copy_dst_problem(entry["dst"]),
                copy_mode_problem(entry.get("mode")), copy_owner_problem(entry.get("owner")))
    return None if any(problems) else dict(entry)


def _build(data: dict[str, Any]) -> dict[str, Any] | None:
    fields = frozenset({"base", "entrypoint", "cmd", "env", "workdir", "user", "labels", "copy"})
    build = _table(data, "build", fields)
    if build is None:
        return None
    out: dict[str, Any] = {"base": build.get("base", "scratch"), "entrypoint": build.get("entrypoint", []),
                           "cmd": build.get("cmd", []), "env": build.get("env", {}),
                           "workdir": build.get("workdir", "/"), "user": build.get("user", "0:0"),
                           "labels": build.get("labels", {})}
    if not (all(_is_str(out[k]) for k in ("base", "workdir", "user")) and _str_list(out["entrypoint"])
            and _str_list(out["cmd"]) and _str_dict(out["env"]) and _str_dict(out["labels"])):
        return None
    if base_problem(out["base"]) is not None:
        return None
    copies = build.get("copy", [])
    if type(copies) is not list:
        return None
    out["copy"] = [_copy_entry(entry) for entry in copies]
    return None if any(entry is None for entry in out["copy"]) else out


def _tee(data: dict[str, Any]) -> dict[str, Any] | None:
    tee = data.get("tee")
    if type(tee) is not dict or "types" not in tee or not set(tee) <= {"types", "allow_emulated", "min_tcb"}:
        return None
    types, emulated, min_tcb = tee["types"], tee.get("allow_emulated", False), tee.get("min_tcb", {})
    if type(types) is not list or not types or any(tee_type_problem(i, t) for i, t in enumerate(types)):
        return None
    if type(emulated) is not bool or type(min_tcb) is not dict:
        return None
    if not all(_is_str(k) and type(v) is int and -_SAFE_INT <= v <= _SAFE_INT for k, v in min_tcb.items()):
        return None
    return {"types": list(types), "allow_emulated": emulated, "min_tcb": dict(min_tcb)}


def plain_spec(data: object) -> dict[str, Any] | None:
    """The JSON form of the valid ``WorkloadSpec`` decoded from ``data``, or None when unsure.

    ``None`` does not mean the spec is invalid, only that the model has to decide (and name
    the problem).
    """
    if type(data) is not dict or not set(data) <= {"workload", "build", "tee", "release", "run"}:
        return None
    workload = data.get("workload")
    if type(workload) is not dict or set(workload) != {"name"} or not _is_str(workload["name"]):
        return None
    if name_problem(workload["name"]) is not None:
        return None
    release = _table(data, "release", frozenset({"policy"}))
    run = _table(data, "run", frozenset({"network"}))
    build, tee = _build(data), _tee(data)
    if release is None or run is None or build is None or tee is None:
        return None
    policy, network = release.get("policy", "default"), run.get("network", False)
    if not _is_str(policy) or type(network) is not bool:
        return None
    return {"workload": {"name": workload["name"]}, "build": build, "tee": tee,
            "release": {"policy": policy}, "run": {"network": network}}
