"""How much a client's metadata may hold: anyone may register a client or name a metadata
document, and what they send is stored, so every field has a bound (docs/api.md)."""

from __future__ import annotations

from typing import Final

import orjson
from mcp.shared.auth import OAuthClientInformationFull

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_REDIRECT_URIS",
    "MAX_REGISTRATION_BYTES",
    "MAX_STATE_CHARS",
    "MAX_URI_CHARS",
    "metadata_problem",
]

# A real client's registration is a few hundred bytes (Claude.ai's is under 300).
MAX_REGISTRATION_BYTES: Final = 8 * 1024
# The stored metadata, whatever sent it: a registration, or a Client ID Metadata Document
# (fetched up to 64 KiB, which may hold fields Trailmap does not keep).
MAX_METADATA_BYTES: Final = 8 * 1024
MAX_REDIRECT_URIS: Final = 10
MAX_URI_CHARS: Final = 1000  # a redirect URI, a client_id that is a URL, any other URI
# An authorization request's `state`, kept with the pending request: clients send a random
# value (tens of characters), some a signed one (hundreds).
MAX_STATE_CHARS: Final = 2048
_MAX_NAME_CHARS: Final = 200  # the approved key is named "MCP — <client_name>", 200 at most
_MAX_CONTACTS: Final = 5
_MAX_CONTACT_CHARS: Final = 320  # an e-mail address is at most 254
_MAX_WORDS: Final = 10  # grant_types, response_types
_MAX_WORD_CHARS: Final = 200
_URI_FIELDS: Final = ("client_uri", "logo_uri", "tos_uri", "policy_uri", "jwks_uri")
_SHORT_FIELDS: Final = (
    "scope",
    "software_id",
    "software_version",
    "token_endpoint_auth_method",
    "application_type",
)


def _too_long(name: str, value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"{name} is {len(value)} characters long; at most {limit} are accepted"
    return None


def _list_problem(name: str, values: list[str], count: int, chars: int) -> str | None:
    if len(values) > count:
        return f"{name} lists {len(values)} values; at most {count} are accepted"
    for index, value in enumerate(values):
        problem = _too_long(f"{name}[{index}]", value, chars)
        if problem is not None:
            return problem
    return None


def metadata_problem(client: OAuthClientInformationFull) -> str | None:
    """What in `client` is over its bound, in a sentence for the client's developer, or None."""
    checks = [
        _list_problem(
            "redirect_uris",
            [str(uri) for uri in client.redirect_uris or []],
            MAX_REDIRECT_URIS,
            MAX_URI_CHARS,
        ),
        _too_long("client_name", client.client_name or "", _MAX_NAME_CHARS),
        *(_too_long(name, str(getattr(client, name) or ""), MAX_URI_CHARS) for name in _URI_FIELDS),
        *(
            _too_long(name, str(getattr(client, name) or ""), _MAX_WORD_CHARS)
            for name in _SHORT_FIELDS
        ),
        _list_problem("contacts", client.contacts or [], _MAX_CONTACTS, _MAX_CONTACT_CHARS),
        _list_problem("grant_types", client.grant_types, _MAX_WORDS, _MAX_WORD_CHARS),
        _list_problem("response_types", client.response_types, _MAX_WORDS, _MAX_WORD_CHARS),
    ]
    problem = next((check for check in checks if check is not None), None)
    if problem is not None:
        return problem
    # What is left unbounded field by field (jwks, any JSON) is bounded as a whole.
    size = len(orjson.dumps(client.model_dump(mode="json", exclude_none=True)))
    if size > MAX_METADATA_BYTES:
        return f"the client metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are kept"
    return None
