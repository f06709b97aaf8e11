"""The authorization server's HTTP endpoints: the `mcp` SDK's handlers, with what they lack
(docs/internals.md)."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import construct_redirect_uri
from mcp.server.auth.routes import (
    AUTHORIZATION_PATH,
    REGISTRATION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    build_metadata,
    cors_middleware,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import Message

from trailmap.accounts import tokens as token_format
from trailmap.accounts.rate_limits import Limit, RateLimits
from trailmap.oauth.client_limits import MAX_REGISTRATION_BYTES
from trailmap.oauth.provider import SCOPE, TrailmapOAuthProvider

__all__ = ["PROTECTED_RESOURCE_PATHS", "oauth_routes"]

PROTECTED_RESOURCE_PATHS: Final = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
)
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_AUTH_METHODS: Final = ["client_secret_post", "client_secret_basic", "none"]


class _PresentedSecret:
    """A provider view for one request: a client whose stored hash matches the presented
    secret is handed to the SDK with that secret, so its plain comparison succeeds; any
    other presented secret meets an unguessable stand-in and fails."""

    def __init__(self, provider: TrailmapOAuthProvider, presented: str | None) -> None:
        self._provider = provider
        self._presented = presented

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        client = await self._provider.get_client(client_id)
        if client is None or not client.client_secret:
            return client
        presented = self._presented
        if presented is not None and secrets.compare_digest(
            token_format.hash_token(presented).encode(), client.client_secret.encode()
        ):
            return client.model_copy(update={"client_secret": presented})
        return client.model_copy(update={"client_secret": secrets.token_hex(32)})


class HashedSecretAuthenticator(ClientAuthenticator):
    """The SDK's client authentication, over secrets stored as SHA-256."""

    def __init__(self, provider: TrailmapOAuthProvider) -> None:
        super().__init__(provider)
        self._trailmap = provider

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        presented = await _presented_secret(request)
        view: Any = _PresentedSecret(self._trailmap, presented)
        return await ClientAuthenticator(view).authenticate_request(request)


async def _presented_secret(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _client_id, sep, secret = decoded.partition(":")
        return unquote(secret) if sep else None
    form = await request.form()
    posted = form.get("client_secret")
    return posted if isinstance(posted, str) else None


@dataclass
class _Authorize(AuthorizationHandler):
    """The SDK's /authorize; its error redirects gain `iss` (RFC 9207) like its answers."""

    issuer: str = ""

    async def handle(self, request: Request) -> Response:
        response = await super().handle(request)
        location = response.headers.get("location")
        if response.status_code == 302 and location:
            query = parse_qs(urlsplit(location).query)
            if "error" in query and "iss" not in query:
                response.headers["location"] = construct_redirect_uri(location, iss=self.issuer)
        return response


@dataclass
class _Token(TokenHandler):
    """The SDK's /token, refusing tokens for any resource but this server's MCP endpoint,
    and spending a code whose redemption it refused."""

    resource: str = ""
    trailmap: TrailmapOAuthProvider = field(kw_only=True)

    async def handle(self, request: Request) -> Response:
        form = await request.form()
        asked = form.get("resource")
        if isinstance(asked, str) and asked.rstrip("/") != self.resource.rstrip("/"):
            return JSONResponse(
                {
                    "error": "invalid_target",
                    "error_description": f"This server issues tokens for {self.resource} only.",
                },
                status_code=400,
                headers=_NO_STORE,
            )
        response: Response = await super().handle(request)
        # 400 comes after the client authenticated (a failed authentication is 401): the SDK
        # refused this code's redemption (wrong verifier or redirect URI, expired, malformed
        # request) without telling the provider, so the code is spent here.
        code, client_id = form.get("code"), form.get("client_id")
        if (
            response.status_code == 400
            and form.get("grant_type") == "authorization_code"
            and isinstance(code, str)
            and isinstance(client_id, str)
        ):
            await self.trailmap.spend_refused_code(client_id, code)
        return response


@dataclass
class _Register(RegistrationHandler):
    """The SDK's /register, over a body of at most `MAX_REGISTRATION_BYTES`: read here, up to
    that bound and no further, then handed to the SDK as if it were the whole request."""

    async def handle(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > MAX_REGISTRATION_BYTES
        body = bytearray()
        if not too_large:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_REGISTRATION_BYTES:
                    too_large = True
                    break
        if too_large:
            return JSONResponse(
                {
                    "error": "invalid_client_metadata",
                    "error_description": f"The registration is over {MAX_REGISTRATION_BYTES} "
                    "bytes; client metadata takes a few hundred.",
                },
                status_code=400,
                headers=_NO_STORE,
            )
        read, replayed = bytes(body), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # the body was read whole: what follows is the client's disconnect
                return await request.receive()
            replayed = True
            return {"type": "http.request", "body": read, "more_body": False}

        response: Response = await super().handle(Request(request.scope, replay))
        return response


class _Revoke:
    """RFC 7009 revocation for confidential and public clients alike."""

    def __init__(self, provider: TrailmapOAuthProvider, authenticator: ClientAuthenticator) -> None:
        self._provider = provider
        self._authenticator = authenticator

    async def handle(self, request: Request) -> Response:
        try:
            client = await self._authenticator.authenticate_request(request)
        except AuthenticationError as error:
            return JSONResponse(
                {"error": "invalid_client", "error_description": error.message},
                status_code=401,
                headers=_NO_STORE,
            )
        form = await request.form()
        token = form.get("token")
        if not isinstance(token, str) or not token:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "Send the token to revoke."},
                status_code=400,
                headers=_NO_STORE,
            )
        found: Any = None
        if token.startswith(token_format.REFRESH_TOKEN_PREFIX):
            found = await self._provider.load_refresh_token(client, token)
        else:
            found = await self._provider.load_access_token(token)
        # An unknown token, or another client's, is answered 200 too (RFC 7009, section 2.2).
        if found is not None and found.client_id == client.client_id:
            await self._provider.revoke_token(found)
        return Response(status_code=200, headers=_NO_STORE)


def _cors(app: Any, methods: list[str]) -> Any:
    return CORSMiddleware(app=app, allow_origins="*", allow_methods=methods, allow_headers=["*"])


def _limited(app: Any) -> Any:
    return RequestBodyLimitMiddleware(app, DEFAULT_MAX_REQUEST_BODY_SIZE)


@dataclass(frozen=True, slots=True)
class OAuthLimits:
    """How often one client address may register, and ask /authorize and /token."""

    limits: RateLimits
    registrations_per_hour: int
    requests_per_minute: int


class _RateLimited:
    """An ASGI app answering 429 with Retry-After to an address past `limit`, before reading
    the request's body (a flood costs a counter, not a parse), and passing the rest on."""

    def __init__(self, app: Any, limits: OAuthLimits, limit: Limit) -> None:
        self._app, self._limits, self._limit = app, limits, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":
            client = scope.get("client")
            address = client[0] if client else None
            wait = await self._limits.limits.retry_after(self._limit, address)
            if wait is not None:
                refusal = JSONResponse(
                    {
                        "error": "temporarily_unavailable",
                        "error_description": "Too many requests from this address; try "
                        f"again in {wait} seconds.",
                    },
                    status_code=429,
                    headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
                )
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _rate_limited(app: Any, limits: OAuthLimits | None, limit: Limit) -> Any:
    return app if limits is None else _RateLimited(app, limits, limit)


def oauth_routes(
    provider: TrailmapOAuthProvider,
    *,
    documentation: str | None = None,
    limits: OAuthLimits | None = None,
) -> list[Route]:
    """Every OAuth route, for an issuer `provider.issuer` guarding `provider.resource`;
    `limits` bounds what one address may ask of /register, /authorize and /token."""
    per_minute = limits.requests_per_minute if limits else 0
    registrations = Limit("oauth-register", limits.registrations_per_hour if limits else 0, 3600)
    authorizations = Limit("oauth-authorize", per_minute, 60)
    tokens = Limit("oauth-token", per_minute, 60)
    issuer = AnyHttpUrl(provider.issuer)
    registration = ClientRegistrationOptions(
        enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
    )
    built = build_metadata(
        issuer,
        AnyHttpUrl(documentation) if documentation else None,
        registration,
        RevocationOptions(enabled=True),
    )
    # Validated again from plain strings: the metadata model keeps a path-less issuer as it is
    # (no trailing slash), which clients compare with `iss` character for character.
    metadata = OAuthMetadata.model_validate(
        {
            **built.model_dump(mode="json", exclude_none=True),
            "issuer": provider.issuer,
            "token_endpoint_auth_methods_supported": _AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": _AUTH_METHODS,
            "client_id_metadata_document_supported": True,
            "authorization_response_iss_parameter_supported": True,
        }
    )
    resource = ProtectedResourceMetadata.model_validate(
        {
            "resource": provider.resource,
            "authorization_servers": [provider.issuer],
            "scopes_supported": [SCOPE],
            "resource_name": "Trailmap",
            **({"resource_documentation": documentation} if documentation else {}),
        }
    )
    authenticator = HashedSecretAuthenticator(provider)
    authorize = _Authorize(provider, issuer=provider.issuer)
    token = _Token(provider, authenticator, resource=provider.resource, trailmap=provider)
    get_only = ["GET", "OPTIONS"]
    post_only = ["POST", "OPTIONS"]
    return [
        Route(
            "/.well-known/oauth-authorization-server",
            endpoint=cors_middleware(MetadataHandler(metadata).handle, get_only),
            methods=get_only,
        ),
        *(
            Route(
                path,
                endpoint=cors_middleware(
                    ProtectedResourceMetadataHandler(resource).handle, get_only
                ),
                methods=get_only,
            )
            for path in PROTECTED_RESOURCE_PATHS
        ),
        # No CORS on /authorize: browsers navigate to it, scripts have no business there.
        Route(
            AUTHORIZATION_PATH,
            endpoint=_rate_limited(
                _limited(request_response(authorize.handle)), limits, authorizations
            ),
            methods=["GET", "POST"],
        ),
        Route(
            TOKEN_PATH,
            endpoint=_cors(
                _rate_limited(_limited(request_response(token.handle)), limits, tokens),
                post_only,
            ),
            methods=post_only,
        ),
        Route(
            REGISTRATION_PATH,
            # Not `_limited`: that would read 4 MiB before _Register refuses over 8 KiB.
            endpoint=_cors(
                _rate_limited(
                    request_response(_Register(provider, registration).handle),
                    limits,
                    registrations,
                ),
                post_only,
            ),
            methods=post_only,
        ),
        Route(
            REVOCATION_PATH,
            endpoint=_cors(
                _limited(request_response(_Revoke(provider, authenticator).handle)), post_only
            ),
            methods=post_only,
        ),
    ]
