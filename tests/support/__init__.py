"""Helpers shared by the test modules; fixtures reach tests through `pytest_plugins` in
tests/conftest.py, never through imports."""
