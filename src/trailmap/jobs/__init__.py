"""Background jobs run by the server: the retention purge (later: rollups, periodic syncs)."""
