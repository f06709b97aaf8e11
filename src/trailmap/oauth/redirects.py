"""Which redirect URIs a client may register: https ones, and http on a loopback address."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Final
from urllib.parse import urlsplit

__all__ = ["is_loopback_redirect", "redirect_problem"]

_LOOPBACK_NAMES: Final = {"localhost"}


def is_loopback_redirect(uri: str) -> bool:
    """An http URI on 127.0.0.1, [::1] or localhost: a native app's own listener."""
    parts = urlsplit(uri)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def redirect_problem(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.fragment:
        return f"{uri} has a fragment; redirect URIs may not (RFC 6749, section 3.1.2)"
    if parts.scheme == "https" and parts.hostname:
        return None
    if is_loopback_redirect(uri):
        return None
    return f"{uri} is neither https nor http on a loopback address (127.0.0.1, [::1], localhost)"
