"""An eks integration watched by the server's supervisor, on SQLite and PostgreSQL: moto
describes the cluster, a test host name over TLS; its finished rollout lands on the timeline."""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
import trustme
from moto.eks.models import eks_backends
from moto.server import ThreadedMotoServer

from tests.conftest import Tenant
from tests.integrations.support import SECRET_KEY
from tests.integrations.test_cluster_watches import deployment, deployments, supervisor, until
from tests.kube_api import KubeApi
from trailmap.app import create_app
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.learn.declared import declared_sources
from trailmap.graph.model import Node
from trailmap.ingest.eks import TOKEN_PREFIX
from trailmap.outbound import OutboundPolicy, OutboundRefused
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio
REGION = "eu-west-1"
TEST_HOST = "kube.test"  # a reserved name (RFC 2606): no resolver answers it


class WithTestHost(OutboundPolicy):
    """The outbound guard as configured, with one difference: TEST_HOST resolves to
    127.0.0.1 here (as a name in /etc/hosts would), and that address is still judged by it."""

    async def resolve(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        if host != TEST_HOST:
            return await super().resolve(host, port)
        address = ip_address("127.0.0.1")
        why = self.refusal(address)
        if why is not None:
            raise OutboundRefused(f"{host} resolves to {address}, which {why}")
        return [address]


@dataclass
class Cluster:
    """The EKS cluster of a test: its name, its API, what that API was shown."""

    name: str
    api: KubeApi
    tokens: list[str] = field(default_factory=list)  # the bearer tokens, in order
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, per handshake


@pytest.fixture
async def http(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        kubernetes_poll_seconds=0,  # the test runs its own supervisor
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="module")
def aws_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own AWS identity from the default chain: keys in the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def _decoded(token: str) -> dict[str, str]:
    """The query of the presigned STS URL an EKS token carries."""
    encoded = token.removeprefix(TOKEN_PREFIX)
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
async def eks_cluster(aws: None) -> AsyncIterator[Cluster]:
    """A cluster made through moto's EKS API whose described endpoint and CA are those of a
    loopback test API server (its certificate naming TEST_HOST only), which accepts an EKS
    token naming a cluster."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(TEST_HOST).configure_cert(server_context)
    cluster = Cluster(f"shop-{uuid.uuid4().hex[:8]}", KubeApi())

    def accept(token: str) -> bool:
        cluster.tokens.append(token)
        if not token.startswith(TOKEN_PREFIX):
            return False
        query = _decoded(token)
        return (
            query.get("Action") == "GetCallerIdentity"
            and "x-k8s-aws-id" in query.get("X-Amz-SignedHeaders", "").split(";")
            and query.get("X-Amz-Credential", "").startswith("AKIAEXAMPLE/")
        )

    def note_server_name(_: Any, name: str | None, __: ssl.SSLContext) -> None:
        cluster.server_names.append(name)

    server_context.sni_callback = note_server_name
    cluster.api.accept = accept
    cluster.api.load("Deployment", [deployment()])
    url = await cluster.api.start(server_context)
    eks = boto3.Session(region_name=REGION).client("eks")
    made = eks.create_cluster(
        name=cluster.name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": []},
    )["cluster"]
    account = made["arn"].split(":")[4]
    # moto serves from this process: the cluster it made now describes the test server.
    described = eks_backends[account][REGION].clusters[cluster.name]
    described.endpoint = url.replace("127.0.0.1", TEST_HOST)
    described.certificate_authority = {
        "data": base64.b64encode(authority.cert_pem.bytes()).decode()
    }
    try:
        yield cluster
    finally:
        eks.delete_cluster(name=cluster.name)
        await cluster.api.stop()


async def test_an_eks_integration_puts_a_finished_rollout_of_its_cluster_on_the_timeline(
    eks_cluster: Cluster, db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    name, api = eks_cluster.name, eks_cluster.api
    described = boto3.Session(region_name=REGION).client("eks").describe_cluster(name=name)
    assert described["cluster"]["endpoint"].startswith(f"https://{TEST_HOST}:")
    made = await http.post(
        "/api/v1/integrations",
        headers=tenant.admin_auth(),
        json={
            "kind": "eks",
            "name": "shop-eks",
            "settings": {"region": REGION, "cluster": name, "env_map": {"default": "production"}},
        },
    )
    assert made.status_code == 201, made.text
    path = f"/api/v1/integrations/{made.json()['data']['id']}"

    async def watch() -> dict[str, Any]:
        shown = await http.get(path, headers=tenant.admin_auth())
        assert shown.status_code == 200, shown.text
        found: dict[str, Any] = shown.json()["data"]["watch"]
        return found

    sessions: list[str] = []

    def eks_session(region: str) -> boto3.Session:
        sessions.append(region)
        return boto3.Session(region_name=region)

    one = supervisor(
        db,
        "node-a",
        outbound=WithTestHost.parse("127.0.0.1/32"),  # loopback only, no public address
        eks_session=eks_session,
    )
    run = asyncio.create_task(one.run())
    try:
        await until(api.watch_requests)
        await api.apply(deployment(6, "1.0"))
        await until(lambda: deployments(http, tenant))
        (event,) = await deployments(http, tenant)
        shown = await watch()
        # The cluster is read into the graph too, as the integration's declarations.
        await until(lambda: _declared(db, tenant, "guestbook-ui"))
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert sessions == [REGION]
    # TLS checked the described endpoint's name (the certificate names no address).
    assert set(eks_cluster.server_names) == {TEST_HOST}
    assert eks_cluster.tokens
    assert all(token.startswith(TOKEN_PREFIX) for token in eks_cluster.tokens)
    assert _decoded(eks_cluster.tokens[0])["X-Amz-Expires"] == "60"
    assert (event["service"], event["subject"], event["version"]) == (
        "guestbook-ui",
        "production",
        "1.0",
    )
    assert event["source"].startswith(f"//{name}/apis/apps/v1/")
    assert (shown["watching"], shown["node"], shown["last_error"]) == (True, "node-a", None)
    assert shown["last_event"] is not None
    node = await _declared(db, tenant, "guestbook-ui")
    assert node is not None
    assert (node.environment, node.sources) == ("production", ("cluster",))
    sources = await declared_sources(db, tenant.org.id)
    assert [(s["kind"], s["label"], s["error"]) for s in sources] == [("eks", "shop-eks", None)]


async def _declared(db: Database, tenant: Tenant, name: str) -> Node | None:
    graph = await snapshot_for(db, tenant.org.id, at_us=None, stale_after_us=7 * 86_400_000_000)
    return next((n for n in graph.nodes if n.name == name), None)


async def test_an_eks_endpoint_whose_address_the_guard_refuses_is_never_connected_to(
    eks_cluster: Cluster, db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    made = await http.post(
        "/api/v1/integrations",
        headers=tenant.admin_auth(),
        json={
            "kind": "eks",
            "name": "shop-eks",
            "settings": {"region": REGION, "cluster": eks_cluster.name},
        },
    )
    assert made.status_code == 201, made.text
    one = supervisor(db, "node-a", outbound=WithTestHost.parse("public"))  # no loopback
    await one.reconcile()
    await until(lambda: not one.watching)
    await one.stop()
    shown = await http.get(
        f"/api/v1/integrations/{made.json()['data']['id']}", headers=tenant.admin_auth()
    )
    assert shown.status_code == 200, shown.text
    watch = shown.json()["data"]["watch"]
    assert watch["watching"] is False
    assert "refused by the outbound guard" in watch["last_error"]
    assert f"{TEST_HOST} resolves to 127.0.0.1, which is a loopback address" in watch["last_error"]
    assert (eks_cluster.api.requests, eks_cluster.server_names) == ([], [])
