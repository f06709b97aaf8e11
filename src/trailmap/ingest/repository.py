"""A repository's whole declaration: every reader run over one checked-out tree (Compose,
Kubernetes manifests, Helm values and Skaffold, Backstage catalog files, CODEOWNERS), merged
into one `Declared`. Pure: it reads files under `root` and never raises on what they hold."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from trailmap.graph.declared import Declared, dependency_kind
from trailmap.ingest.backstage import read_catalog
from trailmap.ingest.codeowners import read_codeowners
from trailmap.ingest.compose import read_compose, service_directories
from trailmap.ingest.helm import read_helm_values, read_skaffold
from trailmap.ingest.manifests import one_walk, read_manifests

__all__ = ["read_repository"]


def read_repository(root: Path, *, env: Mapping[str, str] | None = None) -> Declared:
    """What the tree at `root` declares. `env` stands for the shell's environment in Compose
    interpolation. CODEOWNERS is read last, for the services whose folder the others told."""
    declared = Declared()
    with one_walk():  # the readers of YAML share one walk of the tree
        parts = (
            read_compose(root, env=env),
            read_manifests(root),
            read_helm_values(root),
            read_skaffold(root),
            read_catalog(root),
        )
    for part in parts:
        declared.merge(part)
    _resolve_references(declared)
    directories = service_directories(declared)
    if directories:
        declared.merge(read_codeowners(root, directories))
    return declared


# What a reference may reach: what runs and what is read, written or published to.
_TARGET_KINDS: Final = frozenset({"service", "database", "cache", "queue", "topic", "external_api"})
_CLUSTER_DNS: Final = re.compile(r"^([a-z0-9][a-z0-9-]*)\.[a-z0-9-]+\.svc(?:\.cluster\.local)?$")


def _resolve_references(declared: Declared) -> None:
    """Hosts a reader could not tell, looked up among what every reader declared: a manifest's
    CronJob naming a service only the Helm chart or Compose declares is a dependency. A host
    is a node's name or alias, or its cluster DNS form (`name.namespace.svc[.cluster.local]`);
    what matches no node, or more than one, stays unread."""
    names: dict[str, set[str]] = {}
    for node in declared.nodes.values():
        if node.kind in _TARGET_KINDS:
            for name in {node.name, *node.aliases}:
                names.setdefault(name.lower(), set()).add(node.name)
    for ref in declared.references:
        match = _CLUSTER_DNS.match(ref.host)
        found = names.get(ref.host) or (names.get(match.group(1)) if match else None) or set()
        if len(found) != 1:
            continue
        (target,) = found
        if target != ref.source and ref.source in declared.nodes:
            kind = dependency_kind(declared.nodes[target].kind)
            declared.edge(ref.source, target, kind, ref.evidence)
    declared.references.clear()
