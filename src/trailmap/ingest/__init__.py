"""Adapters from producers' formats (OTLP today) to what the domain functions take."""

from trailmap.ingest.otlp import decode_traces
from trailmap.ingest.otlp_body import read_otlp_body

__all__ = ["decode_traces", "read_otlp_body"]
