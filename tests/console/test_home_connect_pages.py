"""The Home, Connect and Quick start pages of an organization over HTTP, on SQLite and
PostgreSQL: what a member sees, what an outsider does not, the read-only key made in place
(once, whatever the reloads), and the quick start's status answer."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import event, make_key, make_org
from tests.forms import Page, parse, sign_in
from trailmap.accounts import Organization, add_user, authenticate, list_keys
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
OWNER = "ada@acme.example"
MEMBER = "bob@acme.example"
OUTSIDER = "carol@other.example"
_WHOLE_TOKEN = re.compile(r"tmk_[0-9A-Za-z]{49}")


@dataclass(frozen=True)
class Acme:
    org: Organization
    slug: str
    member_id: str
    owner: httpx.AsyncClient
    member: httpx.AsyncClient
    outsider: httpx.AsyncClient
    api: httpx.AsyncClient  # no session: the REST API with keys


async def _signed_in(browser: httpx.AsyncClient, email: str) -> httpx.AsyncClient:
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


@pytest.fixture
async def acme(db: Database, new_browser: NewBrowser) -> Acme:
    org = await make_org(db, slug="acme")
    await add_user(db, OWNER, org_slug=org.slug, role="owner", password=PASSWORD)
    member = await add_user(db, MEMBER, org_slug=org.slug, role="member", password=PASSWORD)
    other = await make_org(db, slug="other")
    await add_user(db, OUTSIDER, org_slug=other.slug, role="owner", password=PASSWORD)
    return Acme(
        org=org,
        slug=org.slug,
        member_id=member.id,
        owner=await _signed_in(new_browser(), OWNER),
        member=await _signed_in(new_browser(), MEMBER),
        outsider=await _signed_in(new_browser(), OUTSIDER),
        api=new_browser(),
    )


async def _open(browser: httpx.AsyncClient, path: str) -> Page:
    response = await browser.get(path)
    assert response.status_code == 200, response.text
    return parse(response.text)


async def _send_event(acme: Acme, db: Database, **fields: object) -> None:
    key = await make_key(db, acme.org, scope="read-write")
    sent = await acme.api.post(
        "/api/v1/events", json=event(**fields), headers={"Authorization": f"Bearer {key}"}
    )
    assert sent.status_code in (200, 201, 202), sent.text


# -- Home ------------------------------------------------------------------------------------


async def test_a_new_organization_s_home_shows_both_first_step_cards_and_an_empty_graph(
    acme: Acme,
) -> None:
    home = await _open(acme.member, "/orgs/acme")
    assert "card-connect" in home.by_id
    assert "card-event" in home.by_id
    assert "No events yet" in home.by_id["latest-changes"]
    assert "The graph is empty" in home.by_id["graph-counts"]
    links = {link.href for link in home.links}
    assert {"/orgs/acme/connect", "/orgs/acme/quickstart"} <= links


async def test_the_event_card_goes_once_the_organization_has_an_event_which_home_lists(
    acme: Acme, db: Database
) -> None:
    described = {"description": "checkout v2 to production"}
    await _send_event(acme, db, id="ship-v2", version="v2.0.0", data=described)
    home = await _open(acme.member, "/orgs/acme")
    assert "card-event" not in home.by_id
    assert "card-connect" in home.by_id
    latest = home.by_id["latest-changes"]
    assert "deployment" in latest
    assert "v2.0.0" in latest
    assert "checkout v2 to production" in latest
    # Each change leads to its Event page.
    raw = (await acme.member.get("/orgs/acme")).text
    link = re.search(r"href='(/orgs/acme/events/ship-v2\?source=[^']+)'", raw)
    assert link, raw
    opened = await acme.member.get(html.unescape(link.group(1)))
    assert opened.status_code == 200
    assert "checkout v2 to production" in opened.text


async def test_home_lists_one_entry_per_change_newest_first(acme: Acme, db: Database) -> None:
    for version in ("v1", "v2", "v3", "v4", "v5", "v6"):
        await _send_event(acme, db, version=version)
    latest = (await _open(acme.member, "/orgs/acme")).by_id["latest-changes"]
    assert " v6 " in latest
    assert " v1 " not in latest  # a few: the newest five
    assert latest.index(" v6 ") < latest.index(" v5 ") < latest.index(" v2 ")


async def test_the_connect_card_goes_once_an_assistant_s_read_only_key_was_used(
    acme: Acme, db: Database
) -> None:
    reader = await make_key(db, acme.org, scope="read-only")
    asked = await acme.api.get("/api/v1/events", headers={"Authorization": f"Bearer {reader}"})
    assert asked.status_code == 200
    home = await _open(acme.member, "/orgs/acme")
    assert "card-connect" not in home.by_id


async def test_an_outsider_gets_the_same_not_found_for_home_connect_and_quick_start(
    acme: Acme,
) -> None:
    for path in ("/orgs/acme", "/orgs/acme/connect", "/orgs/acme/quickstart", "/orgs/nope"):
        answer = await acme.outsider.get(path)
        assert answer.status_code == 404, path
        assert "No organization of yours" in answer.text


async def test_someone_signed_out_is_sent_to_sign_in_and_back(new_browser: NewBrowser) -> None:
    answer = await new_browser().get("/orgs/acme/connect")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/login?next=%2Forgs%2Facme%2Fconnect"


async def test_the_console_leads_a_member_of_one_organization_to_its_home(acme: Acme) -> None:
    answer = await acme.member.get("/console")
    assert (answer.status_code, answer.headers["Location"]) == (303, "/orgs/acme")


async def test_the_console_lists_several_organizations_each_linking_to_its_home(
    acme: Acme, db: Database
) -> None:
    await make_org(db, slug="beta")
    await add_user(db, MEMBER, org_slug="beta", role="member", password=PASSWORD)
    listing = await _open(acme.member, "/console")
    homes = {link.href for link in listing.links}
    assert {"/orgs/acme", "/orgs/beta"} <= homes


async def test_every_org_page_links_home_connect_and_quick_start(acme: Acme) -> None:
    for path in ("/orgs/acme", "/orgs/acme/keys", "/orgs/acme/connect"):
        links = {(link.href, link.text) for link in (await _open(acme.member, path)).links}
        assert ("/orgs/acme", "Home") in links
        assert ("/orgs/acme/connect", "Connect") in links
        assert ("/orgs/acme/quickstart", "Quick start") in links


# -- Connect ---------------------------------------------------------------------------------


async def test_connect_shows_the_mcp_url_and_the_commands_built_from_the_public_url(
    acme: Acme,
) -> None:
    connect = await _open(acme.member, "/orgs/acme/connect")
    url = "http://127.0.0.1:8000/mcp"  # the test settings' public URL
    assert connect.by_id["mcp-url"] == url
    assert connect.by_id["cmd-oauth"] == f"claude mcp add --transport http trailmap {url}"
    assert connect.by_id["cmd-key"] == (
        f"claude mcp add --transport http trailmap {url} "
        '--header "Authorization: Bearer ${TRAILMAP_API_KEY}"'
    )
    assert f'"url": "{url}"' in connect.by_id["mcp-json"]
    assert "/console/copy.js" in connect.scripts


async def test_the_key_button_makes_one_read_only_key_and_a_reload_makes_none(
    acme: Acme, db: Database
) -> None:
    connect = await _open(acme.member, "/orgs/acme/connect")
    form = connect.form("/orgs/acme/connect/key")
    made = await acme.member.post(form.action, data=form.data(name="laptop claude"))
    assert made.status_code == 303
    shown = await acme.member.get(made.headers["Location"])
    assert shown.status_code == 200
    token = parse(shown.text).by_id["token"]
    assert _WHOLE_TOKEN.fullmatch(token)
    assert token in parse(shown.text).by_id["cmd-with-token"]
    keys = [k for k in await list_keys(db, "acme") if k.name == "laptop claude"]
    assert [(k.scope, k.user_id) for k in keys] == [("READ_ONLY", acme.member_id)]
    again = await acme.member.get(made.headers["Location"])
    assert again.status_code == 200
    assert token not in again.text
    assert "shown once" in parse(again.text).by_id["token-gone"]
    assert len([k for k in await list_keys(db, "acme") if k.name == "laptop claude"]) == 1


async def test_the_key_button_without_the_form_s_csrf_token_makes_no_key(
    acme: Acme, db: Database
) -> None:
    before = len(await list_keys(db, "acme"))
    refused = await acme.member.post("/orgs/acme/connect/key", data={"name": "forged"})
    assert refused.status_code == 403
    assert len(await list_keys(db, "acme")) == before


async def test_an_outsider_cannot_make_a_key_in_another_organization(
    acme: Acme, db: Database
) -> None:
    own = parse((await acme.outsider.get("/orgs/other/connect")).text)
    data = own.form("/orgs/other/connect/key").data(name="sneaky")
    refused = await acme.outsider.post("/orgs/acme/connect/key", data=data)
    assert refused.status_code == 404
    assert [k for k in await list_keys(db, "acme") if k.name == "sneaky"] == []


async def test_a_made_key_s_token_is_not_shown_to_another_member(acme: Acme) -> None:
    form = (await _open(acme.member, "/orgs/acme/connect")).form("/orgs/acme/connect/key")
    made = await acme.member.post(form.action, data=form.data(name="mine"))
    peek = await acme.owner.get(made.headers["Location"])
    assert _WHOLE_TOKEN.search(peek.text) is None


async def test_a_key_s_last_mcp_call_shows_on_connect_and_an_api_query_does_not_count(
    acme: Acme, db: Database
) -> None:
    form = (await _open(acme.member, "/orgs/acme/connect")).form("/orgs/acme/connect/key")
    made = await acme.member.post(form.action, data=form.data(name="assistant"))
    token = parse((await acme.member.get(made.headers["Location"])).text).by_id["token"]
    key_id = made.headers["Location"].rsplit("/", 1)[1]
    before = (await _open(acme.member, "/orgs/acme/connect")).rows[key_id]
    assert "no MCP call yet" in before
    used = await acme.api.get("/api/v1/events", headers={"Authorization": f"Bearer {token}"})
    assert used.status_code == 200
    queried = (await _open(acme.member, "/orgs/acme/connect")).rows[key_id]
    assert "no MCP call yet" in queried
    # What the MCP endpoint's admission does with the key (a real MCP call over HTTP is in
    # test_home_connect_browser.py).
    await authenticate(db, token, mcp=True)
    after = (await _open(acme.member, "/orgs/acme/connect")).rows[key_id]
    assert "connected just now" in after


async def test_a_member_sees_their_own_assistant_keys_and_an_owner_sees_every_one(
    acme: Acme, db: Database
) -> None:
    form = (await _open(acme.member, "/orgs/acme/connect")).form("/orgs/acme/connect/key")
    made = await acme.member.post(form.action, data=form.data(name="bobs assistant"))
    bobs = made.headers["Location"].rsplit("/", 1)[1]
    await make_key(db, acme.org, scope="read-only", name="ci reader")  # a service account's
    await make_key(db, acme.org, scope="read-write", name="ci writer")  # no assistant's key
    by_name = {k.name: k.id for k in await list_keys(db, "acme")}
    member_sees = set((await _open(acme.member, "/orgs/acme/connect")).rows)
    owner_sees = set((await _open(acme.owner, "/orgs/acme/connect")).rows)
    assert member_sees == {bobs}
    assert owner_sees == {bobs, by_name["ci reader"]}


async def test_a_blank_key_name_is_refused_on_the_connect_page(acme: Acme, db: Database) -> None:
    form = (await _open(acme.member, "/orgs/acme/connect")).form("/orgs/acme/connect/key")
    refused = await acme.member.post(form.action, data=form.data(name="  "))
    assert refused.status_code == 400
    assert "name" in " ".join(parse(refused.text).errors)


# -- Quick start -----------------------------------------------------------------------------


async def test_quick_start_fills_in_this_server_s_url_and_waits(acme: Acme) -> None:
    quick = await _open(acme.member, "/orgs/acme/quickstart")
    assert '"http://127.0.0.1:8000/api/v1/events"' in quick.by_id["send-curl"]
    assert "export TRAILMAP_URL=http://127.0.0.1:8000" in quick.by_id["send-cli"]
    assert " send --type deployment " in quick.by_id["send-cli"]
    assert "secrets.TRAILMAP_API_KEY" in quick.by_id["send-ci"]
    assert "Waiting for your first event" in quick.by_id["first-event"]
    assert "/console/quickstart.js" in quick.scripts


async def test_the_quick_start_status_says_received_once_an_event_arrives(
    acme: Acme, db: Database
) -> None:
    waiting = await acme.member.get("/orgs/acme/quickstart/status")
    assert waiting.status_code == 200
    assert waiting.json() == {"success": True, "data": {"received": False, "latest": None}}
    await _send_event(acme, db, source="//github.com/acme/payments")
    received = (await acme.member.get("/orgs/acme/quickstart/status")).json()["data"]
    assert received["received"] is True
    assert received["latest"]["source"] == "//github.com/acme/payments"
    quick = await _open(acme.member, "/orgs/acme/quickstart")
    assert "Received: deployment from //github.com/acme/payments" in quick.by_id["first-event"]


async def test_the_quick_start_status_answers_outsiders_and_strangers_in_json(
    acme: Acme, new_browser: NewBrowser
) -> None:
    outsider = await acme.outsider.get("/orgs/acme/quickstart/status")
    assert outsider.status_code == 404
    assert outsider.json()["code"] == "NOT_FOUND"
    stranger = await new_browser().get("/orgs/acme/quickstart/status")
    assert stranger.status_code == 401
    assert stranger.json()["success"] is False


async def test_the_quick_start_script_is_served_from_this_server(acme: Acme) -> None:
    script = await acme.member.get("/console/quickstart.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "data-poll" in script.text
