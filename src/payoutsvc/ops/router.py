"""Health, readiness, metrics and offline API docs; none of these need a key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from payoutsvc.db.migrate import current_revisions
from payoutsvc.deps import RuntimeDep

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


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Prometheus text format. Needs no key.",
    response_class=Response,
)
async def metrics(request: Request) -> Response:
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
