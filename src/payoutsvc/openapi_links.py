"""What the OpenAPI document says beyond each route's own declaration: links from a created
resource to the operations that use its id, and headers that are required although their
handler reads them optionally (to answer its own problem code rather than a generic 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from payoutsvc.schemas_common import not_nullable

_OPERATION_METHODS = frozenset({"get", "put", "post", "patch", "delete"})

# Read as optional so that a missing one is 400 ``idempotency_key_missing`` (API.md), yet
# every operation that reads one refuses a request without it.
REQUIRED_HEADERS = frozenset({"Idempotency-Key"})


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in _OPERATION_METHODS
    ]


def document_required_headers(document: dict[str, Any]) -> dict[str, Any]:
    """Mark the :data:`REQUIRED_HEADERS` required wherever an operation reads them (in place)."""
    for _, _, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "header" and parameter["name"] in REQUIRED_HEADERS:
                parameter["required"] = True
                # FastAPI documents the optional ``str | None`` as "string or null"; a header
                # that is there is a string.
                not_nullable(parameter["schema"])
    return document


def document_links(document: dict[str, Any]) -> dict[str, Any]:
    """Give every ``201`` of a ``POST /collection`` a link to each operation under
    ``/collection/{id}`` whose only path parameter is the created object's ``id`` (in place):
    clients and stateful testers follow a created payout to its approve, cancel, release…"""
    operations = _operations(document)
    for create_path, method, create in operations:
        created = create.get("responses", {}).get("201")
        if method != "post" or created is None:
            continue
        links: dict[str, Any] = {}
        for path, _, operation in operations:
            if not path.startswith(create_path + "/{"):
                continue
            path_parameters = [
                p["name"] for p in operation.get("parameters", []) if p["in"] == "path"
            ]
            id_segment = path[len(create_path) + 1 :].split("/", 1)[0]
            if path_parameters != [id_segment.strip("{}")]:
                continue
            links[operation["operationId"]] = {
                "operationId": operation["operationId"],
                "parameters": {path_parameters[0]: "$response.body#/id"},
                "description": f"`{path_parameters[0]}` is the created object's `id`.",
            }
        if links:
            created["links"] = dict(sorted(links.items()))
    return document


def install_document_links(app: FastAPI) -> None:
    """Have ``app.openapi()`` add the links and required headers once, when it is built."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_links(document_required_headers(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
