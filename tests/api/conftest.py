"""Fixtures of the API tests."""

from tests.api.otlp_common import encoding, otlp_client

__all__ = ["encoding", "otlp_client"]
