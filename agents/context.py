"""What an agent process is given: its name and settings, a provider, and shared services.

A factory (`def build(ctx: AgentContext) -> Agent`) receives one. `name` and `settings` come
from the project file's `[agents.NAME]` entry. Each agent reads the settings it uses with
`ctx.config(Model)`, a pydantic model of its own: a field named like a process setting takes
that setting's value (`COUNTERPOINT_X` is field `x`) unless the project file gives the agent
its own; a bad value or an unknown key names the file and key. Shared services open on first
use, so building an agent to check it, as `counterpoint up` does before starting processes,
opens nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.outcomes import OutcomeStore
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.catalog import CATALOG
from counterpoint.agents.tools.registry import Registry

# Claude models per agent; the offline provider ignores them.
DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "triage": "claude-haiku-4-5",
    "synthesis": "claude-sonnet-4-6",
}
DEFAULT_MODEL: Final = "claude-haiku-4-5"

M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """An agent's settings that do not fit its settings model; says which key and why."""


class AgentContext:
    def __init__(
        self, *, provider: LLMProvider, name: str = "",
        settings: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None,
        where: str = "settings", models: Mapping[str, str] | None = None,
        store: BusinessStore | None = None, store_path: Path | None = None,
        outcomes: OutcomeStore | None = None, approvals: ApprovalPolicy | None = None,
        keys: Keyring | None = None, tools: Registry = CATALOG,
    ) -> None:
        # The agent's name in its project (a factory names its Agent this), its settings from
        # the project file, the process settings they default to, and how to name the
        # settings in an error.
        self.name = name
        self.settings: Mapping[str, Any] = dict(settings or {})
        self.defaults: Mapping[str, Any] = dict(defaults or {})
        self.where = where
        # Whoever made the provider wrapped it in what every call goes through (metering).
        self.provider = provider
        self.models: Mapping[str, str] = dict(DEFAULT_MODELS if models is None else models)
        self._store = store
        self._store_path = store_path
        # Past outcomes per customer and service (agents/outcomes.py); in memory unless given.
        self.outcomes = outcomes or OutcomeStore.in_memory()
        # Which proposed actions wait for a person: the same in every process that decides.
        self.approvals = approvals or ApprovalPolicy()
        # Keys this process signs approval events with, and the trust it checks them against.
        self.keys = keys or Keyring.ephemeral()
        # The tools agents may be given (each agent only its allowlist).
        self.tools = tools

    @property
    def store(self) -> BusinessStore:
        """The business systems, opened on first use."""
        if self._store is None:
            self._store = BusinessStore.open(self.store_path)
        return self._store

    @property
    def store_path(self) -> Path:
        """Where the business systems' database is (nothing is opened to say so)."""
        if self._store is not None:
            return self._store.path
        if self._store_path is None:
            raise RuntimeError("this context was given no business store")
        return self._store_path

    def named(self, name: str) -> AgentContext:
        """This context for the agent called `name` (same services and settings)."""
        other = copy.copy(self)
        other.name = name
        return other

    def model_for(self, agent: str) -> str:
        return self.models.get(agent, DEFAULT_MODEL)

    def config(self, model: type[M]) -> M:
        """This agent's settings as `model`: the project file's over the process's defaults.

        A key the model does not know is an error (a typo would otherwise pass unnoticed)
        unless the model says `extra="allow"` or `"ignore"` itself.
        """
        fields = set(model.model_fields) | {
            f.alias for f in model.model_fields.values() if f.alias}
        problems = []
        if model.model_config.get("extra") is None:
            problems = [f"{self.where}.{key}: unknown setting (known: "
                        f"{', '.join(model.model_fields) or 'none'})"
                        for key in self.settings if key not in fields]
        values = {k: v for k, v in self.defaults.items() if k in fields}
        values.update(self.settings)
        try:
            value = model.model_validate(values)
        except ValidationError as exc:
            problems += [
                f"{'.'.join([self.where, *(str(p) for p in e['loc'])])}: {_problem(e)}"
                for e in exc.errors()]
        if problems:
            raise SettingsError("; ".join(problems))
        return value


def _problem(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown setting"
    return f"{error['msg']} (got {error.get('input')!r})"
