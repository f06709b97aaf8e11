"""The Integrations pages for a cluster: an owner adds a Kubernetes integration with its
kubeconfig (never shown again), sees whether the server watches it and why it cannot."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.console.test_integrations_pages import _add, _browser
from tests.factories import make_org
from tests.integrations.support import SECRET_KEY
from tests.kube_api import kubeconfig
from trailmap.ingest.kubernetes_supervisor import Supervisor
from trailmap.outbound import OutboundPolicy
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
        secret_key=SECRET_KEY,
        kubernetes_poll_seconds=0,
    )


@pytest.fixture
async def owner(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    await make_org(db, slug="acme")
    return await _browser(db, new_browser, "ada@acme.example", "owner")


async def test_an_owner_adds_a_cluster_and_sees_its_watch_and_why_it_cannot_connect(
    owner: httpx.AsyncClient, db: Database
) -> None:
    config = kubeconfig("https://169.254.169.254", "a-token-never-shown")
    made = await _add(
        owner,
        kind="kubernetes",
        name="prod-cluster",
        kubeconfig=config,
        cluster="prod",
        env_map="default=production\nshop=production",
        namespaces="default, shop",
    )
    assert made.status_code == 303, made.text
    shown = await owner.get(made.headers["location"])
    assert shown.status_code == 200
    assert "a-token-never-shown" not in shown.text
    assert "set (stored encrypted, never shown)" in shown.text
    assert "<b id=watching>not watching</b>" in shown.text
    assert "<code>shop</code> → production" in shown.text
    assert "Rotate secret" not in shown.text  # a cluster has no webhook secret

    supervisor = Supervisor(
        db,
        secret_key=SECRET_KEY,
        outbound=OutboundPolicy.default(),
        max_event_bytes=10 * 1024,
        node="node-a",
    )
    await supervisor.reconcile()
    for _ in range(100):
        if not supervisor.watching:
            break
        await asyncio.sleep(0.02)
    await supervisor.stop()
    after = await owner.get(made.headers["location"])
    assert "id=watch-error" in after.text
    assert "cloud metadata address" in after.text
    listed = await owner.get("/orgs/acme/integrations")
    assert "not watching" in listed.text
    assert "<span class=error>error</span>" in listed.text


async def test_a_bad_namespace_map_is_shown_on_the_form_without_the_kubeconfig(
    owner: httpx.AsyncClient,
) -> None:
    bad = await _add(
        owner,
        kind="kubernetes",
        name="c",
        kubeconfig="apiVersion: v1 # secret-ish",
        env_map="Not A Namespace=prod",
    )
    assert bad.status_code == 400, bad.text
    assert "namespace" in bad.text
    assert "secret-ish" not in bad.text
