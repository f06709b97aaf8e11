"""Which repository integrations a forge's push names: remotes compared by host and path,
whatever their spelling (https or ssh, `.git` or not, case, credentials)."""

from __future__ import annotations

import json

import pytest

from tests.integrations.support import fixture_bytes
from trailmap.ingest.deliveries import _repository_urls
from trailmap.integrations.repositories import remote_key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://github.com/Acme/Shop.git", "github.com/acme/shop"),
        ("https://github.com/acme/shop", "github.com/acme/shop"),
        ("git@github.com:acme/shop.git", "github.com/acme/shop"),
        ("ssh://git@github.com/acme/shop.git", "github.com/acme/shop"),
        (
            "https://token@gitlab.example.com/group/sub/shop.git/",
            "gitlab.example.com/group/sub/shop",
        ),
        ("http://127.0.0.1:8080/shop.git", "127.0.0.1:8080/shop"),
        ("https://github.com/", None),
        ("/srv/repos/shop", None),
    ],
)
def test_a_remote_is_known_by_its_host_and_path(url: str, key: str | None) -> None:
    assert remote_key(url) == key


def test_a_github_and_a_gitlab_push_name_their_repository_in_every_spelling() -> None:
    github = json.loads(fixture_bytes("github-webhooks", "push.new-branch.json"))
    assert {remote_key(u) for u in _repository_urls(github)} == {
        "github.com/codertocat/hello-world"
    }
    gitlab = json.loads(fixture_bytes("gitlab-webhooks", "push.json"))
    keys = {remote_key(u) for u in _repository_urls(gitlab)} - {None}
    assert len(keys) == 1, keys
