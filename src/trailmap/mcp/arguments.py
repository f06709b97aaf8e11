"""Tool arguments as assistants send them (docs/internals.md): a single value where a list is
wanted, a number written as a string, a value in another case than the one listed, `null` for an
optional argument are taken; an argument a tool does not take, or a value it cannot, is refused in
one sentence naming the argument and what it takes, where the SDK would drop the argument
silently or answer with pydantic's text. The tool list advertises the same schemas, without the
titles and `null` branches pydantic adds, which only cost the model tokens."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ListToolsResult, TextContent
from pydantic import BaseModel

__all__ = ["ToolArguments", "fit_arguments", "slim_schema"]

Schema = Mapping[str, Any]

_WHOLE = re.compile(r"\s*[+-]?\d{1,15}\s*")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_PYDANTIC = re.compile(r"\d+ validation errors? for ")  # how pydantic's text begins
_shown = reprlib.Repr()
_shown.maxstring, _shown.maxother, _shown.maxlist = 40, 40, 4


class _Unfit(Exception):
    """A value the argument cannot take, even read generously."""


class ToolArguments:
    """`ServerMiddleware` for `tools/call` (arguments fitted or refused) and `tools/list`
    (schemas slimmed); other requests pass untouched."""

    def __init__(self, mcp: MCPServer) -> None:
        self._mcp = mcp
        self._schemas: dict[str, Schema] | None = None

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "tools/list":
            return _slim_listing(await call_next(ctx))
        params = ctx.params
        if ctx.method != "tools/call" or params is None:
            return await call_next(ctx)
        name, arguments = params.get("name"), params.get("arguments")
        schema = (await self._tool_schemas()).get(name) if isinstance(name, str) else None
        if schema is None or not (arguments is None or isinstance(arguments, Mapping)):
            return await call_next(ctx)
        fitted = fit_arguments(str(name), schema, arguments or {})
        if isinstance(fitted, str):
            return _refusal(fitted)
        result = await call_next(dataclasses.replace(ctx, params={**params, "arguments": fitted}))
        return _without_pydantic(str(name), schema, result)

    async def _tool_schemas(self) -> dict[str, Schema]:
        # Tools are all registered before the server answers its first request.
        if self._schemas is None:
            self._schemas = {tool.name: tool.input_schema for tool in await self._mcp.list_tools()}
        return self._schemas


def fit_arguments(tool: str, schema: Schema, arguments: Mapping[str, Any]) -> dict[str, Any] | str:
    """The arguments read as the schema wants them, or the sentence refusing them."""
    properties: Mapping[str, Schema] = schema.get("properties", {})
    unknown = sorted(str(a) for a in arguments if a not in properties)
    if unknown:
        names = ", ".join(repr(a[:50]) for a in unknown[:5])
        plural = "s" if len(unknown) > 1 else ""
        return (
            f"{tool} takes no argument{plural} {names}; its arguments are: "
            f"{', '.join(properties)} (nothing was done)."
        )
    required = schema.get("required", ())
    fitted: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in arguments.items():
        if value is None and name not in required:
            continue  # null for an optional argument: its default
        try:
            fitted[name] = _fit(_resolved(properties[name], schema), value, schema)
        except _Unfit:
            problems.append(
                f"its argument {name!r} takes {_accepts(properties[name], schema)}, "
                f"not {_shown.repr(value)}"
            )
    problems += [
        f"its argument {name!r} is required: {_accepts(properties[name], schema)}"
        for name in required
        if name in properties and name not in arguments
    ]
    if problems:
        return f"{tool} did nothing: {'; '.join(problems)}."
    return fitted


def _resolved(prop: Schema, root: Schema) -> Schema:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}), **prop}
    return prop


def _branches(prop: Schema, root: Schema) -> list[Schema]:
    """The forms a value may take, `null` aside (an optional argument's null is its default)."""
    prop = _resolved(prop, root)
    if "anyOf" not in prop:
        return [prop]
    return [_resolved(b, root) for b in prop["anyOf"] if b.get("type") != "null"]


def _fit(prop: Schema, value: Any, root: Schema) -> Any:
    branches = _branches(prop, root)
    if len(branches) != 1:
        for branch in branches:
            try:
                return _fit(branch, value, root)
            except _Unfit:
                continue
        raise _Unfit
    prop = branches[0]
    if "enum" in prop:
        return _fit_enum(prop["enum"], value)
    kind = prop.get("type")
    if kind == "array":
        return _fit_list(prop, value, root)
    fit = _SCALARS.get(str(kind))
    if fit is None:
        return value
    if isinstance(value, bool) and kind != "boolean":
        raise _Unfit  # true is no number, nor a name
    return fit(prop, value)


def _fit_integer(prop: Schema, value: Any) -> int:
    if (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _WHOLE.fullmatch(value)
    ):
        value = int(value)
    if not isinstance(value, int):
        raise _Unfit
    return int(_in_range(prop, value))


def _fit_number(prop: Schema, value: Any) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if not isinstance(value, int | float):
        raise _Unfit
    return _in_range(prop, value)


def _fit_string(prop: Schema, value: Any) -> str:
    if isinstance(value, int | float):
        value = str(value)  # an id or a version written as a number
    if not isinstance(value, str) or not (
        prop.get("minLength", 0) <= len(value) <= prop.get("maxLength", len(value))
    ):
        raise _Unfit
    return value


def _fit_boolean(_: Schema, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise _Unfit
    return value


_SCALARS: dict[str, Callable[[Schema, Any], Any]] = {
    "integer": _fit_integer,
    "number": _fit_number,
    "string": _fit_string,
    "boolean": _fit_boolean,
}


def _fit_enum(allowed: list[Any], value: Any) -> Any:
    if value in allowed:
        return value
    if isinstance(value, str):
        folded = re.sub(r"[\s-]+", "_", value.strip().casefold())
        for choice in allowed:
            # "critical" for "CRITICAL", "databases" for "database", "external api"
            if isinstance(choice, str) and choice.casefold() in (folded, folded.removesuffix("s")):
                return choice
    raise _Unfit


def _fit_list(prop: Schema, value: Any, root: Schema) -> list[Any]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(ValueError):
            value = json.loads(value)  # a list written as JSON text
    if isinstance(value, Mapping):
        raise _Unfit
    items = list(value) if isinstance(value, list | tuple) else [value]  # one for a list of one
    if not prop.get("minItems", 0) <= len(items) <= prop.get("maxItems", len(items)):
        raise _Unfit
    return [_fit(prop.get("items", {}), item, root) for item in items]


def _in_range(prop: Schema, value: float) -> float:
    if "minimum" in prop and value < prop["minimum"]:
        raise _Unfit
    if "maximum" in prop and value > prop["maximum"]:
        raise _Unfit
    return value


def _accepts(prop: Schema, root: Schema) -> str:
    """What an argument takes, in words: "a whole number from 1 to 100"."""
    return " or ".join(_accepts_one(b, root) for b in _branches(prop, root)) or "nothing"


def _accepts_one(prop: Schema, root: Schema) -> str:  # noqa: PLR0911 - one case per JSON type
    if "enum" in prop:
        return "one of " + ", ".join(map(repr, prop["enum"]))
    kind = prop.get("type")
    if kind == "array":
        items = _resolved(prop.get("items", {}), root)
        most = f"at most {prop['maxItems']} " if "maxItems" in prop else ""
        if "enum" in items:
            return f"a list of {most}{', '.join(map(repr, items['enum']))} (or one alone)"
        return f"a list of {most}{_plural(items)} (or one alone)"
    if kind == "integer":
        return "a whole number" + _range(prop)
    if kind == "number":
        return "a number" + _range(prop)
    if kind == "string":
        longest = prop.get("maxLength")
        return "a string" + (f" of at most {longest} characters" if longest else "")
    if kind == "boolean":
        return "true or false"
    return "a value of type " + str(kind)


def _plural(items: Schema) -> str:
    return {"string": "strings", "integer": "whole numbers", "number": "numbers"}.get(
        str(items.get("type")), "values"
    )


def _range(prop: Schema) -> str:
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def _refusal(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _without_pydantic(tool: str, schema: Schema, result: HandlerResult) -> HandlerResult:
    """A refusal by the SDK's own validation (a rule the schema does not show) in our words:
    pydantic's text, with its links to its website, is not for a model to read."""
    if isinstance(result, BaseModel):
        as_sent = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    elif isinstance(result, Mapping):
        as_sent = dict(result)
    else:
        return result
    content = as_sent.get("content") or [{}]
    text = content[0].get("text") if isinstance(content[0], Mapping) else None
    if not (as_sent.get("isError") and isinstance(text, str) and _PYDANTIC.search(text)):
        return result
    properties: Mapping[str, Schema] = schema.get("properties", {})
    fields = {line.split(".")[0] for line in text.splitlines()[1:] if line[:1].strip()}
    named = [n for n in properties if n in fields] or list(properties)
    return _refusal(
        f"{tool} did nothing: "
        + "; ".join(f"its argument {n!r} takes {_accepts(properties[n], schema)}" for n in named)
        + "."
    )


def slim_schema(schema: Schema) -> dict[str, Any]:
    """An input schema without pydantic's titles, `default: null` and `null` branches: an
    optional argument may be left out, and `null` is taken for it all the same."""

    def slim(prop: Schema) -> dict[str, Any]:
        out = {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}
        branches = [b for b in out.get("anyOf", ()) if b.get("type") != "null"]
        if "anyOf" in out and len(branches) == 1:
            del out["anyOf"]
            out = {**branches[0], **out}
        if isinstance(out.get("items"), Mapping):
            out["items"] = slim(out["items"])
        if "anyOf" in out:
            out["anyOf"] = [slim(b) for b in out["anyOf"]]
        return out

    slimmed = {k: v for k, v in schema.items() if k != "title"}
    if isinstance(schema.get("properties"), Mapping):
        slimmed["properties"] = {n: slim(p) for n, p in schema["properties"].items()}
    return slimmed


def _slim_listing(result: HandlerResult) -> HandlerResult:
    """The tool list with slim schemas, whether the SDK hands it on as a model or a dict."""
    if isinstance(result, ListToolsResult):
        tools = [
            t.model_copy(update={"input_schema": slim_schema(t.input_schema)}) for t in result.tools
        ]
        return result.model_copy(update={"tools": tools})
    if isinstance(result, Mapping) and isinstance(result.get("tools"), list):
        return {
            **result,
            "tools": [
                {**t, "inputSchema": slim_schema(t["inputSchema"])}
                if isinstance(t, Mapping) and isinstance(t.get("inputSchema"), Mapping)
                else t
                for t in result["tools"]
            ],
        }
    return result
