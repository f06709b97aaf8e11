"""Where the upstream sample payloads live (tests/fixtures/upstream, with their provenance)."""

from pathlib import Path

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream"
