# The two commands a newcomer needs: `make run` and `make test`. Both build their own
# environment from uv.lock with the machine's Python (nothing installed by hand).
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup run test lint format openapi bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

setup: $(VENV)/.synced

## make run: the service on the embedded default (SQLite file, sandbox gateway, in-process worker),
## accepting http:// and loopback webhook URLs so that `payoutsvc listen` works on a laptop
## (a development convenience of this target only: `payoutsvc serve` itself keeps refusing them)
run: export PAYOUTSVC_WEBHOOK_ALLOW_PRIVATE ?= true
run: setup
	$(VENV)/bin/payoutsvc serve

## make test: the whole suite (SQLite; PostgreSQL too when PAYOUTSVC_TEST_DATABASE_URL is set),
## in TEST_WORKERS processes (pytest-xdist; each gets its own PostgreSQL database beside the
## given one), then line coverage of src/payoutsvc (files at 100 % left out of the table)
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --cov=payoutsvc --cov-report=term:skip-covered

lint: setup
	$(VENV)/bin/ruff check src tests bench migrations
	$(VENV)/bin/ruff format --check src tests bench migrations
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix src tests bench migrations
	$(VENV)/bin/ruff format src tests bench migrations

## make openapi: regenerate the committed OpenAPI document
openapi: setup
	$(VENV)/bin/payoutsvc openapi > openapi/openapi.json

bench: setup
	$(VENV)/bin/python bench/run.py

clean:
	rm -rf $(TOOLS) $(VENV) .mypy_cache .ruff_cache .pytest_cache
