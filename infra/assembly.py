"""A project's agents, built and checked before any process starts.

`counterpoint up`, `demo` and `status` build every agent of the project in the command's own
process (factories only declare; nothing heavy opens), so a bad import string, a mismatched
declaration or two agents claiming one consumer group stops the command at once, naming the
file and key. Each agent process builds its own agent the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from counterpoint.agents.context import AgentContext, SettingsError
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.loading import LoadError, build, default_name, is_import_string
from counterpoint.agents.outcomes import OutcomeStore
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import default_db_path
from counterpoint.bus.agent import Agent
from counterpoint.infra.project import AgentEntry, Project, ProjectError
from counterpoint.infra.redaction import redact
from counterpoint.infra.settings import Settings
from counterpoint.topics.topic import Topic


@dataclass(frozen=True)
class BuiltAgent:
    """One entry of a project and the agent it gave."""

    name: str
    entry: AgentEntry
    agent: Agent


def resolve(project: Project, wanted: str) -> tuple[str | None, AgentEntry]:
    """The entry `counterpoint agent WANTED` runs: a name in the project, or an import
    string (the project's entry using it, if any; otherwise one of its own, with no name:
    the agent's own)."""
    if wanted in project.agents:
        return wanted, project.agents[wanted]
    if is_import_string(wanted):
        using = [name for name, entry in project.agents.items() if entry.use == wanted]
        if len(using) > 1:
            raise ProjectError(f"{project.origin}: {wanted!r} is used by several agents "
                               f"({', '.join(using)}); name the one to run")
        if using:
            return using[0], project.agents[using[0]]
        return None, AgentEntry(use=wanted)
    raise ProjectError(f"{project.origin}: no agent named {wanted!r}; choose one of: "
                       f"{', '.join(project.agents)}, or give an import string MODULE:ATTRIBUTE")


def context_for(settings: Settings, project: Project, name: str, entry: AgentEntry,
                provider: LLMProvider, keys: Keyring | None = None) -> AgentContext:
    """The context one entry's factory is called with. Its settings default to the process
    settings of the same names (ctx.config), so COUNTERPOINT_X still configures field x."""
    configured = {name: entry.model} if entry.model else {}
    return AgentContext(
        name=name, settings=entry.settings, defaults=settings.model_dump(),
        where=project.where("agents", name, "settings"), provider=provider,
        models=settings.models(configured), store_path=default_db_path(settings.home),
        outcomes=OutcomeStore.lazy(settings.memory_path, scrub=redact),  # memory.db at rest
        approvals=settings.approval_policy(), keys=keys or settings.keyring(),
    )


def build_one(settings: Settings, project: Project, name: str | None, entry: AgentEntry,
              provider: LLMProvider, keys: Keyring | None = None) -> BuiltAgent:
    """Build one entry's agent. With no name (an import string the project does not list),
    it runs under the agent's own name; a factory is offered `default_name(use)`. `keys`:
    the approval keys it signs with (default: the process's, from configuration)."""
    project.importable()
    ctx = context_for(settings, project, name or default_name(entry.use), entry, provider, keys)
    where = project.where("agents", name, "use") if name else f"agent {entry.use}"
    try:
        agent = build(entry.use, ctx)
    except (LoadError, SettingsError) as exc:
        raise ProjectError(f"{where}: {exc}" if name else str(exc)) from exc
    if name is None:
        name = agent.name
    elif agent.name != name:
        raise ProjectError(
            f"{project.where('agents', name, 'use')}: {entry.use!r} gives an agent named "
            f"{agent.name!r}, but runs as {name!r}: an agent's name is its consumer group, so "
            f"name the entry [agents.{agent.name}] (or build the Agent with ctx.name)")
    if agent.group is None:
        agent.group = f"{project.group_prefix}.{agent.name}"
    return BuiltAgent(name, entry, agent)


def build_project(settings: Settings, project: Project, provider: LLMProvider,
                  keys: Keyring | None = None) -> list[BuiltAgent]:
    """Every agent of the project, checked against each other. To learn or check their
    declarations only, pass throwaway `keys` (Keyring.ephemeral()): nothing is read or made."""
    built = [build_one(settings, project, name, entry, provider, keys)
             for name, entry in project.agents.items()]
    check_project(project, built)
    return built


def check_project(project: Project, built: Sequence[BuiltAgent]) -> None:
    groups: dict[str, str] = {}
    for b in built:
        other = groups.setdefault(b.agent.group_id, b.name)
        if other != b.name:
            raise ProjectError(f"{project.where('agents', b.name)}: consumer group "
                               f"{b.agent.group_id!r} is already claimed by agents.{other}; "
                               "two agents in one group would take each other's records")
    try:
        declared = topics_of(b.agent for b in built)
    except TopicConflict as exc:
        raise ProjectError(f"{project.origin}: {exc}") from exc
    names = {t.name for t in declared}
    emitted = {t.name for b in built for t in b.agent.emits}
    consumed = {t.name for b in built for t in b.agent.consumes}
    for i, name in enumerate(project.results):
        if name not in emitted:
            raise ProjectError(f"{project.where('project', 'results', str(i))}: no agent "
                               f"emits {name!r} (emitted: {', '.join(sorted(emitted))})")
    for i, sample in enumerate(project.samples):
        if sample.topic not in consumed:
            known = "declared but consumed by no agent" if sample.topic in names else \
                "declared by no agent"
            raise ProjectError(f"{project.where('samples', str(i), 'topic')}: "
                               f"{sample.topic!r} is {known} (consumed: "
                               f"{', '.join(sorted(consumed))})")


class TopicConflict(ValueError):
    pass


def topics_of(agents: Iterable[Agent]) -> list[Topic[Any]]:
    """The topics these agents read and write, each once; two different declarations of one
    topic name are an error (their processes would disagree about it)."""
    seen: dict[str, tuple[Topic[Any], str]] = {}
    for agent in agents:
        for t in agent.topics:
            first = seen.setdefault(t.name, (t, agent.name))
            if not first[0].same_as(t):
                raise TopicConflict(
                    f"topic {t.name!r} is declared differently by {first[1]} ({_shape(first[0])})"
                    f" and {agent.name} ({_shape(t)})")
    return [t for t, _ in seen.values()]


def _shape(t: Topic[Any]) -> str:
    event = getattr(t.event_type, "__name__", str(t.event_type))
    return (f"{event}, {t.partitions} partitions, keyed by {t.key}, ce_type {t.ce_type}"
            + (", raw intake" if t.raw_intake else ""))
