"""structlog setup: contextvars first (request id, integration, payout), JSON in production,
console in a terminal. Stdlib logging (uvicorn, alembic) goes through the same renderer."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from payoutsvc import jsontext
from payoutsvc.config import Settings

_SECRET_KEYS = frozenset({"account", "key", "secret", "authorization", "api_key", "password"})


def _drop_secrets(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a value logged under a secret-looking key is never written."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def _json_line(event_dict: dict[str, Any], **options: Any) -> str:
    """structlog's JSONRenderer serializer (``default`` is structlog's fallback, the repr
    of what JSON cannot hold)."""
    return jsontext.dumps(event_dict, default=options.get("default"))


def configure_logging(settings: Settings) -> None:
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto"
        and (settings.environment == "production" or not sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    if settings.otel_exporter_otlp_endpoint is not None:
        # Imported only with tracing on: the processor reads OpenTelemetry's current span.
        from payoutsvc.tracing import add_trace_ids

        shared.insert(1, add_trace_ids)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # The level check first: a line below the level costs no timestamp, no merge.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    # No renderer here writes a line's caller, thread or process: not looking them up saves
    # the standard library a stack walk and three lookups per line (its logging HOWTO's
    # "Optimization"; a quarter of an access line's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Our own request log line replaces uvicorn's access log (it carries the request id).
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
