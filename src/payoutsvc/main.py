"""The FastAPI application: lifespan (database, background loops), routers, error handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from payoutsvc import __version__
from payoutsvc.auth.dependencies import ApiKeyCache, require_scope
from payoutsvc.auth.router import router as integrations_router
from payoutsvc.background import BackgroundLoops
from payoutsvc.batches.router import BATCHES_PATH
from payoutsvc.batches.router import router as batches_router
from payoutsvc.batches.schemas import MAX_BATCH_BYTES, BatchCreate
from payoutsvc.bootstrap import bootstrap
from payoutsvc.config import Settings, get_settings
from payoutsvc.connectors.router import router as connectors_router
from payoutsvc.crypto import load_cipher
from payoutsvc.db.engine import Database
from payoutsvc.db.migrate import current_revisions, head_revisions, upgrade_to_head
from payoutsvc.executor.router import MAX_CALLBACK_BYTES, callbacks_router
from payoutsvc.executor.router import router as executor_router
from payoutsvc.gateways.registry import registry_for
from payoutsvc.gateways.router import router as gateways_router
from payoutsvc.heap import settle_startup_heap
from payoutsvc.http_errors import install_error_handlers
from payoutsvc.logging import configure_logging
from payoutsvc.middleware import (
    CALLBACK_PREFIX,
    BodyLimitMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
)
from payoutsvc.openapi_links import install_document_links
from payoutsvc.operators.router import router as operators_router
from payoutsvc.ops.audit_router import router as audit_router
from payoutsvc.ops.router import DOCS_ASSETS
from payoutsvc.ops.router import router as ops_router
from payoutsvc.payouts.router import router as payouts_router
from payoutsvc.policy.router import router as policy_router
from payoutsvc.policy.service import ensure_initial_policy
from payoutsvc.ratelimit import RateLimiter
from payoutsvc.recipients.router import router as recipients_router
from payoutsvc.reconciliation.router import router as reconciliation_router
from payoutsvc.review.router import router as review_router
from payoutsvc.runtime import Runtime
from payoutsvc.tracing import build_tracing, fastapi_telemetry
from payoutsvc.webhooks.router import router as webhooks_router
from payoutsvc.workers import start_background_work

log = structlog.get_logger(__name__)

DESCRIPTION = """
Ticket-linked payouts for helpdesks. A support agent working a ticket asks for a refund,
compensation, reimbursement or partner payment; the policy decides whether that person may
pay that much (per-role limits, approvals, four-eyes); the recipient account is validated;
the transfer runs through a bank/wallet gateway exactly once; the helpdesk hears the result
by signed webhook; every step leaves an audit trail.

**Auth:** `Authorization: Bearer <api key>` on every `/v1` call. **Errors:** RFC 9457
`application/problem+json` with a stable `code` and field-level `errors`.
**Money:** decimal strings in major units (`"12.50"`) with an ISO 4217 `currency`.
"""


async def _prepare_schema(db: Database, settings: Settings) -> set[str]:
    heads = head_revisions(settings.database_url)
    if settings.is_sqlite:
        # The embedded default migrates by itself; PostgreSQL deployments run
        # `payoutsvc migrate` once per release, before the new version starts.
        await asyncio.to_thread(upgrade_to_head, settings.database_url)
    return heads


def serving_app() -> FastAPI:
    """The app `payoutsvc serve` runs (uvicorn's factory): :func:`create_app` with the heap
    it built at startup frozen out of the garbage collector's sight, and young collections
    rarer (heap.py)."""
    return create_app(freeze_startup_heap=True)


def create_app(
    settings: Settings | None = None,
    *,
    run_worker: bool | None = None,
    freeze_startup_heap: bool = False,
) -> FastAPI:
    settings = settings or get_settings()
    worker_enabled = settings.run_worker if run_worker is None else run_worker
    tracing = build_tracing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        db = Database.connect(settings.database_url, pool_size=settings.db_pool_size)
        if tracing is not None:
            tracing.instrument(db)
        loops = BackgroundLoops()
        runtime: Runtime | None = None
        try:
            app.state.schema_heads = await _prepare_schema(db, settings)
            runtime = Runtime(
                settings=settings, db=db, cipher=load_cipher(settings), tracing=tracing
            )
            app.state.runtime = runtime
            if await current_revisions(db.write_engine) == app.state.schema_heads:
                await bootstrap(db, settings)
                # Policy version 1 (PAYOUTSVC_POLICY_FILE or built-in); a bad file stops here.
                await ensure_initial_policy(db, settings)
            else:
                log.warning("startup.schema_behind", hint="run `payoutsvc migrate`")
            app.state.refresh_gauges = start_background_work(runtime, loops, worker_enabled)
            if freeze_startup_heap:
                settle_startup_heap()
            log.info("startup.ready", database=db.dialect, worker=worker_enabled)
            yield
        finally:
            await loops.stop()
            app.state.rate_limiter.close()
            if runtime is not None:  # adapters built for callbacks hold HTTP connections
                await registry_for(runtime).aclose()
            await db.dispose()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="payoutsvc",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        telemetry=fastapi_telemetry(tracing),
    )
    app.state.settings = settings
    app.state.api_key_cache = ApiKeyCache(ttl_seconds=settings.api_key_cache_seconds)
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    # Added first, so they run inside the request context: their 413s and 429s carry
    # X-Request-Id. The body limit comes before the rate limit's budget checks.
    app.add_middleware(RateLimitMiddleware, limiter=app.state.rate_limiter)
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        route_limits={CALLBACK_PREFIX: MAX_CALLBACK_BYTES, BATCHES_PATH: MAX_BATCH_BYTES},
    )
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app, schemas=[BatchCreate])
    install_document_links(app)
    _add_routes(app)
    app.state.tracing = tracing
    return app


def _add_routes(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    for router in (
        payouts_router,
        batches_router,
        executor_router,
        callbacks_router,
        gateways_router,
        policy_router,
        recipients_router,
        webhooks_router,
        connectors_router,
        operators_router,
        integrations_router,
        audit_router,
        reconciliation_router,
        ops_router,
        review_router,
    ):
        # Operators are admin-only; the scope is attached here, not in operators/router.py,
        # because the auth package depends on operators (operator-bound keys), not back.
        admin_only = [Depends(require_scope("admin"))] if router is operators_router else []
        app.include_router(router, dependencies=admin_only)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")
