"""A tool is a typed Python function: `@tool` turns one into something an agent can be given.

    @tool
    def list_invoices(customer_id: Annotated[str, Field(description="the CRM id")], *,
                      api_key: Annotated[str, Injected()]) -> Invoices:
        '''List a customer's invoices, newest first.'''

- The input schema comes from the parameters' type hints (a pydantic model, `extra="forbid"`),
  the description from the docstring; a tool without a docstring is refused where it is
  declared, since a model could not know what it does.
- `Injected()` parameters are filled from configuration (a tenant id, an API key, a database
  handle) and are not in the schema: a model never sees them and cannot set them.
- `@tool(side_effects=True)` declares a tool that changes something. The tool layer never
  hands such a tool to a model; it runs only as an action that passed the approval gate.

The function may be sync (run in a thread, so blocking I/O does not stall the agent) or async.
It returns a pydantic model, JSON-ready data, or text.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, create_model

from counterpoint.agents.llm.tooluse import json_schema

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class Injected:
    """Marks a parameter as configuration: `key` names the configured value (default: the
    parameter's own name)."""

    key: str | None = None


class ToolDefinitionError(TypeError):
    """A function that cannot be a tool; the message says which and why."""


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    input: type[BaseModel]
    fn: Callable[..., Any]
    read_only: bool
    injected: Mapping[str, str]  # parameter -> configured key

    def input_schema(self) -> dict[str, Any]:
        return json_schema(self.input)  # built once per tool, not on every model call

    def missing(self, values: Mapping[str, Any]) -> list[str]:
        """The configured keys this tool needs that `values` lacks."""
        return [key for key in self.injected.values() if key not in values]

    async def invoke(self, arguments: BaseModel, values: Mapping[str, Any]) -> Any:
        kwargs = {**arguments.model_dump(), **{p: values[k] for p, k in self.injected.items()}}
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        return await asyncio.to_thread(lambda: self.fn(**kwargs))


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(*, name: str | None = None,
         side_effects: bool = False) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         side_effects: bool = False) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Declare `fn` a tool (see the module doc)."""

    def declare(f: Callable[..., Any]) -> FunctionTool:
        return _declare(f, name or f.__name__, side_effects)

    return declare if fn is None else declare(fn)


def _declare(fn: Callable[..., Any], name: str, side_effects: bool) -> FunctionTool:
    where = f"tool {fn.__module__}.{fn.__qualname__}"
    if not _NAME.fullmatch(name):
        raise ToolDefinitionError(f"{where}: the name {name!r} must be lower_snake_case, at "
                                  "most 64 characters")
    description = inspect.getdoc(fn)
    if not description:
        raise ToolDefinitionError(f"{where} has no docstring; its docstring is the "
                                  "description a model chooses it by")
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    injected: dict[str, str] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *{param.name} cannot be described by a schema")
        if param.name not in hints:
            raise ToolDefinitionError(f"{where}: parameter {param.name!r} has no type hint")
        hint = hints[param.name]
        marker = _injected(hint)
        if marker is not None:
            injected[param.name] = marker.key or param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hint, default)
    model = create_model(
        f"{name}_input", __config__=ConfigDict(extra="forbid"), **fields)
    return FunctionTool(name, description, model, fn, read_only=not side_effects,
                        injected=injected)


def _injected(hint: Any) -> Injected | None:
    if typing.get_origin(hint) is typing.Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, Injected):
                return extra
    return None


def tools_in(module: object) -> list[FunctionTool]:
    """Every tool a module defines at its top level, in definition order."""
    return [value for value in vars(module).values() if isinstance(value, FunctionTool)]
