"""CODEOWNERS read into a `Declared`: each service owned by the owners of the last rule that
matches its folder, as team nodes and `owned_by` edges (docs/declared-graph.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trailmap.graph.declared import Declared, Evidence, Skipped
from trailmap.ingest.yaml_safe import YamlRefused, read_text_inside

__all__ = ["CODEOWNERS_FILES", "find_codeowners", "owners_of", "read_codeowners"]

READER: Final = "codeowners"
# Where GitHub looks (first found wins), then GitLab's own folder.
CODEOWNERS_FILES: Final[tuple[str, ...]] = (
    ".github/CODEOWNERS",
    "CODEOWNERS",
    "docs/CODEOWNERS",
    ".gitlab/CODEOWNERS",
)
MAX_RULES: Final = 10_000
# A GitLab section: `[Name]`, `^[Optional]`, `[Name][2]`, then its default owners.
_SECTION: Final = re.compile(r"^\^?\[([^\]]+)\](?:\[\d+\])?(?:\s+(.*))?$")
_OWNER: Final = re.compile(
    r"^(?:@[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*|[^@\s]+@[^@\s]+\.[^@\s]+)$"
)


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: str
    regex: re.Pattern[str]
    owners: tuple[str, ...]
    section: str | None
    line: int


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            inner = pattern[i + 1 : end].replace("\\", "\\\\").replace("[", "\\[")
            inner = "^" + inner[1:] if inner.startswith("!") else inner
            out.append(f"[{inner}]")  # a character class, as in gitignore
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _compile(pattern: str) -> re.Pattern[str]:
    """A gitignore-style pattern as CODEOWNERS uses it: anchored at the root when it has a
    `/` before its end, else matching at any depth; a trailing `/` names a folder."""
    body = pattern.rstrip("/") or "**"
    anchored = "/" in body
    body = body.lstrip("/") or "**"
    prefix = "^" if anchored else "^(?:.*/)?"
    return re.compile(prefix + _translate(body) + "$")


def _rules(text: str, file: str, skipped: list[Skipped]) -> Iterator[Rule]:
    section: str | None = None
    defaults: tuple[str, ...] = ()
    count = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _SECTION.match(line)
        if found:
            section = found.group(1).strip()
            defaults = tuple((found.group(2) or "").split("#", 1)[0].split())
            continue
        parts = re.split(r"(?<!\\)\s+", line)
        pattern, owners = parts[0], []
        for token in parts[1:]:
            if token.startswith("#"):
                break
            owners.append(token)
        bad = [o for o in owners if not _OWNER.match(o)]
        if bad:
            skipped.append(Skipped(file, f"line {number}: not an owner: {bad[0][:40]}"))
            owners = [o for o in owners if o not in bad]
        count += 1
        if count > MAX_RULES:
            skipped.append(Skipped(file, f"more than {MAX_RULES} rules; the rest not read"))
            return
        try:
            regex = _compile(pattern)
        except re.error:
            skipped.append(Skipped(file, f"line {number}: pattern not understood"))
            continue
        yield Rule(pattern, regex, tuple(owners) or defaults, section, number)


# A file directly in the folder, whatever its name: `*` and `?` match it, `*.md` does not.
_ANY_FILE: Final = "\x00"


def _candidates(directory: str) -> tuple[str, list[str]]:
    """A file directly in the folder, and the folder with its ancestors (a rule naming a
    folder owns everything within it)."""
    clean = directory.strip("/")
    if clean in {"", "."}:
        return _ANY_FILE, []
    parts = clean.split("/")
    return f"{clean}/{_ANY_FILE}", ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _matches(rule: Rule, file: str, folders: list[str]) -> bool:
    if rule.regex.match(file):
        return True
    # `docs/*` owns the files in docs/, not those further down (GitHub's documented exception).
    if rule.pattern.endswith("/*"):
        return False
    return any(rule.regex.match(folder) for folder in folders)


def owners_of(rules: list[Rule], directory: str) -> list[Rule]:
    """The rules that decide who owns the files in `directory`: in each section, the last
    that matches (GitHub has one section; GitLab's sections each add theirs)."""
    last: dict[str | None, Rule] = {}
    file, folders = _candidates(directory)
    for rule in rules:
        if _matches(rule, file, folders):
            last[rule.section] = rule
    return list(last.values())


def find_codeowners(root: Path) -> str | None:
    """The CODEOWNERS file the forge would use: the first of `CODEOWNERS_FILES` present."""
    for name in CODEOWNERS_FILES:
        if (root / name).is_file() or (root / name).is_symlink():
            return name
    return None


def _owner_type(owner: str) -> str:
    if not owner.startswith("@"):
        return "email"
    return "team" if "/" in owner else "user"


def read_codeowners(root: Path, services: Mapping[str, str]) -> Declared:
    """Team nodes and `owned_by` edges for `services` (a node's name → its folder within the
    repository, e.g. from `compose.service_directories`). Owners are named as written
    (`@org/team`, `@user`, `a@b.example`)."""
    declared = Declared()
    name = find_codeowners(root)
    if name is None:
        return declared
    try:
        text = read_text_inside(root, Path(name))
    except YamlRefused as exc:
        declared.skipped.append(Skipped(name, str(exc)))
        return declared
    rules = list(_rules(text, name, declared.skipped))
    for service, directory in sorted(services.items()):
        for rule in owners_of(rules, directory):
            for owner in rule.owners:
                evidence = Evidence(READER, name, rule.line, f"{rule.pattern} → {owner}")
                node = declared.node(owner, "team", evidence)
                node.attributes["owner_type"] = _owner_type(owner)
                if owner.startswith("@") and "/" in owner:
                    # `@acme/payments-team` is the team a catalog calls `payments-team`.
                    node.aliases.add(owner.rsplit("/", 1)[1])
                declared.edge(service, owner, "owned_by", evidence)
    return declared
