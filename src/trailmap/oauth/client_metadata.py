"""Client ID Metadata Documents: a `client_id` that is an https URL describing the client,
fetched narrowly, since anyone may name it (docs/internals.md)."""

from __future__ import annotations

import ssl
from typing import Final
from urllib.parse import unquote, urlsplit

import anyio
import httpx
import orjson
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from trailmap.oauth.client_limits import MAX_URI_CHARS, metadata_problem
from trailmap.oauth.redirects import redirect_problem
from trailmap.outbound import OutboundError, OutboundPolicy, certificate_problem

__all__ = ["MAX_BYTES", "TIMEOUT_SECONDS", "ClientMetadataError", "fetch_client_metadata"]

MAX_BYTES: Final = 64 * 1024
TIMEOUT_SECONDS: Final = 5.0


class ClientMetadataError(Exception):
    """Why a Client ID Metadata Document was not accepted."""


def is_metadata_url(client_id: str) -> bool:
    return client_id.startswith("https://")


def _check_url(url: str) -> None:
    if len(url) > MAX_URI_CHARS:
        raise ClientMetadataError(
            f"a client_id URL of {len(url)} characters is refused; at most {MAX_URI_CHARS}"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # out of range or not a number raises
    except ValueError as error:
        raise ClientMetadataError(f"{url} is not a valid URL: {error}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ClientMetadataError(f"{url} is not an https URL")
    if parts.username or parts.password or "#" in url:
        raise ClientMetadataError(f"{url} must carry no credentials and no fragment")
    if parts.path in ("", "/"):
        raise ClientMetadataError(f"{url} must have a path naming the document")
    segments = {unquote(segment) for segment in parts.path.split("/")}
    if segments & {".", ".."}:
        # The document must be read from the very URL it names, not a normalized one.
        raise ClientMetadataError(f"{url} has '.' or '..' path segments")


def _tls(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


async def fetch_client_metadata(
    url: str, *, outbound: OutboundPolicy, ca_file: str | None = None
) -> OAuthClientInformationFull:
    """The client described at `url`, checked; `ClientMetadataError` says why not. The
    addresses it may be fetched from are `outbound`'s (public ones only, unless the
    operator said otherwise: anyone may name this URL)."""
    _check_url(url)
    body = b""
    try:
        with anyio.fail_after(TIMEOUT_SECONDS):
            async with outbound.get(
                url,
                io_timeout_seconds=TIMEOUT_SECONDS,
                headers={
                    "Accept": "application/json",
                    # Counted as it arrives: no compressed body inflates past MAX_BYTES.
                    "Accept-Encoding": "identity",
                },
                verify=_tls(ca_file),
            ) as response:
                if response.status_code != 200:
                    raise ClientMetadataError(
                        f"{url} answered HTTP {response.status_code} (redirects are not followed)"
                    )
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise ClientMetadataError(f"{url} is larger than {MAX_BYTES} bytes")
    except TimeoutError:
        raise ClientMetadataError(f"{url} did not answer within {TIMEOUT_SECONDS:g} s") from None
    except OutboundError as error:
        raise ClientMetadataError(f"{url} is not fetched: {error}") from None
    except httpx.HTTPError as error:
        problem = certificate_problem(error)
        reason = "no answer" if problem is None else f"its certificate: {problem}"
        raise ClientMetadataError(f"{url} could not be fetched ({reason})") from None
    return _parse(url, body)


def _parse(url: str, body: bytes) -> OAuthClientInformationFull:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ClientMetadataError(f"{url} is not JSON") from None
    if not isinstance(document, dict):
        raise ClientMetadataError(f"{url} is not a JSON object")
    if document.get("client_id") != url:
        raise ClientMetadataError(f"{url} names another client_id ({document.get('client_id')!r})")
    if document.get("client_secret") is not None or document.get(
        "token_endpoint_auth_method"
    ) not in (
        None,
        "none",
    ):
        raise ClientMetadataError(
            f"{url} asks for a shared secret; a metadata-document client authenticates with "
            "'none' (PKCE)"
        )
    if not document.get("redirect_uris"):
        raise ClientMetadataError(f"{url} lists no redirect_uris")
    for uri in document["redirect_uris"] if isinstance(document["redirect_uris"], list) else []:
        problem = redirect_problem(str(uri))
        if problem is not None:
            raise ClientMetadataError(f"{url}: {problem}")
    document["token_endpoint_auth_method"] = "none"  # noqa: S105 - a method name
    try:
        client = OAuthClientInformationFull.model_validate(document)
    except ValidationError as error:
        raise ClientMetadataError(f"{url} is not valid client metadata: {error}") from None
    problem = metadata_problem(client)
    if problem is not None:
        raise ClientMetadataError(f"{url}: {problem}")
    return client
