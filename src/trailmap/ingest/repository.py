"""A repository's whole declaration: every reader run over one checked-out tree (Compose,
Kubernetes manifests, Helm values and Skaffold, Backstage catalog files, CODEOWNERS), merged
into one `Declared`. Pure: it reads files under `root` and never raises on what they hold."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trailmap.graph.declared import Declared
from trailmap.ingest.backstage import read_catalog
from trailmap.ingest.codeowners import read_codeowners
from trailmap.ingest.compose import read_compose, service_directories
from trailmap.ingest.helm import read_helm_values, read_skaffold
from trailmap.ingest.manifests import read_manifests

__all__ = ["read_repository"]


def read_repository(root: Path, *, env: Mapping[str, str] | None = None) -> Declared:
    """What the tree at `root` declares. `env` stands for the shell's environment in Compose
    interpolation. CODEOWNERS is read last, for the services whose folder the others told."""
    declared = Declared()
    for part in (
        read_compose(root, env=env),
        read_manifests(root),
        read_helm_values(root),
        read_skaffold(root),
        read_catalog(root),
    ):
        declared.merge(part)
    directories = service_directories(declared)
    if directories:
        declared.merge(read_codeowners(root, directories))
    return declared
