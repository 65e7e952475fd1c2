"""Checks on an agent's declarations, made when the agent is built rather than left to a
comment or to the first message.

- A join's topics are co-partitioned: equal partition counts, keyed alike, read with the range
  assignor, so partition N of every one of them lands on one process and one key's records
  meet there.
- What a handler emits is declared: each `Emit(TOPIC, ...)` written in a handler's (or a
  periodic task's) body whose TOPIC resolves to a Topic must be in the agent's `emits`. An emit
  whose topic is computed at run time cannot be known here; the runtime check still catches it.
- Emits of one input that would get one id (same topic, tag and derive_from: the id derives
  from these) are one event: an exact repeat is published once, and two *different* events
  under one id are an error (the second would be dropped as a duplicate by every consumer).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from counterpoint.bus.agent import Agent, AgentDeclarationError, Emit
from counterpoint.bus.errors import DuplicateEmit, UndeclaredEmit
from counterpoint.topics.topic import Topic


def check_agent(agent: Agent) -> None:
    """AgentDeclarationError naming every problem found in `agent`'s declarations."""
    problems = [*_join_problems(agent), *_undeclared(agent)]
    if problems:
        raise AgentDeclarationError(f"agent {agent.name}: " + "; ".join(problems))


def _join_problems(agent: Agent) -> Iterator[str]:
    if not agent.joins:
        return
    consumed = {t.name for t in agent.consumes}
    for t in agent.joins:
        if t.name not in consumed:
            yield f"it joins {t.name} but has no handler for it"
    first = agent.joins[0]
    for t in agent.joins[1:]:
        if t.partitions != first.partitions:
            yield (f"its join reads {first.name} ({first.partitions} partitions) and {t.name} "
                   f"({t.partitions}): a join's topics need equal partition counts, or one "
                   "key's records land on different processes")
        if t.key != first.key:
            yield (f"its join reads {first.name} keyed by {first.key} and {t.name} keyed by "
                   f"{t.key}: a join's topics must be keyed alike")
    if agent.assignor != "range":
        yield "a join needs assignor='range' (partition N of every joined topic together)"


def _undeclared(agent: Agent) -> Iterator[str]:
    declared = {t.name for t in agent.emits}
    functions = [fn for _, fn in agent.handlers.values()] + [fn for _, fn in agent.periodic]
    for fn in functions:
        for topic, line in emitted_topics(fn):
            if topic.name not in declared:
                yield (f"{_qualname(fn)} emits to {topic.name} (line {line}) but the agent "
                       f"does not declare it: add it to emits=[...] (declared: "
                       f"{', '.join(sorted(declared)) or 'none'})")


def emitted_topics(fn: Callable[..., Any]) -> list[tuple[Topic[Any], int]]:
    """The topics `Emit(TOPIC, ...)` calls name where TOPIC resolves to a Topic: in `fn`'s
    source and in the functions of its own module that it calls (helpers, nested functions)."""
    found: list[tuple[Topic[Any], int]] = []
    seen: set[int] = set()
    todo = [inspect.unwrap(fn)]
    module = getattr(todo[0], "__module__", None)
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        topics, called = _read(current)
        found += topics
        todo += [f for f in called if inspect.isfunction(f) and f.__module__ == module]
    return found


def _read(fn: Callable[..., Any]) -> tuple[list[tuple[Topic[Any], int]], list[Any]]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        refs = inspect.getclosurevars(fn)
    except (OSError, TypeError, SyntaxError, ValueError):
        return [], []  # no source (built at run time, or compiled): nothing to read
    names = {**refs.globals, **refs.nonlocals}
    first_line = fn.__code__.co_firstlineno
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _called(node.func) == "Emit"):
            continue
        arg = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "topic"), None)
        value = _resolve(arg, {**fn.__globals__, **refs.nonlocals}) if arg is not None else None
        if isinstance(value, Topic):
            found.append((value, first_line + node.lineno - 1))
    return found, [inspect.unwrap(v) for v in names.values() if callable(v)]


def _called(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _qualname(fn: Callable[..., Any]) -> str:
    return str(getattr(inspect.unwrap(fn), "__qualname__", fn))


def checked_emits(agent: Agent, emits: Sequence[Emit]) -> list[Emit]:
    """At run time: every emit declared, exact repeats dropped, and no two different events
    under one id (DuplicateEmit)."""
    if len(emits) == 1:  # the common case: nothing to compare
        (item,) = emits
        if not agent.declared(item.topic):
            raise _undeclared_emit(agent, item)
        return [item]
    seen: dict[tuple[str, str, str | None], Emit] = {}
    for item in emits:
        if not agent.declared(item.topic):
            raise _undeclared_emit(agent, item)
        identity = (item.topic.name, item.tag, item.derive_from)
        first = seen.setdefault(identity, item)
        if first is not item and first != item:
            raise DuplicateEmit(
                f"agent {agent.name} emitted two different events to {item.topic.name} with "
                f"tag {item.tag!r} for one input: both would get one event id and the second "
                "would be dropped as a duplicate; give each emit a distinct tag=")
    return list(seen.values())


def _undeclared_emit(agent: Agent, item: Emit) -> UndeclaredEmit:
    return UndeclaredEmit(
        f"agent {agent.name} emitted to {item.topic.name}, which it does not "
        f"declare (declared: {', '.join(t.name for t in agent.emits)})")
