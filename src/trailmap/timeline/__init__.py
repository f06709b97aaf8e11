"""The change timeline: events in (validated, idempotent), events out (filtered, paged)."""
