"""The safe YAML loader: plain data with each key's line, and refusals for bombs, depth, size
and paths out of the repository."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trailmap.ingest import yaml_safe
from trailmap.ingest.yaml_safe import (
    YamlRefused,
    inside_root,
    load_yaml_documents,
    read_text_inside,
)

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_documents_keep_the_line_of_each_key() -> None:
    text = "services:\n  api:\n    image: nginx\n    environment:\n      - A=b\n---\n---\nx: 1\n"
    docs = load_yaml_documents(text, file="compose.yaml")
    assert [d.data for d in docs] == [
        {"services": {"api": {"image": "nginx", "environment": ["A=b"]}}},
        {"x": 1},
    ]
    assert docs[0].line("services", "api") == 2
    assert docs[0].line("services", "api", "environment", 0) == 5
    assert docs[0].line("services", "api", "nowhere") == 2
    assert docs[1].line("x") == 8


def test_merge_keys_and_small_aliases_are_read() -> None:
    text = "base: &b {image: redis}\ncache:\n  <<: *b\n  ports: [1]\n"
    (doc,) = load_yaml_documents(text, file="x.yaml")
    assert doc.data["cache"] == {"image": "redis", "ports": [1]}


@pytest.mark.parametrize("libyaml", [True, False])
def test_a_billion_laughs_is_refused_fast(libyaml: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_safe, "_WITH_LIBYAML", libyaml)
    started = time.monotonic()
    with pytest.raises(YamlRefused, match="aliases"):
        load_yaml_documents(BILLION_LAUGHS, file="bomb.yaml")
    assert time.monotonic() - started < 1.0


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(YamlRefused):
        load_yaml_documents("a: &a [*a]\n", file="loop.yaml")


@pytest.mark.parametrize("libyaml", [True, False])
def test_deep_nesting_is_refused_before_the_stack_overflows(
    libyaml: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yaml_safe, "_WITH_LIBYAML", libyaml)
    assert load_yaml_documents("[" * 64 + "]" * 64, file="ok.yaml")
    started = time.monotonic()
    with pytest.raises(YamlRefused, match=r"deeper|nesting depth"):
        load_yaml_documents("[" * 10_000 + "]" * 10_000, file="deep.yaml")
    # Pure-Python PyYAML looks up to 1024 characters ahead for a simple key, so its refusal
    # costs about half a second whatever the size; libyaml's costs milliseconds.
    assert time.monotonic() - started < (1.0 if libyaml else 3.0)


def test_a_huge_file_is_refused_unread() -> None:
    with pytest.raises(YamlRefused, match="larger"):
        load_yaml_documents("a: " + "x" * (1024 * 1024), file="big.yaml")


@pytest.mark.parametrize(
    "text", ["a: [1", "!!python/object:os.system {}", "a: !!binary 'no'", "{[1]: 2}", "\t- x"]
)
def test_unsafe_or_broken_yaml_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(YamlRefused) as caught:
        load_yaml_documents(text, file="bad.yaml")
    assert str(caught.value)


def test_paths_out_of_the_root_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "secret.yaml").write_text("a: 1\n")
    (root / "ok.yaml").write_text("a: 1\n")
    (root / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    assert inside_root(root, Path("ok.yaml")) == (root / "ok.yaml").resolve()
    assert inside_root(root, Path("../secret.yaml")) is None
    assert inside_root(root, tmp_path / "secret.yaml") is None
    assert read_text_inside(root, Path("ok.yaml")) == "a: 1\n"
    for bad in ("../secret.yaml", "link.yaml", "/etc/passwd"):
        with pytest.raises(YamlRefused, match="outside"):
            read_text_inside(root, Path(bad))
    with pytest.raises(YamlRefused, match="no such"):
        read_text_inside(root, Path("missing.yaml"))
