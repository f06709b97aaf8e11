"""Trailmap's OAuth 2.1 authorization server, as a provider of the `mcp` SDK's protocol: it
stores and judges what the SDK's handlers do not (docs/internals.md)."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import InvalidRedirectUriError, OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl, ConfigDict

from trailmap import clock, ids
from trailmap.accounts import Principal, create_key
from trailmap.accounts import tokens as token_format
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.keys import key_principal
from trailmap.accounts.memberships import Membership, find_membership
from trailmap.errors import Forbidden, NotFound
from trailmap.oauth.client_limits import MAX_STATE_CHARS, metadata_problem
from trailmap.oauth.client_metadata import (
    ClientMetadataError,
    fetch_client_metadata,
    is_metadata_url,
)
from trailmap.oauth.redirects import is_loopback_redirect, redirect_problem
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as account_store
from trailmap.storage import oauth as store

__all__ = [
    "ACCESS_TOKEN_SECONDS",
    "CODE_SECONDS",
    "SCOPE",
    "TrailmapAccessToken",
    "TrailmapAuthorizationCode",
    "TrailmapClient",
    "TrailmapOAuthProvider",
    "TrailmapRefreshToken",
    "is_loopback_redirect",
]

log = logging.getLogger(__name__)

SCOPE: Final = "read"  # read-only access to the organization's timeline (and, later, graph)
CODE_SECONDS: Final = 600
ACCESS_TOKEN_SECONDS: Final = 3600
REFRESH_TOKEN_SECONDS: Final = 90 * 86400
REQUEST_SECONDS: Final = 900  # to sign in and approve
MAX_PENDING_PER_CLIENT: Final = 1000  # requests awaiting consent, per client (a setting)
METADATA_FRESH_SECONDS: Final = 3600  # a Client ID Metadata Document is fetched again after
METADATA_STALE_SECONDS: Final = 86400  # ... and used while its host is down, up to this age
_US: Final = 1_000_000
# RFC 7636, section 4.1's alphabet and lengths; an S256 challenge is 43 base64url characters.
_CODE_CHALLENGE: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


class TrailmapClient(OAuthClientInformationFull):
    """A client whose loopback redirect URIs match on any port (RFC 8252, section 7.3)."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and is_loopback_redirect(str(redirect_uri)):
            asked = urlsplit(str(redirect_uri))
            for registered in self.redirect_uris or []:
                known = urlsplit(str(registered))
                if is_loopback_redirect(str(registered)) and (
                    known.hostname,
                    known.path,
                    known.query,
                ) == (asked.hostname, asked.path, asked.query):
                    return redirect_uri
            raise InvalidRedirectUriError(
                f"Redirect URI '{redirect_uri}' not registered for client"
            )
        return super().validate_redirect_uri(redirect_uri)


class TrailmapAuthorizationCode(AuthorizationCode):
    code_hash: str
    family_id: str
    org_id: str
    key_id: str


class TrailmapRefreshToken(RefreshToken):
    token_hash: str
    family_id: str
    org_id: str
    key_id: str


class TrailmapAccessToken(AccessToken):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    family_id: str
    principal: Principal
    key_last_used_us: int | None = None
    key_last_mcp_us: int | None = None


@dataclass(frozen=True)
class Approval:
    """Where to send the user's browser after they approved or denied."""

    redirect_to: str


def _scopes(text: str) -> list[str]:
    return text.split()


class TrailmapOAuthProvider:
    """`OAuthAuthorizationServerProvider` over Trailmap's database; any node serves any step."""

    def __init__(
        self,
        db: Database,
        *,
        issuer: str,
        resource: str,
        consent_path: str,
        metadata_outbound: OutboundPolicy | None = None,
        metadata_ca_file: str | None = None,
        max_pending_per_client: int = MAX_PENDING_PER_CLIENT,
    ) -> None:
        self._db = db
        self._max_pending = max_pending_per_client
        self.issuer = issuer.rstrip("/")
        self.resource = resource
        self._consent_url = self.issuer + consent_path
        # Anyone may name a document's URL: public addresses only, unless the operator said.
        self._metadata_outbound = metadata_outbound or OutboundPolicy.default().public_only()
        self._metadata_ca_file = metadata_ca_file

    # -- clients -------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        row = await self._db.read_one(store.get_client, client_id)
        if is_metadata_url(client_id):
            row = await self._metadata_client(client_id, row)
        if row is None:
            return None
        # The SDK compares the stored secret with the presented one; it is stored hashed, so
        # it is handed over hashed and the routes' client authenticator hashes what it is
        # given before comparing (oauth/routes.py).
        info = {**row["info"], "client_id": client_id, "client_secret": row["secret_hash"]}
        return TrailmapClient.model_validate(info)

    async def _metadata_client(
        self, client_id: str, cached: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The cached document while fresh; else fetched again (the stale copy serves for a
        while if its host is down)."""
        now_us = clock.now_us()
        age_us = None if cached is None else now_us - (cached["fetched_us"] or 0)
        if cached is not None and age_us is not None and age_us < METADATA_FRESH_SECONDS * _US:
            return cached
        try:
            client = await fetch_client_metadata(
                client_id,
                outbound=self._metadata_outbound,
                ca_file=self._metadata_ca_file,
            )
        except ClientMetadataError as error:
            log.warning("Client ID Metadata Document refused: %s", error)
            if cached is not None and age_us is not None and age_us < METADATA_STALE_SECONDS * _US:
                return cached
            return None
        if client.scope is None:
            client = client.model_copy(update={"scope": SCOPE})
        row = {
            "client_id": client_id,
            "kind": "metadata",
            "secret_hash": None,
            "info": client.model_dump(mode="json", exclude_none=True),
            "created_us": now_us,
            "fetched_us": now_us,
        }
        await self._db.write(store.save_metadata_client, row)
        return row

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        problem = metadata_problem(client_info)
        if problem is not None:
            raise RegistrationError(error="invalid_client_metadata", error_description=problem)
        for uri in client_info.redirect_uris or []:
            problem = redirect_problem(str(uri))
            if problem is not None:
                raise RegistrationError(error="invalid_redirect_uri", error_description=problem)
        if client_info.scope is None:
            client_info = client_info.model_copy(update={"scope": SCOPE})
        secret = client_info.client_secret
        info = client_info.model_dump(mode="json", exclude_none=True)
        info.pop("client_secret", None)
        row = {
            "client_id": client_info.client_id,
            "kind": "registered",
            "secret_hash": token_format.hash_token(secret) if secret else None,
            "info": info,
            "created_us": clock.now_us(),
            "fetched_us": None,
        }
        await self._db.write(store.insert_client, row)

    # -- authorization ---------------------------------------------------------------------

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Park the request in the database and send the browser to sign in and consent."""
        if not _CODE_CHALLENGE.fullmatch(params.code_challenge):
            raise AuthorizeError(
                error="invalid_request",
                error_description="code_challenge must be 43 to 128 characters of A-Z, a-z, "
                "0-9, '-', '.', '_' and '~': the base64url SHA-256 of the code_verifier, "
                "without padding (RFC 7636).",
            )
        if params.state is not None and len(params.state) > MAX_STATE_CHARS:
            raise AuthorizeError(
                error="invalid_request",
                error_description=f"state is {len(params.state)} characters long; at most "
                f"{MAX_STATE_CHARS} are accepted.",
            )
        resource = params.resource or self.resource
        if resource.rstrip("/") != self.resource.rstrip("/"):
            raise AuthorizeError(
                error="invalid_target",
                error_description=f"This server issues tokens for {self.resource} only.",
            )
        request_id = secrets.token_urlsafe(32)
        now_us = clock.now_us()
        row = {
            "request_hash": token_format.hash_token(request_id),
            "client_id": client.client_id,
            "params": {
                "state": params.state,
                # Each scope once: the SDK lets "read read read ..." through, as long as wished.
                "scopes": list(dict.fromkeys(params.scopes or [SCOPE])),
                "code_challenge": params.code_challenge,
                "redirect_uri": str(params.redirect_uri),
                "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
                "resource": self.resource,
            },
            "created_us": now_us,
            "expires_us": now_us + REQUEST_SECONDS * _US,
        }

        def _park(conn: Connection) -> bool:
            if store.count_requests(conn, client.client_id, now_us) >= self._max_pending:
                return False
            store.insert_request(conn, row)
            return True

        if not await self._db.write(_park):
            # Each pending request is a row anyone may cause; a client's are bounded, and they
            # go when answered or expired (oauth/retention.py).
            raise AuthorizeError(
                error="temporarily_unavailable",
                error_description=f"{self._max_pending} sign-ins for this client are waiting "
                f"for an answer; try again when some have been answered or expired (they "
                f"expire after {REQUEST_SECONDS // 60} minutes).",
            )
        return construct_redirect_uri(self._consent_url, request=request_id)

    async def pending(self, request_id: str) -> tuple[OAuthClientInformationFull, dict[str, Any]]:
        """The client and parameters of a request awaiting consent (for the consent page)."""
        row = await self._db.read_one(
            store.get_request, token_format.hash_token(request_id), clock.now_us()
        )
        client = None if row is None else await self.get_client(row["client_id"])
        if row is None or client is None:
            raise NotFound(
                "This sign-in request is unknown or has expired; start again from the app."
            )
        return client, cast("dict[str, Any]", row["params"])

    async def approve(
        self, request_id: str, *, user_id: str, org_slug: str, actor: Actor | None = None
    ) -> Approval:
        """The user approved: mint or reuse the organization's key for this client, and a
        code for the client's redirect URI."""
        client, params = await self.pending(request_id)
        org = await self._org_for_member(org_slug, user_id)
        key_id = await self._key_for(
            client, org_slug=org_slug, org_id=org.org_id, user_id=user_id, actor=actor
        )
        code = secrets.token_urlsafe(32)
        now_us = clock.now_us()
        row = {
            "code_hash": token_format.hash_token(code),
            "client_id": client.client_id,
            "org_id": org.org_id,
            "key_id": key_id,
            "user_id": user_id,
            "family_id": ids.new_id(),
            "redirect_uri": params["redirect_uri"],
            "redirect_uri_explicit": int(params["redirect_uri_provided_explicitly"]),
            "code_challenge": params["code_challenge"],
            "resource": params["resource"],
            "scopes": " ".join(params["scopes"]),
            "created_us": now_us,
            "expires_us": now_us + CODE_SECONDS * _US,
            "used_us": None,
        }

        def _issue(conn: Connection) -> bool:
            if store.take_request(conn, token_format.hash_token(request_id), now_us) is None:
                return False
            store.insert_code(conn, row)
            record(
                conn,
                org.org_id,
                "oauth.approved",
                actor or Actor(f"user {user_id}", user_id=user_id),
                target=client.client_name or client.client_id,
                details={"client_id": client.client_id},
            )
            return True

        if not await self._db.write(_issue):
            raise NotFound("This sign-in request was already answered; start again from the app.")
        return Approval(
            construct_redirect_uri(
                params["redirect_uri"], code=code, state=params["state"], iss=self.issuer
            )
        )

    async def deny(
        self, request_id: str, *, actor: Actor | None = None, org_slug: str | None = None
    ) -> Approval:
        """The user declined; the audit log of the organization they had chosen (if they
        are a member of it) says so."""
        client, params = await self.pending(request_id)
        membership = None
        if actor is not None and actor.user_id and org_slug:
            membership = await find_membership(self._db, actor.user_id, org_slug)

        def _deny(conn: Connection) -> None:
            store.take_request(conn, token_format.hash_token(request_id), clock.now_us())
            if membership is not None and actor is not None:
                record(
                    conn,
                    membership.org_id,
                    "oauth.denied",
                    actor,
                    target=client.client_name or client.client_id,
                    details={"client_id": client.client_id},
                )

        await self._db.write(_deny)
        return Approval(
            construct_redirect_uri(
                params["redirect_uri"],
                error="access_denied",
                error_description="The user declined access.",
                state=params["state"],
                iss=self.issuer,
            )
        )

    async def _org_for_member(self, org_slug: str, user_id: str) -> Membership:
        membership = await find_membership(self._db, user_id, org_slug)
        if membership is None:
            # The same answer for "no such organization" and "not yours": nothing to learn.
            raise Forbidden("You are not a member of that organization.")
        return membership

    async def _key_for(
        self,
        client: OAuthClientInformationFull,
        *,
        org_slug: str,
        org_id: str,
        user_id: str,
        actor: Actor | None,
    ) -> str:
        """The user's live key for this app in the organization: the one minted for this
        client, or for an earlier registration of the same app (the same name), which an
        app that registers again on each start would otherwise multiply; else a new one."""
        name = f"MCP — {client.client_name or client.client_id}"[:200]
        existing = await self._db.read_one(
            store.find_mcp_key, org_id, client.client_id, user_id, name
        )
        if existing is not None:
            return str(existing["id"])
        approver = actor.name if actor is not None and actor.user_id == user_id else None
        key, _token = await create_key(
            self._db,
            org_slug,
            name=name,
            scope="READ_ONLY",
            created_by=approver or f"OAuth approval by user {user_id}",
            user_id=user_id,
            oauth_client_id=client.client_id,
        )
        # The key's own token is never shown: the client holds OAuth tokens bound to the key.
        return key.id

    # -- codes and tokens ------------------------------------------------------------------

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> TrailmapAuthorizationCode | None:
        code_hash = token_format.hash_token(authorization_code)
        row = await self._db.read_one(store.get_code, code_hash)
        if row is None or row["client_id"] != client.client_id:
            return None
        if row["used_us"] is not None:
            # A replay: the code was stolen or the exchange raced. Revoke what it issued.
            await self._db.write(store.revoke_family, row["family_id"], clock.now_us())
            return None
        return TrailmapAuthorizationCode(
            code=authorization_code,
            scopes=_scopes(row["scopes"]),
            expires_at=row["expires_us"] / _US,
            client_id=row["client_id"],
            code_challenge=row["code_challenge"],
            redirect_uri=AnyUrl(row["redirect_uri"]),
            redirect_uri_provided_explicitly=bool(row["redirect_uri_explicit"]),
            resource=row["resource"],
            subject=row["user_id"],
            code_hash=code_hash,
            family_id=row["family_id"],
            org_id=row["org_id"],
            key_id=row["key_id"],
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: TrailmapAuthorizationCode
    ) -> OAuthToken:
        code = authorization_code
        now_us = clock.now_us()

        def _exchange(conn: Connection) -> tuple[str, str] | None:
            if not store.spend_code(conn, code.code_hash, now_us):
                return None
            return self._mint(conn, code, client_id=client.client_id, now_us=now_us)

        minted = await self._db.write(_exchange)
        if minted is None:
            await self._db.write(store.revoke_family, code.family_id, now_us)
            raise TokenError(error="invalid_grant", error_description="The code was already used.")
        return self._answer(*minted, scopes=code.scopes)

    async def spend_refused_code(self, client_id: str, authorization_code: str) -> None:
        """A redemption of the client's code was refused (a wrong verifier, say): that counts
        as its use, so a stolen code cannot be tried with one verifier after another
        (RFC 9700, section 2.1.1). Another client's failure leaves the code alone."""
        await self._db.write(
            store.spend_client_code,
            token_format.hash_token(authorization_code),
            client_id,
            clock.now_us(),
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> TrailmapRefreshToken | None:
        token_hash = token_format.hash_token(refresh_token)
        row = await self._db.read_one(store.get_token, token_hash, "refresh")
        if row is None or row["client_id"] != client.client_id or row["revoked_us"] is not None:
            return None
        if row["spent_us"] is not None:
            # Reuse of a rotated refresh token: one of the two holders is a thief.
            await self._db.write(store.revoke_family, row["family_id"], clock.now_us())
            return None
        return TrailmapRefreshToken(
            token=refresh_token,
            client_id=row["client_id"],
            scopes=_scopes(row["scopes"]),
            expires_at=None if row["expires_us"] is None else row["expires_us"] // _US,
            resource=row["resource"],
            subject=row["user_id"],
            token_hash=token_hash,
            family_id=row["family_id"],
            org_id=row["org_id"],
            key_id=row["key_id"],
        )

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: TrailmapRefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        old = refresh_token
        granted = scopes or old.scopes
        now_us = clock.now_us()

        def _rotate(conn: Connection) -> tuple[str, str] | None:
            if not store.spend_refresh_token(conn, old.token_hash, now_us):
                return None
            return self._mint(conn, old, client_id=client.client_id, now_us=now_us, scopes=granted)

        minted = await self._db.write(_rotate)
        if minted is None:
            await self._db.write(store.revoke_family, old.family_id, now_us)
            raise TokenError(
                error="invalid_grant", error_description="The refresh token was already used."
            )
        return self._answer(*minted, scopes=granted)

    def _mint(
        self,
        conn: Connection,
        grant: TrailmapAuthorizationCode | TrailmapRefreshToken,
        *,
        client_id: str,
        now_us: int,
        scopes: list[str] | None = None,
    ) -> tuple[str, str]:
        access = token_format.mint_token(token_format.ACCESS_TOKEN_PREFIX)
        refresh = token_format.mint_token(token_format.REFRESH_TOKEN_PREFIX)
        common = {
            "client_id": client_id,
            "org_id": grant.org_id,
            "key_id": grant.key_id,
            "user_id": grant.subject or "",
            "family_id": grant.family_id,
            "resource": grant.resource,
            "scopes": " ".join(scopes or grant.scopes),
            "created_us": now_us,
            "spent_us": None,
            "revoked_us": None,
        }
        store.insert_tokens(
            conn,
            [
                {
                    **common,
                    "token_hash": token_format.hash_token(access),
                    "kind": "access",
                    "expires_us": now_us + ACCESS_TOKEN_SECONDS * _US,
                },
                {
                    **common,
                    "token_hash": token_format.hash_token(refresh),
                    "kind": "refresh",
                    "expires_us": now_us + REFRESH_TOKEN_SECONDS * _US,
                },
            ],
        )
        return access, refresh

    @staticmethod
    def _answer(access: str, refresh: str, *, scopes: list[str]) -> OAuthToken:
        return OAuthToken(
            access_token=access,
            token_type="Bearer",  # noqa: S106 - the token type, not a secret
            expires_in=ACCESS_TOKEN_SECONDS,
            refresh_token=refresh,
            scope=" ".join(scopes),
        )

    async def load_access_token(self, token: str) -> TrailmapAccessToken | None:
        """The access token and who it speaks for; None unless live, unexpired and its key
        is live. Never raises for a bad token (the SDK's middleware would turn that into a
        500)."""
        if not token_format.is_well_formed(token, token_format.ACCESS_TOKEN_PREFIX):
            return None
        row = await self._db.read_one(store.get_token, token_format.hash_token(token), "access")
        now_us = clock.now_us()
        if row is None or row["revoked_us"] is not None:
            return None
        if row["expires_us"] is not None and row["expires_us"] <= now_us:
            return None
        if row["key_expires_us"] is not None and row["key_expires_us"] <= now_us:
            return None
        principal = key_principal(
            row, scope=row["key_scope"], key_id=row["key_id"], key_name=row["key_name"]
        )
        return TrailmapAccessToken(
            token=token,
            client_id=row["client_id"],
            scopes=_scopes(row["scopes"]),
            expires_at=None if row["expires_us"] is None else row["expires_us"] // _US,
            resource=row["resource"],
            subject=row["user_id"],
            family_id=row["family_id"],
            principal=principal,
            key_last_used_us=row["key_last_used_us"],
            key_last_mcp_us=row["key_last_mcp_us"],
        )

    async def touch(self, access: TrailmapAccessToken, resolution_seconds: int) -> None:
        """Record that the token's key reached MCP (at most once per `resolution_seconds`),
        so the API Keys and Connect pages show when an MCP client last called."""
        now_us = clock.now_us()
        last = access.key_last_mcp_us
        if last is None or now_us - last >= resolution_seconds * _US:
            key_id = access.principal.key_id or ""
            await self._db.write(
                account_store.touch_key, access.principal.org_id, key_id, now_us, mcp=True
            )

    async def exchange_identity_assertion(
        self,
        client: OAuthClientInformationFull,  # noqa: ARG002 - the protocol's signature
        params: IdentityAssertionParams,  # noqa: ARG002
    ) -> OAuthToken:
        """The enterprise ID-JAG grant (SEP-990) is not offered."""
        raise TokenError(
            error="unsupported_grant_type",
            error_description="This server does not accept identity assertions.",
        )

    async def revoke_token(self, token: TrailmapAccessToken | TrailmapRefreshToken) -> None:
        """RFC 7009: revoking either token ends the whole grant it belongs to."""
        await self._db.write(store.revoke_family, token.family_id, clock.now_us())
