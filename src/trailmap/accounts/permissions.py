"""The one permission table: what each role may do in an organization, and what each key
scope allows; console, API and CLI all ask here (docs/operations.md, "Who may do what")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

__all__ = [
    "ACTIONS",
    "ROLES",
    "SCOPES",
    "Action",
    "Role",
    "Scope",
    "role_may",
    "scope_allows",
]

Role = Literal["owner", "admin", "member"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

Scope = Literal["READ_ONLY", "READ_WRITE", "ADMIN"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

Action = Literal[
    "read",  # the timeline, the graph, metrics
    "write",  # send events, traces and metric points
    "create_key",  # a READ_ONLY key of one's own
    "create_write_key",  # a READ_WRITE key (members too, when the organization allows it)
    "create_admin_key",  # an ADMIN key
    "manage_all_keys",  # see and revoke every key of the organization, not only one's own
    "manage_service_accounts",  # service accounts and their keys
    "manage_settings",  # the metrics source, retention, integrations, key rules
    "manage_members",  # invite, remove, change roles, disable
    "manage_owners",  # make someone an owner, or an owner something else
    "read_audit",  # the organization's audit log
]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)

_ADMINS: Final = frozenset[Role]({"owner", "admin"})
_ALL: Final = frozenset[Role](ROLES)

_ROLES: Final[Mapping[Action, frozenset[Role]]] = {
    "read": _ALL,
    "write": _ALL,
    "create_key": _ALL,
    "create_write_key": _ADMINS,
    "create_admin_key": _ADMINS,
    "manage_all_keys": _ADMINS,
    "manage_service_accounts": _ADMINS,
    "manage_settings": _ADMINS,
    "manage_members": _ADMINS,
    "manage_owners": frozenset[Role]({"owner"}),
    "read_audit": _ADMINS,
}

# The least scope a key needs for each action, whoever holds it.
_SCOPE_NEEDED: Final[Mapping[Action, Scope]] = {
    "read": "READ_ONLY",
    "write": "READ_WRITE",
    **{a: "ADMIN" for a in ACTIONS if a not in ("read", "write")},
}


def role_may(role: Role, action: Action, *, members_write_keys: bool = False) -> bool:
    """Whether `role` may do `action`; members create READ_WRITE keys only where the
    organization allows it."""
    if action == "create_write_key" and role == "member":
        return members_write_keys
    return role in _ROLES[action]


def scope_allows(scope: Scope, action: Action) -> bool:
    """Whether a key of `scope` may do `action` (its person's role must allow it too)."""
    return SCOPES.index(scope) >= SCOPES.index(_SCOPE_NEEDED[action])
