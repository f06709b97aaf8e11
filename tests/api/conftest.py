"""Fixtures of the API tests."""

from tests.api.otlp_common import otlp_client

__all__ = ["otlp_client"]
