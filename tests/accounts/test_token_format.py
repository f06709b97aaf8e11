"""docs/api.md's "Token format" is exact: its regular expression, its checksum recipe and its
gitleaks rule, read from the page, recognise every token Trailmap mints and nothing else."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from trailmap.accounts.tokens import (
    ACCESS_TOKEN_PREFIX,
    API_KEY_PREFIX,
    REFRESH_TOKEN_PREFIX,
    TokenPrefix,
    is_well_formed,
    mint_token,
)

_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_PREFIXES: tuple[TokenPrefix, ...] = (API_KEY_PREFIX, ACCESS_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX)


def _section() -> str:
    page = _PAGE.read_text(encoding="utf-8")
    start = page.index("## Token format")
    return page[start : page.index("\n## ", start + 1)]


def _block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", _section(), re.DOTALL)
    assert match, f"no {language} block in docs/api.md's Token format"
    return match.group(1)


@pytest.fixture(scope="module")
def pattern() -> re.Pattern[str]:
    return re.compile(_block("regex").strip())


@pytest.fixture(scope="module")
def has_checksum() -> Callable[[str], bool]:
    namespace: dict[str, object] = {}
    exec(_block("python"), namespace)  # noqa: S102 - the documentation's own recipe
    recipe = namespace["has_trailmap_checksum"]
    assert callable(recipe)
    return recipe


@pytest.fixture(scope="module")
def minted() -> list[str]:
    return [mint_token(prefix) for prefix in _PREFIXES for _ in range(300)]


def test_the_documented_pattern_finds_every_minted_token_where_it_is_pasted(
    pattern: re.Pattern[str], minted: list[str]
) -> None:
    for token in minted:
        assert len(token) == 53
        for text in (token, f"TRAILMAP_API_KEY={token}\n", f'"Bearer {token}",', f"`{token}`"):
            assert pattern.findall(text) == [token], text


def test_the_documented_pattern_ignores_near_misses(
    pattern: re.Pattern[str], minted: list[str]
) -> None:
    token = minted[0]
    for near in (
        token[:-1],  # one short
        token + "x",  # one long
        "tmx_" + token[4:],  # another prefix
        "xtmk_" + token[4:],  # inside a word
        token[:20] + "-" + token[21:],  # outside the alphabet
    ):
        assert pattern.findall(near) == [], near


def test_the_documented_checksum_recipe_agrees_with_the_server_on_tokens_and_typos(
    has_checksum: Callable[[str], bool], minted: list[str]
) -> None:
    for token in minted:
        assert has_checksum(token)
        for position in (4, 25, 46, 47, 52):  # the body's first, middle, last; the checksum
            other = "1" if token[position] != "1" else "2"
            typo = token[:position] + other + token[position + 1 :]
            assert not has_checksum(typo)
            assert not is_well_formed(typo)
        assert not has_checksum(token[:-1])


def test_the_documented_gitleaks_rule_parses_and_finds_each_kind_of_token(
    minted: list[str],
) -> None:
    config = tomllib.loads(_block("toml"))
    assert config["extend"] == {"useDefault": True}
    (rule,) = config["rules"]
    assert rule["id"] == "trailmap-token"
    assert set(rule["keywords"]) == set(_PREFIXES)
    compiled = re.compile(rule["regex"])
    for token in minted:
        found = compiled.search(f"export TRAILMAP_API_KEY={token}")
        assert found is not None
        assert found.group(rule["secretGroup"]) == token
