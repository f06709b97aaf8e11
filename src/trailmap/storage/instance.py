"""The instance's own settings (not any organization's): first-run setup state and the like."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, select, update

from trailmap.storage.dialect import insert_for, upsert
from trailmap.storage.tables import instance_settings, users

__all__ = [
    "count_users",
    "delete_setting",
    "first_setting",
    "get_setting",
    "replace_setting",
    "set_setting",
    "take_setting",
]


def get_setting(conn: Connection, name: str) -> str | None:
    stmt = select(instance_settings.c.value).where(instance_settings.c.name == name)
    value = conn.execute(stmt).scalar_one_or_none()
    return None if value is None else str(value)


def set_setting(conn: Connection, name: str, value: str) -> None:
    conn.execute(upsert(conn, instance_settings, {"name": name, "value": value}, ["name"]))


def first_setting(conn: Connection, name: str, value: str) -> str:
    """The setting's value, storing `value` first if it has none: every caller, on any node,
    gets the one value that was stored first."""
    stmt = insert_for(conn, instance_settings).values(name=name, value=value)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
    stored = get_setting(conn, name)
    assert stored is not None
    return stored


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


def replace_setting(conn: Connection, name: str, old: str, new: str) -> bool:
    """Set the setting to `new` only if it still has `old`: true for exactly one caller."""
    result = conn.execute(
        update(instance_settings)
        .where(instance_settings.c.name == name, instance_settings.c.value == old)
        .values(value=new)
    )
    return result.rowcount == 1


def count_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users)).scalar_one())
