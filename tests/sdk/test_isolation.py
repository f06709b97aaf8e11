"""The SDK is imported by CI scripts and applications: it brings httpx, never the server."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_sdk_loads_neither_the_server_nor_its_dependencies() -> None:
    script = (
        "import json, sys, trailmap_sdk\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    assert "trailmap_sdk" in loaded
    assert "httpx" in loaded
    for server_side in ("trailmap", "sqlalchemy", "fastapi", "starlette", "pydantic", "alembic"):
        assert server_side not in loaded, server_side
