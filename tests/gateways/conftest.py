"""Provider adapter tests use the executor tests' app factory."""

from tests.executor.conftest import make_app  # noqa: F401  (re-exported fixture)
