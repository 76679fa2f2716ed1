"""OpenTelemetry tracing (PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT): one approved payout gives
one connected trace, request → executor → gateway → webhook, whose webhook request carries
``traceparent``; log lines carry the trace id; unset, nothing of it is loaded."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog._config import BoundLoggerLazyProxy

from payoutsvc import tracing
from payoutsvc.main import create_app
from tests.conftest import ADMIN_KEY, make_settings
from tests.helpers import create_operator, eventually, operator_key, payout_body
from tests.webhooks.conftest import create_endpoint
from tests.webhooks.receiver import Receiver


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "span_exporter", lambda _endpoint: memory)
    return memory


@pytest.fixture
def fresh_module_loggers() -> None:
    """structlog fixes each module logger's processors on its first line
    (``cache_logger_on_first_use``). A process configures logging once, before any line;
    this test process did so for earlier tests without tracing, so forget those choices."""
    for module in list(sys.modules.values()):
        logger = getattr(module, "log", None)
        if isinstance(logger, BoundLoggerLazyProxy):
            logger.__dict__.pop("bind", None)


@pytest.fixture
async def traced_app(
    database_url: str, exporter: InMemorySpanExporter, fresh_module_loggers: None
) -> AsyncIterator[Any]:
    settings = make_settings(
        database_url,
        run_worker=True,
        otel_exporter_otlp_endpoint="http://127.0.0.1:4318",
        log_format="json",
        log_level="INFO",
        webhook_retry_schedule=(0.2, 0.2),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def receiver() -> Any:
    server = Receiver()
    server.start()
    yield server
    server.stop()


def by_id(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def ancestors(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        chain.append(span)
    return chain


async def test_a_payout_is_one_trace_from_request_to_webhook(
    traced_app: Any,
    exporter: InMemorySpanExporter,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=traced_app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as client:
        await create_endpoint(client, receiver.url("/hooks"), ["payout.succeeded"])
        await create_operator(client, "agent-17", "agent")
        await create_operator(client, "sup-2", "supervisor")
        agent = {"Authorization": f"Bearer {await operator_key(client, 'agent-17')}"}
        supervisor = {"Authorization": f"Bearer {await operator_key(client, 'sup-2')}"}
        created = await client.post(
            "/v1/payouts",
            json=payout_body(amount="120.00"),
            headers={"Idempotency-Key": uuid.uuid4().hex, **agent},
        )
        assert created.json()["status"] == "pending_approval", created.text
        payout_id = created.json()["id"]
        approved = await client.post(
            f"/v1/payouts/{payout_id}/approve", json={"comment": "ok"}, headers=supervisor
        )
        assert approved.status_code == 200, approved.text

        async def delivery_span_ended() -> bool:
            # The receiver records the request before it answers; the sender's span ends
            # once it has read that answer.
            traced_app.state.tracing.provider.force_flush()
            return any(s.name == "webhook.deliver" for s in exporter.get_finished_spans())

        await eventually(delivery_span_ended, timeout=20)
    [webhook_request] = receiver.received("/hooks")
    spans = list(exporter.get_finished_spans())
    index = by_id(spans)

    [deliver] = [s for s in spans if s.name == "webhook.deliver"]
    assert deliver.kind is SpanKind.CLIENT
    assert deliver.attributes is not None
    assert deliver.attributes["payout.id"] == payout_id
    assert deliver.attributes["http.response.status_code"] == 204
    # The receiver got the delivery span's own context: version-traceid-spanid-flags.
    _version, trace_id, parent_id, _flags = webhook_request.headers["traceparent"].split("-")
    assert int(trace_id, 16) == deliver.context.trace_id
    assert int(parent_id, 16) == deliver.context.span_id

    # webhook.deliver ← payout.execute ← POST .../approve, all in one trace.
    chain = [s.name for s in ancestors(deliver, index)]
    assert chain[0] == "payout.execute", chain
    approve = ancestors(deliver, index)[-1]
    assert approve.kind is SpanKind.SERVER
    assert approve.attributes is not None
    assert approve.attributes.get("http.request.method") == "POST"
    execute = next(s for s in spans if s.name == "payout.execute")
    [submit] = [s for s in spans if s.name == "gateway.submit"]
    assert submit.parent is not None
    assert submit.parent.span_id == execute.context.span_id
    assert submit.attributes is not None
    assert submit.attributes["gateway"] == "sandbox"

    # Database statements are spans of the request, or of the executor, that ran them.
    statements = [s for s in spans if s.attributes and "db.system" in s.attributes]
    assert statements
    in_request = [s for s in statements if approve in ancestors(s, index)]
    in_executor = [s for s in statements if execute in ancestors(s, index)]
    assert in_request
    assert in_executor
    # The create's statements too, those that run on the driver connection untraced
    # (db/driver.py) included: the claim, the facts, the counters, the folded writes.
    [create] = [
        s
        for s in spans
        if s.kind is SpanKind.SERVER
        and s.attributes
        and s.attributes.get("http.request.method") == "POST"
        and str(s.attributes.get("http.route", "")).endswith("/payouts")
    ]
    in_create = [s for s in statements if create in ancestors(s, index)]
    texts = " ".join(str((s.attributes or {}).get("db.statement", s.name)) for s in in_create)
    for statement in ("INSERT INTO idempotency_keys", "INSERT INTO limit_counters"):
        assert statement in texts, texts[:500]

    # The approve request's log lines carry its trace id.
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    changed = [
        line
        for line in lines
        if line.get("event") == "payout.status_changed" and line.get("status") == "approved"
    ]
    assert changed
    assert changed[0]["trace_id"] == format(approve.context.trace_id, "032x")


async def test_an_incoming_traceparent_is_continued(
    traced_app: Any, exporter: InMemorySpanExporter
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=traced_app), base_url="http://testserver"
    ) as client:
        answer = await client.get(
            "/v1/payouts",
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "traceparent": parent},
        )
    assert answer.status_code == 200
    traced_app.state.tracing.provider.force_flush()
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"


def test_unset_tracing_loads_nothing_of_opentelemetry_sdk() -> None:
    """The off switch is real: no SDK, no instrumentation, no FastAPI request telemetry."""
    code = """
import sys
from payoutsvc.config import Settings
from payoutsvc.main import create_app
app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
import payoutsvc.worker_process
heavy = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")
loaded = sorted(m for m in sys.modules if m.startswith(heavy))
print(loaded, app.state.tracing, app._native_telemetry.enabled())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={}
    ).stdout
    assert out.strip() == "[] None False"
