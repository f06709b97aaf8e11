"""Storage: the only package that talks to SQLAlchemy; one module of queries per domain."""

from trailmap.storage.database import Connection, Database

__all__ = ["Connection", "Database"]
