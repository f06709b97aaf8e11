"""JSON responses rendered with orjson: fast, and strict about what is JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["JSONBody", "ok"]


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(data: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONBody:
    return JSONBody({"success": True, "data": data}, status_code=status_code, headers=headers)
