"""Optional OpenTelemetry tracing, on when ``PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Spans, exported over OTLP/HTTP to ``<endpoint>/v1/traces``:

- every HTTP request (FastAPI's own OpenTelemetry support, given this process's provider; an
  incoming ``traceparent`` is continued);
- every database statement (``opentelemetry-instrumentation-sqlalchemy`` on this process's
  engines);
- the executor's work on a payout (``payout.execute``) and each gateway call in it
  (``gateway.submit`` / ``gateway.status``); the provider adapters' HTTP requests below it
  (``opentelemetry-instrumentation-httpx``), which carry ``traceparent``;
- each webhook delivery attempt (``webhook.deliver``), whose request carries ``traceparent``
  (the signature covers id, timestamp and body only, so the header changes nothing for a
  receiver that verifies).

A payout's work happens after its request answered, in a background loop. So that its spans
join the trace of the request that made it due (create, approve, release, ...), this process
remembers, per payout, the span that last changed it (:meth:`Tracing.remember_payout`); the
executor's and the webhook sender's spans are its children. A separate ``payoutsvc worker``
process does not know another process's spans: there each payout's work starts a trace of
its own, tagged ``payout.id``.

Log lines written while a span is current carry ``trace_id`` and ``span_id``.

Off (the default), nothing of the OpenTelemetry SDK or its instrumentations is imported,
FastAPI's own telemetry is switched off (:func:`fastapi_telemetry`: otherwise it checks the
global providers on every request) and ``Runtime.tracing`` is None: each traced place costs
one ``is None`` check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi.telemetry import TelemetryConfig

from payoutsvc import __version__
from payoutsvc.config import Settings
from payoutsvc.db.driver import keep_statements_observable

if TYPE_CHECKING:  # imported for real only when tracing is on
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanContext, Tracer

    from payoutsvc.db.engine import Database

T = TypeVar("T")

#: How many payouts' trace contexts a process remembers (the oldest are forgotten first).
REMEMBERED_PAYOUTS = 10_000
MISSING_PACKAGES = (
    "PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
    "install the `otel` extra (pip install 'payoutsvc[otel]')"
)


class Tracing:
    """This process's tracer provider, its instrumentations and the payouts' trace contexts
    (per-process state: it lives on ``Runtime.tracing``)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace
        from opentelemetry.propagate import inject

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("payoutsvc", __version__)
        self._trace = trace
        self._inject = inject
        self._payouts: OrderedDict[str, SpanContext] = OrderedDict()
        self._undo: list[Callable[[], None]] = []

    # -- instrumentation ------------------------------------------------------------------
    def instrument(self, db: Database) -> None:
        """This process's database statements and outgoing httpx requests."""
        self.instrument_database(db)
        self.instrument_http_clients()

    def instrument_database(self, db: Database) -> None:
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeterProvider

        # The connection-usage gauge is the metrics side (ours is /metrics): a no-op here.
        usage = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("unused")
        for engine in {id(e): e for e in (db.write_engine, db.read_engine)}.values():
            EngineTracer(self.tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]  # the library leaves it unannotated
            # The hot statements on the driver connection would escape the spans.
            self._undo.append(keep_statements_observable(engine.sync_engine))
        self._undo.append(EngineTracer.remove_all_event_listeners)

    def instrument_http_clients(self) -> None:
        """Every httpx request of this process (the provider adapters') gets a client span
        and a ``traceparent`` header."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        instrumentor = HTTPXClientInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=self.provider)
            self._undo.append(instrumentor.uninstrument)

    def shutdown(self) -> None:
        """Export what is buffered and remove the instrumentation (process end)."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.provider.shutdown()

    # -- payouts' traces ------------------------------------------------------------------
    def remember_payout(self, payout_id: str) -> None:
        """The current span (a request's, or the executor's) is the one that last changed
        this payout: the work it made due will be traced as its child."""
        context = self._trace.get_current_span().get_span_context()
        if not context.is_valid:
            return
        self._payouts[payout_id] = context
        self._payouts.move_to_end(payout_id)
        while len(self._payouts) > REMEMBERED_PAYOUTS:
            self._payouts.popitem(last=False)

    def _parent_of(self, payout_id: str) -> Context | None:
        found = self._payouts.get(payout_id)
        if found is None:
            return None
        return self._trace.set_span_in_context(self._trace.NonRecordingSpan(found))

    @contextmanager
    def payout_span(
        self, name: str, payout_id: str, *, client: bool = False, **attributes: str
    ) -> Iterator[Span]:
        """A span for background work on a payout, child of the span that made it due
        (``client``: an outgoing request's span)."""
        kind = self._trace.SpanKind.CLIENT if client else self._trace.SpanKind.INTERNAL
        with self.tracer.start_as_current_span(
            name,
            context=self._parent_of(payout_id),
            kind=kind,
            attributes={"payout.id": payout_id, **attributes},
        ) as span:
            yield span

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add ``traceparent`` (and ``tracestate``) for the current span to ``headers``."""
        self._inject(headers)


def remember_payout(tracing: Tracing | None, payout_id: str) -> None:
    if tracing is not None:
        tracing.remember_payout(payout_id)


async def traced_call(
    tracing: Tracing | None, name: str, invoke: Callable[[], Awaitable[T]], **attributes: str
) -> T:
    """``await invoke()``, inside a client span when tracing is on."""
    if tracing is None:
        return await invoke()
    kind = tracing._trace.SpanKind.CLIENT
    with tracing.tracer.start_as_current_span(name, kind=kind, attributes=attributes):
        return await invoke()


def fastapi_telemetry(tracing: Tracing | None) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry: request spans through our provider when tracing is
    on; nothing at all when it is off. Its metrics and logs stay off: /metrics (Prometheus)
    and structlog are this service's."""
    off: TelemetryConfig = {"metrics": False, "logs": False, "operation_spans": False}
    if tracing is None:
        return {**off, "tracing": False}
    return {**off, "tracing": True, "tracer_provider": tracing.provider}


def span_exporter(endpoint: str) -> SpanExporter:
    """The OTLP/HTTP exporter for ``endpoint`` (tests replace this function)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def build_tracing(settings: Settings) -> Tracing | None:
    """Tracing for this process, or None when it is off (nothing imported then)."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if endpoint is None:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(MISSING_PACKAGES) from exc
    resource = Resource.create({"service.name": "payoutsvc", "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter(endpoint)))
    return Tracing(provider)


def add_trace_ids(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's ids on every line written inside one."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict
