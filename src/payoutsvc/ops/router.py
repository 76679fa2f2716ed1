"""Health, readiness, metrics and offline API docs; none of these need a key."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from sqlalchemy import text

from payoutsvc.db.migrate import current_revisions
from payoutsvc.deps import RuntimeDep
from payoutsvc.errors import Unauthorized
from payoutsvc.schemas_common import problem_responses

router = APIRouter(tags=["Operations"])
DOCS_ASSETS = "/docs/assets"


@router.get(
    "/healthz",
    summary="Liveness",
    description="200 while the process runs. Needs no key.",
    response_model=dict[str, str],
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    description="200 when the database answers and its schema is at the migrations' head; "
    "503 otherwise (run `payoutsvc migrate`). Needs no key.",
    response_model=dict[str, Any],
    responses={503: {"description": "Not ready", "content": {"application/json": {}}}},
)
async def readyz(runtime: RuntimeDep, request: Request) -> JSONResponse:
    expected: set[str] = request.app.state.schema_heads
    try:
        async with runtime.db.read_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        current = await current_revisions(runtime.db.read_engine)
    except Exception as exc:  # noqa: BLE001  (any failure means not ready)
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "error": type(exc).__name__},
            status_code=503,
        )
    if current != expected:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "ok",
                "schema": "behind",
                "current": sorted(current),
                "expected": sorted(expected),
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "ok", "schema": "current"})


def _check_metrics_token(request: Request, token: SecretStr | None) -> None:
    if token is None:
        return
    scheme, _, offered = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    # compare_digest: the time taken must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), expected):
        raise Unauthorized(
            "Send PAYOUTSVC_METRICS_TOKEN as `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": "Bearer"},
            title="Missing or invalid metrics token",
        )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Prometheus text format. Needs no API key; when `PAYOUTSVC_METRICS_TOKEN` is "
    "set, needs `Authorization: Bearer <that token>` (401 otherwise). Queue gauges are read "
    "from the database at most every `PAYOUTSVC_METRICS_REFRESH_SECONDS` (default 5).",
    response_class=Response,
    responses=problem_responses(Unauthorized),
)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    _check_metrics_token(request, runtime.settings.metrics_token)
    refresh = getattr(request.app.state, "refresh_gauges", None)
    if refresh is not None:
        await refresh()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=str(request.app.openapi_url),
        title="payoutsvc API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
    )
