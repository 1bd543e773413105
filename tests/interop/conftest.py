"""The source tests' collector, for the interop tests."""

from tests.sources.conftest import collector

__all__ = ["collector"]
