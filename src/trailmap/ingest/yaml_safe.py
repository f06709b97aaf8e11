"""YAML from a repository, read safely: PyYAML's SafeLoader with limits on size, nesting depth
and alias expansion (a "billion laughs" is refused at once), keeping each key's line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "YamlDoc",
    "YamlRefused",
    "as_list",
    "as_mapping",
    "inside_root",
    "load_yaml_documents",
    "read_text_inside",
]

MAX_YAML_BYTES: Final = 1024 * 1024
MAX_YAML_DEPTH: Final = 64
# Nodes visited with every alias expanded: what a document is worth once read. A compose file
# or a manifest has hundreds; a YAML bomb has billions and is refused when it passes this.
MAX_YAML_NODES: Final = 100_000

YamlPath: TypeAlias = tuple[str | int, ...]


class YamlRefused(Exception):
    """The YAML was not read: too large, too deep, too many aliases, or not YAML. The message
    is the reason, in a few words, without the file's content."""


@dataclass(slots=True)
class YamlDoc:
    """One document: its data (plain dicts, lists and scalars), its file, and the line (from
    1) of each key or item by its path, e.g. `("services", "api", "environment")`."""

    data: Any
    file: str
    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line(self, *path: str | int) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        key: YamlPath = tuple(path)
        while key:
            found = self.lines.get(key)
            if found is not None:
                return found
            key = key[:-1]
        return self.lines.get(())


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader refusing documents nested deeper than the limit while composing them (the
    composer recurses, so depth is checked before Python's stack is)."""

    max_depth: int = MAX_YAML_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        if self._depth > self.max_depth:
            raise YamlRefused(f"nested deeper than {self.max_depth} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_WITH_LIBYAML: Final = bool(getattr(yaml, "__with_libyaml__", False))
_OPEN: Final = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE: Final = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _check_depth(source: str, max_depth: int) -> None:
    """Refuse nesting deeper than `max_depth` from libyaml's events (its parser keeps a stack
    of its own, so depth costs no recursion), before anything recursive composes them."""
    depth = 0
    for event in yaml.parse(source, Loader=yaml.CSafeLoader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > max_depth:
                raise YamlRefused(f"nested deeper than {max_depth} levels")
        elif isinstance(event, _CLOSE):
            depth -= 1


def _count(node: Node, budget: list[int], depth: int, max_depth: int) -> None:
    """Visit the node tree with aliases expanded (an alias is the same node object met again)
    and spend one from the budget per node; refuse when it runs out."""
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlRefused("too many nodes once aliases are expanded (a YAML bomb?)")
    if depth > max_depth:
        raise YamlRefused(f"nested deeper than {max_depth} levels once aliases are expanded")
    if isinstance(node, SequenceNode):
        for item in node.value:
            _count(item, budget, depth + 1, max_depth)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            _count(key, budget, depth + 1, max_depth)
            _count(value, budget, depth + 1, max_depth)


def _lines(node: Node, path: YamlPath, out: dict[YamlPath, int], depth: int) -> None:
    if depth > MAX_YAML_DEPTH:
        return
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            out.setdefault((*path, index), item.start_mark.line + 1)
            _lines(item, (*path, index), out, depth + 1)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                child = (*path, str(key.value))
                out.setdefault(child, key.start_mark.line + 1)
                _lines(value, child, out, depth + 1)


def load_yaml_documents(
    text: str | bytes,
    *,
    file: str,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> list[YamlDoc]:
    """Every document in `text` (empty ones left out); `YamlRefused` with the reason when the
    text is over a limit or not YAML. Only plain YAML types are built (SafeLoader)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise YamlRefused(f"larger than {max_bytes} bytes")
    try:
        source = raw.decode("utf-8-sig") if isinstance(text, bytes) else text
    except UnicodeDecodeError as exc:
        raise YamlRefused("not UTF-8 text") from exc
    budget = [max_nodes]
    docs: list[YamlDoc] = []
    loader: Any = None
    try:
        if _WITH_LIBYAML:  # libyaml: checked for depth on its events, then composed in C
            _check_depth(source, max_depth)
            loader = yaml.CSafeLoader(source)
        else:
            loader = _LimitedLoader(source)
            loader.max_depth = max_depth
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _count(node, budget, 0, max_depth)
            data = loader.construct_document(node)
            if data is None:
                continue
            lines: dict[YamlPath, int] = {(): node.start_mark.line + 1}
            _lines(node, (), lines, 0)
            docs.append(YamlDoc(data, file, lines))
    except YamlRefused:
        raise
    except yaml.YAMLError as exc:
        raise _not_valid(exc, max_depth) from exc
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise YamlRefused(f"not understood: {type(exc).__name__}") from exc
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def _not_valid(exc: yaml.YAMLError, max_depth: int) -> YamlRefused:
    problem = getattr(exc, "problem", None) or type(exc).__name__
    if "nesting depth" in str(problem):  # libyaml's own limit, met before ours
        return YamlRefused(f"nested deeper than {max_depth} levels")
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return YamlRefused(f"not valid YAML{where}: {problem}")


def inside_root(root: Path, candidate: Path) -> Path | None:
    """`candidate` resolved (symlinks followed) when it stays within `root`, else None: a path
    from a repository is never followed out of its clone."""
    try:
        base = root.resolve(strict=True)
        resolved = (root / candidate).resolve(strict=False)
    except (OSError, RuntimeError, ValueError):  # ValueError: a NUL or a lone surrogate
        return None
    if resolved == base or base in resolved.parents:
        return resolved
    return None


def read_text_inside(root: Path, candidate: Path, *, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The text of a file within `root`, refused (`YamlRefused`) when it is outside the root
    or reached through a symlink out of it, not a regular file, larger than `max_bytes`, or not
    UTF-8."""
    resolved = inside_root(root, candidate)
    if resolved is None:
        raise YamlRefused("outside the repository (or through a symlink out of it)")
    if not resolved.exists():
        raise YamlRefused("no such file")
    if not resolved.is_file():  # a FIFO or a device would block or never end
        raise YamlRefused("not a regular file")
    try:
        with resolved.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise YamlRefused(f"not readable: {type(exc).__name__}") from exc
    if len(raw) > max_bytes:
        raise YamlRefused(f"larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlRefused("not UTF-8 text") from exc


def as_mapping(value: object) -> Mapping[str, Any]:
    """`value` when it is a mapping with string keys, else an empty one."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {}


def as_list(value: object) -> Sequence[Any]:
    """`value` when it is a list, else an empty one (a string is not a list here)."""
    return value if isinstance(value, list) else []
