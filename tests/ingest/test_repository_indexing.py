"""Repository integrations indexed from real git remotes on loopback (a bare repository over
file:// and over HTTP with `git http-backend`), on SQLite and PostgreSQL, and hostile
repositories each refused or skipped with a reason: a YAML bomb, a symlink out of the clone,
a 10 GB sparse file, a hook, a remote that stalls, an address the outbound guard refuses."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tenant
from tests.git_server import commit, git, make_repository, publish, serve_git
from tests.integrations.support import SECRET_KEY, make_integration
from trailmap.graph.learn.declared import declared_sources
from trailmap.ingest.clone import CloneLimits
from trailmap.ingest.repository_indexer import IndexOptions, RepositoryIndexer, index_repository
from trailmap.integrations.integrations import Integration
from trailmap.integrations.repositories import request_index
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

DEMO = Path(__file__).resolve().parent.parent / "fixtures/upstream/repositories/microservices-demo"
LOOPBACK = OutboundPolicy.parse("public,127.0.0.1/32")
BOMB = """\
services:
  api:
    image: nginx
    environment: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
x1: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
x2: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
x3: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
x4: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
x5: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
x6: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
x7: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
x8: [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""
COMPOSE = """\
services:
  api:
    image: example/api
    environment:
      DATABASE_URL: postgres://app@db:5432/app
  db:
    image: postgres:16
"""


def demo_files() -> dict[str, str | bytes]:
    return {str(p.relative_to(DEMO)): p.read_bytes() for p in DEMO.rglob("*") if p.is_file()}


def options(root: Path, **limits: Any) -> IndexOptions:
    return IndexOptions(
        local_roots=(str(root),),
        limits=CloneLimits(**limits),
        outbound=LOOPBACK,
        secret_key=SECRET_KEY,
    )


async def repository(
    db: Database, tenant: Tenant, url: str, *, name: str = "shop-repo", **settings: Any
) -> Integration:
    made, _secret = await make_integration(
        db, tenant.org, kind="repository", name=name, settings={"url": url, **settings}
    )
    return made


async def reading(db: Database, tenant: Tenant, integration: Integration) -> dict[str, Any]:
    found = [s for s in await declared_sources(db, tenant.org.id) if s["source"] == integration.id]
    assert found, "nothing recorded for the repository"
    return found[0]


async def test_a_bare_repository_over_file_is_indexed_with_its_commit(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    head = make_repository(tmp_path / "work", demo_files())
    bare = publish(tmp_path / "work", tmp_path / "shop.git")
    made = await repository(db, tenant, bare.as_uri())

    outcome = await index_repository(db, made, options(tmp_path))

    assert outcome.error is None
    assert outcome.revision == head
    shown = await reading(db, tenant, made)
    assert (shown["revision"], shown["nodes"], shown["edges"]) == (head, 13, 18)
    assert shown["error"] is None


async def test_a_remote_over_http_is_read_with_its_token_and_a_new_commit_removes_a_dependency(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    make_repository(work, demo_files())
    publish(work, tmp_path / "served" / "shop.git")
    with serve_git(tmp_path / "served", token="s3cret-token") as server:
        made = await repository(db, tenant, server.url("shop.git"), token="s3cret-token")
        first = await index_repository(db, made, options(tmp_path))
        assert first.error is None, first.error
        assert first.recorded is not None
        assert first.recorded.edges == 18  # the manifests' 17 and one to a Helm-only service
        # The token travels as an Authorization header, never in the URL.
        assert all("s3cret" not in path for path in server.requests)

        manifest = work / "kubernetes-manifests/checkoutservice.yaml"
        text = manifest.read_text()
        manifest.write_text(
            text.replace(
                '          - name: EMAIL_SERVICE_ADDR\n            value: "emailservice:5000"\n', ""
            )
        )
        second_head = commit(work, "checkout no longer mails")
        publish(work, tmp_path / "served" / "shop.git")
        second = await index_repository(db, made, options(tmp_path))

    assert second.revision == second_head
    assert second.recorded is not None
    assert (second.recorded.removed, second.recorded.edges) == (1, 17)
    assert (await reading(db, tenant, made))["revision"] == second_head


async def test_a_wrong_token_is_an_error_on_the_source_and_nothing_is_lost(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    make_repository(tmp_path / "work", demo_files())
    publish(tmp_path / "work", tmp_path / "served" / "shop.git")
    with serve_git(tmp_path / "served", token="right") as server:
        made = await repository(db, tenant, server.url("shop.git"), token="wrong")
        outcome = await index_repository(db, made, options(tmp_path))
    assert outcome.error is not None
    assert "git clone failed" in outcome.error
    assert (await reading(db, tenant, made))["error"] == outcome.error


async def test_local_paths_are_refused_unless_the_operator_allows_their_folder(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    make_repository(tmp_path / "allowed" / "work", {"compose.yaml": COMPOSE})
    made = await repository(db, tenant, str(tmp_path / "allowed" / "work"))

    nowhere = IndexOptions(outbound=LOOPBACK)
    refused = await index_repository(db, made, nowhere)
    assert refused.error is not None
    assert "TRAILMAP_REPOSITORY_PATHS" in refused.error

    elsewhere = await index_repository(db, made, options(tmp_path / "other"))
    assert elsewhere.error is not None
    assert "not within the folders" in elsewhere.error

    etc = await repository(db, tenant, "file:///etc", name="etc")
    outside = await index_repository(db, etc, options(tmp_path))
    assert outside.error is not None
    assert "not within the folders" in outside.error

    read = await index_repository(db, made, options(tmp_path / "allowed"))
    assert read.error is None
    assert read.recorded is not None
    assert read.recorded.edges == 1


async def test_a_yaml_bomb_is_skipped_with_its_reason_and_the_rest_is_read(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    make_repository(tmp_path / "work", {"bomb/compose.yaml": BOMB, "app/compose.yaml": COMPOSE})
    bare = publish(tmp_path / "work", tmp_path / "bomb.git")
    made = await repository(db, tenant, bare.as_uri())

    outcome = await index_repository(db, made, options(tmp_path))

    assert outcome.error is None
    assert outcome.recorded is not None
    assert outcome.recorded.edges == 1
    skipped = (await reading(db, tenant, made))["skipped"]
    assert any(s["file"] == "bomb/compose.yaml" for s in skipped), skipped


async def test_a_symlink_out_of_the_clone_is_not_followed(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    make_repository(work, {"app/compose.yaml": COMPOSE})
    (work / "compose.yaml").symlink_to("/etc/passwd")
    (work / "k8s").mkdir()
    (work / "k8s" / "deploy.yaml").symlink_to("../../../../../../etc/hostname")
    commit(work, "links out")
    bare = publish(work, tmp_path / "links.git")
    made = await repository(db, tenant, bare.as_uri())

    outcome = await index_repository(db, made, options(tmp_path))

    assert outcome.error is None
    assert outcome.recorded is not None
    assert outcome.recorded.edges == 1
    skipped = {s["file"]: s["reason"] for s in (await reading(db, tenant, made))["skipped"]}
    assert "symbolic link out of the repository" in skipped["compose.yaml"]
    assert "symbolic link out of the repository" in skipped["k8s/deploy.yaml"]


async def test_a_large_file_over_a_remote_is_never_fetched(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    big = os.urandom(4 * 1024 * 1024)  # random: no compression makes it small
    make_repository(tmp_path / "work", {"app/compose.yaml": COMPOSE, "data/big.yaml": big})
    publish(tmp_path / "work", tmp_path / "served" / "big.git")
    with serve_git(tmp_path / "served") as server:
        made = await repository(db, tenant, server.url("big.git"))
        outcome = await index_repository(db, made, options(tmp_path))

    assert outcome.error is None
    assert outcome.recorded is not None
    # The blob filter kept it on the server: the clone holds a few kilobytes, not 4 MiB.
    assert outcome.fetched_bytes < 256 * 1024, outcome.fetched_bytes
    skipped = {s["file"]: s["reason"] for s in (await reading(db, tenant, made))["skipped"]}
    assert skipped["data/big.yaml"] == f"larger than {1024 * 1024} bytes: not fetched"


async def test_a_10_gb_sparse_file_in_a_local_folder_is_never_read(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    folder = tmp_path / "plain"
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "compose.yaml").write_text(COMPOSE)
    with (folder / "compose.yaml").open("wb") as sparse:
        sparse.truncate(10 * 1024**3)
    made = await repository(db, tenant, str(folder))

    outcome = await index_repository(db, made, options(tmp_path))

    assert outcome.error is None
    assert outcome.recorded is not None
    assert outcome.revision is None  # a folder, not a git repository: no commit to tell
    skipped = {s["file"]: s["reason"] for s in (await reading(db, tenant, made))["skipped"]}
    assert "larger than" in skipped["compose.yaml"], skipped


async def test_a_hook_in_a_local_repository_never_runs(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    make_repository(work, {"compose.yaml": COMPOSE})
    marker = tmp_path / "hook-ran"
    for hook in (
        "post-checkout",
        "post-merge",
        "pre-upload-pack",
        "reference-transaction",
        "post-index-change",
        "fsmonitor-watchman",
    ):
        script = work / ".git" / "hooks" / hook
        script.write_text(f"#!/bin/sh\ntouch {marker}\n")
        script.chmod(0o755)
    made = await repository(db, tenant, str(work))

    outcome = await index_repository(db, made, options(tmp_path))

    assert outcome.error is None
    assert outcome.recorded is not None
    assert outcome.recorded.edges == 1
    assert not marker.exists()


async def test_a_remote_that_stalls_is_stopped_at_the_time_limit(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    with serve_git(tmp_path, stall=True) as server:
        made = await repository(db, tenant, server.url("slow.git"))
        started = asyncio.get_running_loop().time()
        outcome = await index_repository(db, made, options(tmp_path, seconds=1.5))
        took = asyncio.get_running_loop().time() - started
    assert outcome.error == "the clone took longer than 1.5 seconds and was stopped"
    assert took < 10
    assert server.requests  # it did connect: the stall was the server's


async def test_the_outbound_guard_refuses_a_loopback_remote_before_any_connection(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    with serve_git(tmp_path) as server:
        made = await repository(db, tenant, server.url("shop.git"))
        default = IndexOptions(outbound=OutboundPolicy.default())
        outcome = await index_repository(db, made, default)
        private = await repository(db, tenant, "http://10.1.2.3/shop.git", name="private")
        public_only = IndexOptions(outbound=OutboundPolicy.parse("public"))
        refused_private = await index_repository(db, private, public_only)
    assert outcome.error is not None
    assert outcome.error.startswith("refused by the outbound guard, nothing sent: 127.0.0.1")
    assert server.requests == []
    assert refused_private.error is not None
    assert "a private address" in refused_private.error


async def test_other_transports_and_credentials_in_the_url_are_refused(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    for name, url, says in (
        ("ssh", "ssh://git@github.com/acme/shop.git", "ssh"),
        ("scp", "git@github.com:acme/shop.git", "ssh"),
        ("ext", "ext::sh -c touch% /tmp/pwned", "ssh"),
        ("userinfo", "https://user:pw@github.com/acme/shop.git", "token setting"),
    ):
        made = await repository(db, tenant, url, name=name)
        outcome = await index_repository(db, made, options(tmp_path))
        assert outcome.error is not None, url
        assert says in outcome.error, (url, outcome.error)


async def test_the_indexer_indexes_what_is_asked_for_once_and_again_on_schedule(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    make_repository(tmp_path / "work", {"compose.yaml": COMPOSE})
    bare = publish(tmp_path / "work", tmp_path / "shop.git")
    made = await repository(db, tenant, bare.as_uri())
    one = RepositoryIndexer(db, options(tmp_path), node="one", every_seconds=3600)
    two = RepositoryIndexer(db, options(tmp_path), node="two", every_seconds=3600)

    assert await one.round() == [made.id]  # never indexed
    assert await two.round() == []  # indexed already, not due
    await request_index(db, tenant.org.id, made.id, who=None, reason="asked for")
    assert await two.round() == [made.id]
    assert await one.round() == []

    eager = RepositoryIndexer(db, options(tmp_path), node="three", every_seconds=0.001)
    await asyncio.sleep(0.01)
    assert await eager.round() == [made.id]


def test_git_http_backend_is_there() -> None:
    assert shutil.which("git") is not None


async def test_a_tree_naming_millions_of_paths_with_a_few_objects_is_refused(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    make_repository(work, {"compose.yaml": COMPOSE})
    blob = git("hash-object", "-w", "compose.yaml", cwd=work)
    leaf = _mktree(work, [f"100644 blob {blob}\tf{i}.yaml" for i in range(300)])
    middle = _mktree(work, [f"040000 tree {leaf}\td{i}" for i in range(300)])
    top = _mktree(work, [f"040000 tree {middle}\tm{i}" for i in range(300)])  # 27 million
    head = git("commit-tree", top, "-m", "a tree bomb", cwd=work)
    git("update-ref", "refs/heads/main", head, cwd=work)
    bare = publish(work, tmp_path / "bomb.git")
    made = await repository(db, tenant, bare.as_uri())

    outcome = await index_repository(db, made, options(tmp_path, seconds=30))

    assert outcome.error == "the repository holds more than 20000 files"


def _mktree(work: Path, lines: list[str]) -> str:
    return subprocess.run(
        ["git", "mktree"],
        input="\n".join(lines) + "\n",
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


async def test_a_local_repository_whose_objects_live_elsewhere_is_refused(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    make_repository(tmp_path / "outside" / "secret", {"compose.yaml": COMPOSE})
    inside = tmp_path / "allowed" / "work"
    inside.mkdir(parents=True)
    (inside / ".git").write_text(f"gitdir: {tmp_path / 'outside' / 'secret' / '.git'}\n")
    made = await repository(db, tenant, str(inside))
    outcome = await index_repository(db, made, options(tmp_path / "allowed"))
    assert outcome.error is not None
    assert ".git is a file or a link" in outcome.error


async def test_submodules_are_fetched_only_when_the_setting_asks(
    db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    make_repository(tmp_path / "lib", {"deploy/compose.yaml": COMPOSE})
    publish(tmp_path / "lib", tmp_path / "lib.git")
    work = tmp_path / "work"
    make_repository(work, {"README.md": "the shop\n"})
    git(
        *("-c", "protocol.file.allow=always", "submodule", "add", "-q"),
        *("../lib.git", "libs/lib"),
        cwd=work,
    )
    commit(work, "with a submodule")
    bare = publish(work, tmp_path / "shop.git")

    off = await repository(db, tenant, bare.as_uri(), name="off")
    skipped = await index_repository(db, off, options(tmp_path))
    assert skipped.recorded is not None
    assert skipped.recorded.edges == 0
    reasons = {s["file"]: s["reason"] for s in (await reading(db, tenant, off))["skipped"]}
    assert reasons["libs/lib"] == "a submodule: not fetched"

    on = await repository(db, tenant, bare.as_uri(), name="on", submodules="true")
    fetched = await index_repository(db, on, options(tmp_path))
    assert fetched.error is None, fetched.error
    assert fetched.recorded is not None
    assert fetched.recorded.edges == 1  # libs/lib/deploy/compose.yaml: api -> db

    # A submodule is checked as the repository is: here, outside the allowed folders.
    narrow = IndexOptions(
        local_roots=(str(tmp_path / "shop.git"),), outbound=LOOPBACK, secret_key=SECRET_KEY
    )
    again = await repository(db, tenant, bare.as_uri(), name="narrow", submodules="true")
    partial = await index_repository(db, again, narrow)
    assert partial.recorded is not None
    reasons = {s["file"]: s["reason"] for s in (await reading(db, tenant, again))["skipped"]}
    assert reasons["libs/lib"].startswith("a submodule not fetched: ")
    assert "not within the folders" in reasons["libs/lib"]
