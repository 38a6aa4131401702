"""The gateway's OpenAPI document names every schema once, by its domain name, so a generated
client keeps every model: two schemas with one title make openapi-python-client drop both the
second model and every response that refers to it."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from projections.gateway.app import create_app
from projections.gateway.auth import Auth
from projections.gateway.deps import Runtime
from projections.gateway.openapi import UNAUTHENTICATED


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    runtime = Runtime(live=None, log=None, auth=Auth.disabled())  # type: ignore[arg-type]
    return create_app(runtime=runtime).openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_no_two_schemas_share_a_title_and_none_is_named_by_module_path(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    titles = Counter(schema.get("title", name) for name, schema in schemas.items())
    assert [t for t, n in titles.items() if n > 1] == []
    module_paths = [name for name in schemas if "__" in name or "." in name]
    assert module_paths == []
    assert {name for name, schema in schemas.items() if schema.get("title", name) != name} == set()
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", name) for name in schemas), sorted(schemas)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs and refs <= set(document["components"]["schemas"])
    assert "HTTPValidationError" not in document["components"]["schemas"]  # the gateway never sends it


def test_every_error_answer_has_the_error_body(document: dict[str, Any]) -> None:
    missing = []
    for path, method, op in _operations(document):
        for status, response in op["responses"].items():
            schema = (response.get("content") or {}).get("application/json", {}).get("schema", {})
            if status[0] in "45" and schema.get("$ref") != "#/components/schemas/ErrorBody":
                missing.append(f"{method.upper()} {path} {status}")
    assert missing == []


def test_secured_operations_document_401_and_403(document: dict[str, Any]) -> None:
    for path, method, op in _operations(document):
        if path in UNAUTHENTICATED:
            assert op["security"] == []
        else:
            assert op["security"] == [{"bearer": []}] and {"401", "403"} <= set(op["responses"]), (method, path)


def test_operation_ids_are_unique_route_names(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids))
    assert {"submit_task", "get_task", "list_tasks", "task_history"} <= set(ids)
