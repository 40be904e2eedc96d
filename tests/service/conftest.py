"""The service fixtures live in tests/service_fixtures.py (a plugin registered in
tests/conftest.py, so tests/browser shares them); their types stay importable from here."""

from tests.service_fixtures import ServiceStack

__all__ = ["ServiceStack"]
