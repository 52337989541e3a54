"""The OpenAPI document: valid OpenAPI 3.1, schemas from the response models, patterns from params."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from ccpipe.pipeline.audit.http import models, params
from ccpipe.pipeline.audit.http.errors import BadRequest
from ccpipe.pipeline.audit.http.openapi import openapi_document


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_response_model_is_a_component_and_every_reference_resolves() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    assert {m.__name__ for m in models.RESPONSE_MODELS} <= set(schemas)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)


def test_every_error_status_is_documented_with_the_error_body() -> None:
    for path, item in openapi_document()["paths"].items():
        if path == "/readyz":  # not ready is an answer, not an error: the same status body, with its reason
            assert item["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ServiceStatus"}
            continue
        for status, response in item["get"]["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, path


def _documented_pattern(path: str, name: str) -> str:
    item = openapi_document()["paths"][path]["get"]
    return str(next(p for p in item["parameters"] if p["name"] == name)["schema"]["pattern"])


@pytest.mark.parametrize(("path", "name", "check", "good", "bad"), [
    ("/api/v1/images/{digest}/runs", "digest", params.digest, "sha256:" + "a" * 64, "sha256:" + "a" * 63),
    ("/api/v1/workloads/{workload_id}/journey", "workload_id", params.workload_id, "hello-1", "Hello"),
    ("/api/v1/events/{event_id}", "event_id", params.event_id, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "a/b"),
    ("/api/v1/keys/{resource}/recipients", "resource", params.key_resource, "r/t/tag", "r/t"),
])
def test_documented_patterns_agree_with_the_checks(path: str, name: str, check: Any, good: str, bad: str) -> None:
    pattern = re.compile(_documented_pattern(path, name))
    assert pattern.search(good) and check(good) == good
    assert not pattern.search(bad)
    with pytest.raises(BadRequest):
        check(bad)
