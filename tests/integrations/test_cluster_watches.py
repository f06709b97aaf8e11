"""Cluster integrations watched inside the server, on SQLite and PostgreSQL: the supervisor
starts a watch per active kubernetes integration on the one node holding its lease, keeps
its state in the database, and shows why a watch cannot run (the outbound guard, a
kubeconfig that would run a command)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import trustme
from moto.server import ThreadedMotoServer

from tests.conftest import Tenant
from tests.integrations.support import SECRET_KEY
from tests.kube_api import KubeApi, kubeconfig
from tests.upstream import UPSTREAM
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.app import create_app
from trailmap.errors import ValidationFailed
from trailmap.ingest.kubernetes_supervisor import Supervisor
from trailmap.integrations.integrations import (
    Integration,
    create_integration,
    get_integration,
    update_integration,
)
from trailmap.outbound import OutboundPolicy
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio
FIXTURES = UPSTREAM / "kubernetes"
LOOPBACK = OutboundPolicy.parse("public,127.0.0.1/32")


def deployment(revision: int = 5, tag: str = "0.9", *, done: bool = True) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((FIXTURES / "deployment.available.json").read_text())
    if revision == 5:
        return obj
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    meta["annotations"]["deployment.kubernetes.io/revision"] = str(revision)
    meta["generation"] = revision
    new["spec"]["template"]["spec"]["containers"][0]["image"] = f"gcr.io/heptio-images/demo:{tag}"
    new["status"]["observedGeneration"] = revision
    new["status"]["updatedReplicas"] = 1 if done else 0
    new["status"]["conditions"][1]["reason"] = (
        "NewReplicaSetAvailable" if done else "ReplicaSetUpdated"
    )
    return new


@pytest.fixture
async def cluster() -> AsyncIterator[KubeApi]:
    api = KubeApi()
    api.load("Deployment", [deployment()])
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


async def until(condition: Callable[[], Any], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = condition()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


async def make_cluster(
    db: Database, tenant: Tenant, config: str, *, name: str = "prod-cluster"
) -> Integration:
    integration, _secret = await create_integration(
        db,
        tenant.org.id,
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        kind="kubernetes",
        name=name,
        settings={"kubeconfig": config, "cluster": "prod", "env_map": {"default": "production"}},
        secret_key=SECRET_KEY,
    )
    return integration


def supervisor(db: Database, node: str, **options: Any) -> Supervisor:
    return Supervisor(
        db,
        secret_key=SECRET_KEY,
        outbound=options.pop("outbound", LOOPBACK),
        max_event_bytes=10 * 1024,
        poll_seconds=0.1,
        lease_seconds=options.pop("lease_seconds", 1.5),
        save_interval=0.05,
        node=node,
        **options,
    )


async def status(db: Database, tenant: Tenant, integration: Integration) -> dict[str, Any]:
    found = await get_integration(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    shown: dict[str, Any] = found.as_json()["watch"]
    return shown


async def deployments(http: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    answer = await http.get(
        "/api/v1/events", params={"from": "-1h", "type": "deployment"}, headers=tenant.auth()
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["data"]["events"]
    return events


@pytest.fixture
async def http(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        kubernetes_poll_seconds=0,
    )
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_two_supervisors_on_one_database_watch_a_cluster_once_and_hand_it_over(
    cluster: KubeApi, db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    first, second = supervisor(db, "node-a"), supervisor(db, "node-b")
    runs = {s.node: asyncio.create_task(s.run()) for s in (first, second)}
    try:
        await until(lambda: first.watching or second.watching)
        await until(cluster.watch_requests)
        for _ in range(5):  # rounds in which the other could try to take it
            await asyncio.sleep(0.1)
            assert len(first.watching | second.watching) == 1
            assert not (first.watching and second.watching)
        holder, other = (first, second) if first.watching else (second, first)
        shown = await status(db, tenant, integration)
        assert (shown["watching"], shown["node"]) == (True, holder.node)

        await cluster.apply(deployment(6, "1.0"))
        await until(lambda: deployments(http, tenant))
        await asyncio.sleep(0.3)  # the state is saved (at most each 0.05 s here)

        # Counted before the holder stops (nothing awaits in between): the other node's
        # watch may ask before the test sees it watching.
        requests = len(cluster.watch_requests())
        runs.pop(holder.node).cancel()  # this node stops: its lease is released
        await until(lambda: other.watching)
        await until(lambda: len(cluster.watch_requests()) > requests)
        await asyncio.sleep(0.3)
        # Resumed from the state the first node saved: the rollout is not reported again.
        assert len(await deployments(http, tenant)) == 1
        assert (await status(db, tenant, integration))["node"] == other.node

        await cluster.apply(deployment(7, "1.1"))
        await until(lambda: _count(http, tenant, 2))
        assert (await status(db, tenant, integration))["last_event"] is not None
    finally:
        for run in runs.values():
            run.cancel()
        await asyncio.gather(*runs.values(), return_exceptions=True)


async def _count(http: httpx.AsyncClient, tenant: Tenant, wanted: int) -> bool:
    return len(await deployments(http, tenant)) == wanted


async def test_disabling_the_integration_stops_its_watch_and_releases_the_lease(
    cluster: KubeApi, db: Database, tenant: Tenant
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    one = supervisor(db, "node-a")
    run = asyncio.create_task(one.run())
    try:
        await until(lambda: one.watching)
        await update_integration(
            db,
            tenant.org.id,
            integration.id,
            {"status": "disabled"},
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
        )
        await until(lambda: not one.watching)
        assert (await status(db, tenant, integration))["watching"] is False
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_a_kubeconfig_naming_the_metadata_address_is_refused_without_connecting(
    db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig("https://169.254.169.254", "stolen"))
    one = supervisor(db, "node-a", outbound=OutboundPolicy.parse("public,0.0.0.0/0"))
    await one.reconcile()
    await until(lambda: not one.watching)
    shown = await status(db, tenant, integration)
    assert "refused by the outbound guard" in shown["last_error"]
    assert "cloud metadata address" in shown["last_error"]
    answer = await http.get(f"/api/v1/integrations/{integration.id}", headers=tenant.admin_auth())
    assert answer.status_code == 200, answer.text
    assert "cloud metadata address" in answer.json()["data"]["watch"]["last_error"]
    await one.stop()


async def test_a_kubeconfig_that_would_run_a_command_on_the_server_is_refused(
    db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    config = (
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters:\n- name: x\n  cluster:\n    server: https://example.com\n"
        "contexts:\n- name: x\n  context:\n    cluster: x\n    user: x\n"
        "users:\n- name: x\n  user:\n    exec:\n      command: touch\n"
        "      args: [/tmp/trailmap-pwned]\n      apiVersion: client.authentication.k8s.io/v1\n"
    )
    with pytest.raises(ValidationFailed, match="no exec"):
        await make_cluster(db, tenant, config)
    answer = await http.post(
        "/api/v1/integrations",
        headers=tenant.admin_auth(),
        json={
            "kind": "kubernetes",
            "name": "c",
            "settings": {"kubeconfig": "a: [b\n  token: s3cret"},
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"][0]["field"] == "settings.kubeconfig"
    assert "s3cret" not in answer.text


async def test_a_cluster_that_refuses_the_token_shows_the_401_as_the_last_error(
    cluster: KubeApi, db: Database, tenant: Tenant
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig(cluster.url, "not-the-token"))
    one = supervisor(db, "node-a")
    run = asyncio.create_task(one.run())
    try:

        async def failed() -> bool:
            return "401" in ((await status(db, tenant, integration))["last_error"] or "")

        await until(failed)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_cluster_settings_are_checked_and_shown(db: Database, tenant: Tenant) -> None:
    integration = await make_cluster(db, tenant, "apiVersion: v1\n")
    shown = integration.as_json()
    assert shown["settings"]["env_map"] == {"default": "production"}
    assert shown["watch"]["watching"] is False
    with pytest.raises(Exception, match="namespace"):
        await update_integration(
            db,
            tenant.org.id,
            integration.id,
            {"settings": {"env_map": {"Not A Namespace": "x"}}},
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
        )


async def test_an_eks_integration_finds_its_cluster_with_the_servers_aws_identity(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through moto's AWS API on loopback: the cluster is described with the server's own
    credentials and its endpoint checked by the guard before any connection (moto's
    endpoint is a name that does not resolve, so the watch says so)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        eks = boto3.Session(region_name="eu-west-1").client("eks")
        if "prod" not in eks.list_clusters()["clusters"]:  # moto's state is per process
            eks.create_cluster(
                name="prod",
                roleArn="arn:aws:iam::123456789012:role/eks",
                resourcesVpcConfig={"subnetIds": []},
            )
        found, _ = await create_integration(
            db,
            tenant.org.id,
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
            kind="eks",
            name="prod-eks",
            settings={"region": "eu-west-1", "cluster": "prod"},
            secret_key=SECRET_KEY,
        )
        missing, _ = await create_integration(
            db,
            tenant.org.id,
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
            kind="eks",
            name="no-such-cluster",
            settings={"region": "eu-west-1", "cluster": "nope"},
            secret_key=SECRET_KEY,
        )
        one = supervisor(db, "node-a")
        await one.reconcile()
        await until(lambda: not one.watching)
        await one.stop()
    finally:
        server.stop()
    shown = await status(db, tenant, found)
    assert "the API server cannot be reached" in shown["last_error"]
    assert ".eks.amazonaws.com does not resolve" in shown["last_error"]
    assert "EKS: ResourceNotFoundException" in (await status(db, tenant, missing))["last_error"]


async def test_a_change_of_settings_restarts_the_watch_with_them(
    cluster: KubeApi, db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    one = supervisor(db, "node-a")
    run = asyncio.create_task(one.run())
    try:
        await until(lambda: one.watching)
        await until(cluster.watch_requests)
        before = (await status(db, tenant, integration))["since"]
        # Counted before the change: the restarted watch may ask before `restarted` is seen.
        requests = len(cluster.watch_requests())
        await update_integration(
            db,
            tenant.org.id,
            integration.id,
            {"settings": {"cluster": "renamed", "env_map": {"default": "staging"}}},
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
        )

        async def restarted() -> bool:
            shown = await status(db, tenant, integration)
            return bool(shown["watching"] and shown["since"] != before)

        await until(restarted)
        await until(lambda: len(cluster.watch_requests()) > requests)
        await cluster.apply(deployment(6, "1.0"))
        await until(lambda: deployments(http, tenant))
        (event,) = await deployments(http, tenant)
        assert event["source"].startswith("//renamed/")
        assert event["subject"] == "staging"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


def _private_directories() -> set[Path]:
    """The directories the kubeconfig's CA and keys are written to while a client is made."""
    return set(Path(tempfile.gettempdir()).glob("trailmap-kube-*"))


async def test_a_cluster_over_tls_is_trusted_by_the_kubeconfigs_ca_and_leaves_no_file(
    db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    secured = KubeApi()
    secured.load("Deployment", [deployment()])
    url = await secured.start(server_context)
    ca = base64.b64encode(authority.cert_pem.bytes()).decode()
    config = kubeconfig(url, secured.token).replace(
        f"    server: {url}\n", f"    server: {url}\n    certificate-authority-data: {ca}\n"
    )
    before = _private_directories()
    integration = await make_cluster(db, tenant, config)
    one = supervisor(db, "node-a")
    run = asyncio.create_task(one.run())
    try:
        await until(secured.watch_requests)
        assert _private_directories() == before
        await secured.apply(deployment(6, "1.0"))
        await until(lambda: deployments(http, tenant))
        assert (await status(db, tenant, integration))["last_error"] is None
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await secured.stop()


async def test_a_corrected_kubeconfig_clears_the_error_and_is_watched(
    cluster: KubeApi, db: Database, tenant: Tenant
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig("https://169.254.169.254", "x"))
    one = supervisor(db, "node-a")
    run = asyncio.create_task(one.run())
    try:

        async def refused() -> bool:
            return bool((await status(db, tenant, integration))["last_error"])

        await until(refused)
        await update_integration(
            db,
            tenant.org.id,
            integration.id,
            {"settings": {"kubeconfig": kubeconfig(cluster.url, cluster.token)}},
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
            secret_key=SECRET_KEY,
        )
        await until(cluster.watch_requests)
        shown = await status(db, tenant, integration)
        assert (shown["watching"], shown["last_error"]) == (True, None)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
