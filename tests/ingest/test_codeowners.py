"""CODEOWNERS: services owned by the last matching rule for their folder, as team nodes and
`owned_by` edges; the Compose projects' folders joined to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trailmap.ingest.codeowners import read_codeowners
from trailmap.ingest.compose import read_compose, service_directories

AWESOME = Path(__file__).parents[1] / "fixtures/upstream/repositories/awesome-compose"

# Patterns as in GitHub's documentation of CODEOWNERS syntax.
GITHUB_STYLE = """\
# Default owners for everything in the repo.
*       @acme/platform

# Any folder named `build` at any depth.
build/  @acme/release
/apps/  @acme/apps @octocat
/apps/github
/docs/**/api  docs@example.com
**/logs @acme/observability
payments/*  @acme/payments   # a comment after the owners
[Ss]hop/  @acme/shop
"""


def owners(root: Path, services: dict[str, str]) -> dict[str, set[str]]:
    declared = read_codeowners(root, services)
    found: dict[str, set[str]] = {name: set() for name in services}
    for source, target, kind in declared.edges:
        assert kind == "owned_by"
        assert declared.nodes[target].kind == "team"
        found[source].add(target)
    return found


def test_the_last_matching_rule_decides_a_folders_owners(tmp_path: Path) -> None:
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github/CODEOWNERS").write_text(GITHUB_STYLE)
    found = owners(
        tmp_path,
        {
            "root": ".",
            "web": "apps/web",
            "gh": "apps/github/cli",
            "builder": "tools/build",
            "api-docs": "docs/v1/api",
            "collector": "infra/logs/agent",
            "pay": "payments",
            "pay-api": "payments/api",
            "other": "services/other",
            "shop": "Shop/web",
        },
    )
    assert found == {
        "root": {"@acme/platform"},
        "web": {"@acme/apps", "@octocat"},
        "gh": set(),  # a rule without owners: nobody owns it
        "builder": {"@acme/release"},
        "api-docs": {"docs@example.com"},
        "collector": {"@acme/observability"},
        "pay": {"@acme/payments"},
        "pay-api": {"@acme/platform"},  # `payments/*` owns files in payments/, not deeper
        "other": {"@acme/platform"},
        "shop": {"@acme/shop"},
    }


def test_team_nodes_say_what_kind_of_owner_and_evidence_gives_the_line(tmp_path: Path) -> None:
    (tmp_path / "CODEOWNERS").write_text(GITHUB_STYLE)
    declared = read_codeowners(tmp_path, {"web": "apps/web"})
    assert declared.nodes["@acme/apps"].attributes["owner_type"] == "team"
    assert declared.nodes["@octocat"].attributes["owner_type"] == "user"
    (evidence,) = declared.edges[("web", "@acme/apps", "owned_by")].evidence
    assert (evidence.reader, evidence.file, evidence.line) == ("codeowners", "CODEOWNERS", 6)
    assert evidence.detail == "/apps/ → @acme/apps"


def test_github_uses_the_first_codeowners_file_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/CODEOWNERS").write_text("* @from-docs\n")
    (tmp_path / "CODEOWNERS").write_text("* @from-root\n")
    assert owners(tmp_path, {"a": "a"}) == {"a": {"@from-root"}}


def test_gitlab_sections_each_add_their_owners(tmp_path: Path) -> None:
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab/CODEOWNERS").write_text(
        "* @acme/everyone\n"
        "[Backend] @acme/backend\n"
        "api/\n"
        "[Database][2] @acme/dba\n"
        "api/db/ @acme/data\n"
        "^[Docs]\n"
        "*.md @acme/writers\n"
        "/ui/*.ts @acme/frontend\n"
    )
    assert owners(tmp_path, {"api": "api", "db": "api/db", "ui": "ui"}) == {
        "api": {"@acme/everyone", "@acme/backend"},
        "db": {"@acme/everyone", "@acme/backend", "@acme/data"},
        "ui": {"@acme/everyone"},
    }


def test_compose_services_are_owned_through_their_build_contexts(tmp_path: Path) -> None:
    (tmp_path / "CODEOWNERS").write_text(
        "* @acme/platform\n"
        "/react-java-mysql/backend/ @acme/java\n"
        "/nginx-golang-postgres/ @acme/go\n"
    )
    folders = service_directories(read_compose(AWESOME))
    declared = read_codeowners(tmp_path, folders)
    owned = {(s, t) for (s, t, _) in declared.edges}
    assert ("react-java-mysql/backend", "@acme/java") in owned
    assert ("react-java-mysql/frontend", "@acme/platform") in owned
    assert ("nginx-golang-postgres/backend", "@acme/go") in owned
    assert ("proxy", "@acme/go") in owned
    assert ("redis", "@acme/platform") in owned
    assert len(owned) == len(folders)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only comments\n",
        "[unclosed @x\n",
        "* not-an-owner @ok\n",
        "\\#literal @x\n",
        "[[[ @x\n",
        "x[a[b]y @x\n",
        "[z-a]/ @x\n",
        "*" * 10_000 + " @x\n",
        "apps/\n" * 20_000,
    ],
)
def test_odd_codeowners_give_reasons_not_exceptions(tmp_path: Path, text: str) -> None:
    (tmp_path / "CODEOWNERS").write_text(text)
    declared = read_codeowners(tmp_path, {"a": "apps/a", "b": "."})
    for skipped in declared.skipped:
        assert skipped.reason


def test_an_owner_that_is_not_one_is_skipped_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "CODEOWNERS").write_text("* not-an-owner @ok\n")
    declared = read_codeowners(tmp_path, {"a": "a"})
    assert set(declared.nodes) == {"@ok"}
    assert [s.reason for s in declared.skipped] == ["line 1: not an owner: not-an-owner"]


def test_a_codeowners_symlinked_out_of_the_repository_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("* @evil\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "CODEOWNERS").symlink_to(tmp_path / "outside")
    declared = read_codeowners(root, {"a": "a"})
    assert declared.nodes == {}
    assert [s.file for s in declared.skipped] == ["CODEOWNERS"]
