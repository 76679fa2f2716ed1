from tests.executor.conftest import clock, executor, make_app, operators, runtime  # noqa: F401  (re-exported fixtures)
