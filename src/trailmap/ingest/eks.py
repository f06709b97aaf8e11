"""AWS EKS: clusters found with the AWS API, and the bearer token `aws eks get-token` makes
(a presigned STS GetCallerIdentity URL naming the cluster), for the Kubernetes watcher."""

from __future__ import annotations

import base64
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3
    from kubernetes_asyncio.client import ApiClient

__all__ = ["TOKEN_PREFIX", "EksCluster", "EksTokens", "api_client_for_eks", "find_clusters"]

TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 - the token format's prefix, not a secret
_URL_EXPIRES = 60  # seconds, as `aws eks get-token` signs it; EKS accepts the token 15 minutes
_REFRESH_AFTER = 45.0  # seconds: a new token well before the signed URL's expiry


@dataclass(frozen=True, slots=True)
class EksCluster:
    name: str
    endpoint: str
    certificate_authority: str  # base64 PEM, as DescribeCluster gives it
    region: str


def find_clusters(
    session: boto3.Session, region: str, names: tuple[str, ...] = ()
) -> list[EksCluster]:
    """The named clusters, or every cluster of the region when none is named."""
    eks = session.client("eks", region_name=region)
    if not names:
        found: list[str] = []
        for page in eks.get_paginator("list_clusters").paginate():
            found.extend(page.get("clusters", []))
        names = tuple(found)
    clusters = []
    for name in names:
        described = eks.describe_cluster(name=name)["cluster"]
        clusters.append(
            EksCluster(
                name=name,
                endpoint=str(described.get("endpoint") or ""),
                certificate_authority=str(
                    (described.get("certificateAuthority") or {}).get("data") or ""
                ),
                region=region,
            )
        )
    return clusters


class EksTokens:
    """Tokens for one cluster, made from the default credential chain (a role or keys) and
    made anew before the signed URL expires."""

    def __init__(self, session: boto3.Session, cluster: str, region: str) -> None:
        self._cluster = cluster
        self._sts = session.client("sts", region_name=region)
        self._sts.meta.events.register("before-sign.sts.GetCallerIdentity", self._name_the_cluster)
        self._token = ""
        self._made = 0.0

    def _name_the_cluster(self, request: Any, **_: Any) -> None:
        request.headers["x-k8s-aws-id"] = self._cluster

    def token(self) -> str:
        if not self._token or time.monotonic() - self._made > _REFRESH_AFTER:
            url = self._sts.generate_presigned_url(
                "get_caller_identity", Params={}, ExpiresIn=_URL_EXPIRES, HttpMethod="GET"
            )
            encoded = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
            self._token = TOKEN_PREFIX + encoded
            self._made = time.monotonic()
        return self._token


def api_client_for_eks(
    cluster: EksCluster,
    tokens: EksTokens,
    *,
    endpoint: str | None = None,
    tls_server_name: str | None = None,
) -> tuple[ApiClient, Path | None]:
    """A Kubernetes client for the cluster, its token renewed on each request as needed
    (`endpoint` an address to connect to instead, its certificate checked for
    `tls_server_name`). Returns the client and the CA file written for it, read once the
    client is made (for the caller to remove)."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    configuration = client.Configuration()
    configuration.host = endpoint or cluster.endpoint
    configuration.tls_server_name = tls_server_name
    ca_file: Path | None = None
    if cluster.certificate_authority:
        with tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False) as out:
            out.write(base64.b64decode(cluster.certificate_authority))
        ca_file = Path(out.name)
        configuration.ssl_ca_cert = str(ca_file)
    configuration.api_key_prefix["BearerToken"] = "Bearer"
    configuration.api_key["BearerToken"] = tokens.token()

    def refresh(config: Any) -> None:
        config.api_key["BearerToken"] = tokens.token()

    configuration.refresh_api_key_hook = refresh
    return client.ApiClient(configuration), ca_file
