"""A scripted browser for the OAuth flow: it follows the redirects, signs in and answers the
consent page by filling the real forms (read with tests/forms.py), as a person would."""

from __future__ import annotations

from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

from tests.forms import parse

__all__ = ["Browser"]


class Browser:
    """One browser (one cookie jar). `nodes` collects which server process answered each of
    its requests, from the test load balancer's `X-Trailmap-Node` header."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=30.0)
        self.nodes: list[str] = []

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, url: str, data: dict[str, str] | None = None
    ) -> httpx.Response:
        response = await self.http.request(method, url, data=data)
        if "x-trailmap-node" in response.headers:
            self.nodes.append(response.headers["x-trailmap-node"])
        return response

    async def get(self, url: str) -> httpx.Response:
        return await self.request("GET", url)

    async def submit(
        self, page: httpx.Response, extra: dict[str, str], *, action_contains: str = ""
    ) -> httpx.Response:
        """Submit the first form of `page` whose action contains `action_contains`."""
        chosen = [f for f in parse(page.text).forms if action_contains in f.action]
        assert chosen, (
            f"no form with {action_contains!r} on {page.url} ({page.status_code}):\n{page.text}"
        )
        form = chosen[0]
        data = form.data(**extra)
        return await self.request(form.method.upper(), urljoin(str(page.url), form.action), data)

    async def sign_in(
        self, base: str, email: str, password: str, next_path: str = "/console"
    ) -> httpx.Response:
        page = await self.get(f"{base}/login?next={next_path}")
        return await self.submit(page, {"email": email, "password": password})

    async def authorize(
        self,
        authorize_url: str,
        *,
        email: str,
        password: str,
        organization: str,
        action: str = "approve",
    ) -> dict[str, str]:
        """From the client's authorization URL to the parameters of the redirect back to the
        client (code, state, iss; or error): the user signs in if needed, then answers."""
        back = await self.redirect_back(
            authorize_url, email=email, password=password, organization=organization, action=action
        )
        return dict(parse_qsl(urlsplit(back).query))

    async def redirect_back(
        self,
        authorize_url: str,
        *,
        email: str,
        password: str,
        organization: str,
        action: str = "approve",
    ) -> str:
        """The URL the browser is sent back to the client with, once the user signed in (if
        needed) and answered the consent page."""
        response = await self.get(authorize_url)
        assert response.status_code == 302, response.text
        consent_url = response.headers["location"]
        page = await self.get(consent_url)
        if page.status_code == 303:  # not signed in yet
            login = await self.get(urljoin(consent_url, page.headers["location"]))
            signed = await self.submit(login, {"email": email, "password": password})
            assert signed.status_code == 303, signed.text
            page = await self.get(urljoin(consent_url, signed.headers["location"]))
        assert page.status_code == 200, page.text
        answered = await self.submit(
            page, {"organization": organization, "action": action}, action_contains="consent"
        )
        assert answered.status_code == 303, answered.text
        return answered.headers["location"]
