"""`/mcp` over Streamable HTTP: the SDK's transport behind Trailmap's own front door, which
checks Origin and credential on every request, before the SDK sees it (docs/internals.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse

from trailmap.accounts import Principal
from trailmap.errors import TrailmapError, Unauthorized
from trailmap.http.auth import bearer_token
from trailmap.mcp.sessions import SessionCheck, SessionSigner
from trailmap.oauth.admission import InsufficientScope, admit
from trailmap.oauth.provider import SCOPE

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from trailmap.oauth.provider import TrailmapOAuthProvider
    from trailmap.settings import Settings
    from trailmap.storage import Database

__all__ = ["McpEndpoint", "transport_security"]

_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
_SESSION_HEADER = "mcp-session-id"
# JSON-RPC's code for a request the server will not take, as the SDK answers a bad session.
_INVALID_REQUEST = -32600


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Requests must name this server (Host) and, from a browser, come from it (Origin)."""
    public = urlsplit(settings.public_url)
    origin = f"{public.scheme}://{public.netloc}"
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[public.netloc, *_LOOPBACK_HOSTS],
        allowed_origins=[origin, *_LOOPBACK_ORIGINS],
    )


class McpEndpoint:
    """The raw ASGI endpoint mounted at /mcp and /mcp/."""

    def __init__(
        self,
        session_manager: StreamableHTTPSessionManager,
        db: Database,
        settings: Settings,
        oauth: TrailmapOAuthProvider,
    ) -> None:
        self._transport = StreamableHTTPASGIApp(session_manager)
        self._security = TransportSecurityMiddleware(transport_security(settings))
        self._db = db
        self._settings = settings
        self._sessions = SessionSigner(db)
        self._oauth = oauth
        self._metadata = f"{settings.public_url}/.well-known/oauth-protected-resource/mcp"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        # Origin and Host first: a page on another site must learn nothing, not even a 401.
        refused = await self._security.validate_request(request, is_post=False)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if request.method == "GET":
            # Stateless: there is no stream to resume, so say so instead of holding it open.
            await JSONResponse(
                {"error": "This MCP endpoint is stateless; send JSON-RPC requests with POST."},
                status_code=405,
                headers={"Allow": "POST"},
            )(scope, receive, send)
            return
        principal = await self._admit(request)
        if isinstance(principal, JSONResponse):
            await principal(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        key_id = principal.key_id or ""
        session_id = request.headers.get(_SESSION_HEADER)
        if session_id is not None:
            refused = await self._session_refusal(session_id, key_id)
            if refused is not None:
                await refused(scope, receive, send)
                return
        elif request.method == "POST":
            body = await request.body()
            receive = _replay(body, receive)
            if _is_initialize(body):
                send = self._with_session(send, key_id)
        await self._transport(scope, receive, send)

    async def _session_refusal(self, session_id: str, key_id: str) -> JSONResponse | None:
        verdict = await self._sessions.check(session_id, key_id)
        if verdict is SessionCheck.OURS:
            return None
        if verdict is SessionCheck.OTHER_KEY:
            return _rpc_error(
                403, "This MCP session was opened with another API key; start a new session."
            )
        return _rpc_error(404, "Session not found: start a new session with initialize.")

    def _with_session(self, send: Send, key_id: str) -> Send:
        """`send`, adding a new session id to a successful initialize answer."""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                session_id = await self._sessions.issue(key_id)
                header = (_SESSION_HEADER.encode(), session_id.encode())
                headers = [*message.get("headers", []), header]
                message = {**message, "headers": headers}
            await send(message)

        return sending

    async def _admit(self, request: Request) -> Principal | JSONResponse:
        """Who the request speaks for, or the refusal to send."""
        try:
            token = bearer_token(request)
            if token is None:
                # No credential at all: the bare challenge (RFC 6750, section 3.1).
                return self._unauthorized(None)
            return await self._principal(token)
        except Unauthorized as error:
            return self._unauthorized(error)
        except InsufficientScope as error:
            return self._insufficient_scope(str(error))
        except TrailmapError as error:
            return JSONResponse(
                {"error": error.code.lower(), "error_description": error.message},
                status_code=error.status,
                headers=error.headers,
            )

    async def _principal(self, token: str) -> Principal:
        return await admit(
            self._db,
            self._oauth,
            token,
            last_used_resolution_s=self._settings.last_used_resolution_seconds,
        )

    def _challenge(self, **params: str) -> str:
        """RFC 6750 / RFC 9728: what went wrong, where the metadata is, which scope."""
        fields = {**params, "resource_metadata": self._metadata, "scope": SCOPE}
        return "Bearer " + ", ".join(f'{k}="{_quoted(v)}"' for k, v in fields.items())

    def _unauthorized(self, error: Unauthorized | None) -> JSONResponse:
        if error is None:
            body = {
                "error": "invalid_request",
                "error_description": "Sign in with OAuth (see the WWW-Authenticate header), or "
                "send an API key as 'Authorization: Bearer <key>'.",
            }
            challenge = self._challenge()
        else:
            body = {"error": error.error, "error_description": error.message}
            challenge = self._challenge(**body)
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})

    def _insufficient_scope(self, message: str) -> JSONResponse:
        return JSONResponse(
            {"error": "insufficient_scope", "error_description": message},
            status_code=403,
            headers={
                "WWW-Authenticate": self._challenge(
                    error="insufficient_scope", error_description=message
                )
            },
        )


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _rpc_error(status: int, message: str) -> JSONResponse:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": _INVALID_REQUEST, "message": message}}
    return JSONResponse(body, status_code=status)


def _is_initialize(body: bytes) -> bool:
    if b'"initialize"' not in body:
        return False
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # the SDK answers a parse error itself
    return isinstance(message, dict) and message.get("method") == "initialize"


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for an app downstream of one that has read the body already."""
    replayed = False

    async def receiving() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receiving
