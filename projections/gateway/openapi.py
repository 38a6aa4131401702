"""The gateway's OpenAPI document, shaped so that a client generated from it works.

FastAPI documents its own validation error (`HTTPValidationError`), which the gateway never
sends, and leaves error answers described only in words. Generators such as
`openapi-python-client` name a model by its schema's title and drop what they cannot name,
so here every error answer gets the one error body the gateway does send (`ErrorBody`), every
route but the ops probes gets the bearer scheme and its 401/403, an operation is named by its
route function (`submit_task`, not `submit_task_v1_tasks_post`), and each schema keeps the
one unique name of its model.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from projections.gateway.errors import ErrorBody

UNAUTHENTICATED = frozenset({"/healthz", "/readyz", "/metrics"})
ERROR_REF = "#/components/schemas/ErrorBody"
BEARER = {"type": "http", "scheme": "bearer", "description": "a token from TASKFOLD_TOKENS(_FILE)"}
AUTH_ERRORS = {"401": "no bearer token, or not a valid one (unauthenticated)",
               "403": "the token lacks the role this route needs (forbidden)"}


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its function's name (`submit_task`), which a generated client names its call by."""
    return route.name


def install(app: FastAPI) -> None:
    """Serve `document(app)` as the app's OpenAPI document (built once, on first use)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of `app`: bearer auth, the gateway's error body on every error answer."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {"bearer": BEARER}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            operation["security"] = [] if path in UNAUTHENTICATED else [{"bearer": []}]
            if path not in UNAUTHENTICATED:
                for status, description in AUTH_ERRORS.items():
                    operation["responses"].setdefault(status, {"description": description})
    return _error_bodies(schema)


def _error_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """Put `ErrorBody` where FastAPI put its validation error, and on error answers documented without a body."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorBody"] = body
    text = json.dumps(schema).replace('"#/components/schemas/HTTPValidationError"', json.dumps(ERROR_REF))
    schema = json.loads(text)
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status[:1] in "45" and not response.get("content"):
                    response["content"] = {"application/json": {"schema": {"$ref": ERROR_REF}}}
    return schema
