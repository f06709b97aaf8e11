"""EKS: clusters found through moto's AWS API server on loopback, the token made as
`aws eks get-token` makes it, and the watcher following the cluster with that token (over
TLS, trusting the CA the cluster's description gives)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import trustme
from moto.server import ThreadedMotoServer

from tests.kube_api import KubeApi
from tests.upstream import UPSTREAM
from trailmap.ingest.eks import (
    TOKEN_PREFIX,
    EksCluster,
    EksTokens,
    api_client_for_eks,
    find_clusters,
)
from trailmap.ingest.kubernetes_watch import FileStateStore, KubernetesWatcher, WatchOptions

REGION = "eu-west-1"


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
def session(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    """The default credential chain, as the agent uses it: keys in the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    session = boto3.Session(region_name=REGION)
    eks = session.client("eks")
    for name in ("prod", "staging"):
        if name not in eks.list_clusters()["clusters"]:
            eks.create_cluster(
                name=name,
                roleArn="arn:aws:iam::123456789012:role/eks",
                resourcesVpcConfig={"subnetIds": []},
            )
    return session


def _decode(token: str) -> str:
    assert token.startswith(TOKEN_PREFIX)
    encoded = token.removeprefix(TOKEN_PREFIX)
    assert "=" not in encoded  # base64url without padding
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def test_every_cluster_of_the_region_is_found_with_its_endpoint_and_ca(
    session: boto3.Session,
) -> None:
    clusters = {cluster.name: cluster for cluster in find_clusters(session, REGION)}
    assert {"prod", "staging"} <= clusters.keys()
    assert clusters["prod"].endpoint.startswith("https://")
    assert clusters["prod"].certificate_authority
    (named,) = find_clusters(session, REGION, ("staging",))
    assert named.name == "staging"


def test_the_token_is_a_presigned_get_caller_identity_naming_the_cluster(
    session: boto3.Session,
) -> None:
    tokens = EksTokens(session, "prod", REGION)
    token = tokens.token()
    url = urlsplit(_decode(token))
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert query["Action"] == "GetCallerIdentity"
    assert query["X-Amz-Expires"] == "60"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-SignedHeaders"].split(";") == ["host", "x-k8s-aws-id"]
    assert query["X-Amz-Credential"].startswith("AKIAEXAMPLE/")
    assert f"/{REGION}/sts/aws4_request" in query["X-Amz-Credential"]
    assert tokens.token() == token  # kept until it is due for renewal


@pytest.mark.anyio
async def test_the_watcher_follows_an_eks_cluster_with_its_token_over_tls(
    session: boto3.Session, tmp_path: Path
) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    seen_tokens: list[str] = []

    def accept(token: str) -> bool:
        seen_tokens.append(token)
        return "x-k8s-aws-id" in _decode(token)

    cluster_api = KubeApi(accept=accept)
    deployment = json.loads((UPSTREAM / "kubernetes" / "deployment.available.json").read_text())
    cluster_api.load("Deployment", [deployment])
    url = await cluster_api.start(server_context)
    (found,) = find_clusters(session, REGION, ("prod",))
    # The cluster as described, its CA the one that signed the loopback server's certificate.
    cluster = EksCluster(
        name=found.name,
        endpoint=found.endpoint,
        certificate_authority=base64.b64encode(authority.cert_pem.bytes()).decode(),
        region=REGION,
    )
    client, ca_file = api_client_for_eks(cluster, EksTokens(session, "prod", REGION), endpoint=url)
    events: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def sink(batch: list[dict[str, Any]]) -> None:
        events.extend(batch)
        arrived.set()

    watcher = KubernetesWatcher(
        client,
        sink,
        FileStateStore(tmp_path / "prod.json"),
        WatchOptions(cluster="prod", kinds=("Deployment",), save_interval=0.05),
    )
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.ready.wait(), 10)
        new = copy.deepcopy(deployment)
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "6"
        new["spec"]["template"]["spec"]["containers"][0]["image"] = "demo:0.9"
        await cluster_api.apply(new | {"kind": "Deployment"})
        await asyncio.wait_for(arrived.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await cluster_api.stop()
        if ca_file is not None:
            ca_file.unlink()
    (event,) = events
    assert (event["type"], event["version"]) == ("deployment", "0.9")
    assert event["source"].startswith("//prod/")
    assert seen_tokens
    assert all(token.startswith(TOKEN_PREFIX) for token in seen_tokens)
