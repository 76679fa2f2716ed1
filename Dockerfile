# syntax=docker/dockerfile:1
# Build: docker build -t payoutsvc .   Run: docker run -p 8000:8000 -e PAYOUTSVC_DATABASE_URL=... payoutsvc
FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
# Dependencies first (cached layer), then the project itself, without dev tools.
# The `otel` extra: tracing is one environment variable away (PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT).
RUN uv sync --frozen --no-dev --extra otel --no-install-project
COPY src ./src
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --frozen --no-dev --extra otel --no-editable

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/payoutsvc --create-home payoutsvc
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PAYOUTSVC_ENVIRONMENT=production \
    PAYOUTSVC_DATABASE_URL=sqlite+aiosqlite:////var/lib/payoutsvc/payoutsvc.db
USER payoutsvc
WORKDIR /var/lib/payoutsvc
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["payoutsvc"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
