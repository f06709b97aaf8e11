"""Accounts: organizations, users, plans, API keys, service accounts and the `Principal`."""

from trailmap.accounts.keys import ApiKey, authenticate, create_key, list_keys, revoke_key
from trailmap.accounts.organizations import Organization, create_org, get_org, list_orgs
from trailmap.accounts.plans import PLANS, Plan, get_plan
from trailmap.accounts.principal import Principal, Scope
from trailmap.accounts.users import User, add_user

__all__ = [
    "PLANS",
    "ApiKey",
    "Organization",
    "Plan",
    "Principal",
    "Scope",
    "User",
    "add_user",
    "authenticate",
    "create_key",
    "create_org",
    "get_org",
    "get_plan",
    "list_keys",
    "list_orgs",
    "revoke_key",
]
