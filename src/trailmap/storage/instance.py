"""The instance's own settings (not any organization's): first-run setup state and the like."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, select

from trailmap.storage.dialect import upsert
from trailmap.storage.tables import instance_settings, users

__all__ = ["count_users", "delete_setting", "get_setting", "set_setting", "take_setting"]


def get_setting(conn: Connection, name: str) -> str | None:
    stmt = select(instance_settings.c.value).where(instance_settings.c.name == name)
    value = conn.execute(stmt).scalar_one_or_none()
    return None if value is None else str(value)


def set_setting(conn: Connection, name: str, value: str) -> None:
    conn.execute(upsert(conn, instance_settings, {"name": name, "value": value}, ["name"]))


def delete_setting(conn: Connection, name: str) -> None:
    conn.execute(delete(instance_settings).where(instance_settings.c.name == name))


def take_setting(conn: Connection, name: str, value: str) -> bool:
    """Delete the setting only if it still has `value`: true for exactly one caller."""
    result = conn.execute(
        delete(instance_settings).where(
            instance_settings.c.name == name, instance_settings.c.value == value
        )
    )
    return result.rowcount == 1


def count_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users)).scalar_one())
