"""What an agent process is given: its name and settings, a provider, and shared services.

A factory (`def build(ctx: AgentContext) -> Agent`) receives one. `name` and `settings` come
from the project file's `[agents.NAME]` entry; `config(Model)` validates the settings into a
model of the agent's own, and a bad value names the file and key. Heavy parts (the business
store) open on first use, so building an agent to check it, as `counterpoint up` does before
starting processes, opens nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.budget import metered
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.outcomes import OutcomeStore
from counterpoint.agents.reuse import DEFAULT_WINDOW
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.catalog import CATALOG
from counterpoint.agents.tools.registry import DEFAULT_MAX_TURNS, Registry

# Claude models per agent once the anthropic provider lands; the offline provider ignores them.
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
        self, *, provider: LLMProvider, name: str = "", settings: Mapping[str, Any] | None = None,
        where: str = "settings", store: BusinessStore | None = None,
        store_path: Path | None = None,
        synthesis_deadline: timedelta = timedelta(seconds=30),
        synthesis_replay_grace: timedelta = timedelta(seconds=2),
        models: Mapping[str, str] | None = None, approvals: ApprovalPolicy | None = None,
        keys: Keyring | None = None, prices: PriceTable | None = None, request_budget_usd: float | None = None,
        reuse_window: timedelta = DEFAULT_WINDOW, outcomes: OutcomeStore | None = None,
        tools: Registry = CATALOG, max_tool_turns: int = DEFAULT_MAX_TURNS,
        webhook_targets: Mapping[str, str] | None = None, webhook_secret: str | None = None,
        webhook_timeout_s: float = 10.0,
    ) -> None:
        # The agent's name in its project (a factory should name its Agent this), its
        # settings from the project file, and how to name those settings in an error.
        self.name = name
        self.settings: Mapping[str, Any] = dict(settings or {})
        self.where = where
        self.prices = prices or PriceTable.default()
        # Every agent's calls are priced, and checked against the step's budget.
        self.provider = metered(provider, self.prices)
        self._store = store
        self._store_path = store_path
        # How long synthesis waits for a request's findings before publishing a partial result.
        self.synthesis_deadline = synthesis_deadline
        # A plan is never due sooner than this after a process saw it, so a join rebuilt after
        # a restart replays its findings before the deadline can fire.
        self.synthesis_replay_grace = synthesis_replay_grace
        self.models: Mapping[str, str] = dict(DEFAULT_MODELS if models is None else models)
        # Which proposed actions wait for a person (risk table, threshold, time to decide).
        self.approvals = approvals or ApprovalPolicy()
        # Keys this process signs approval events with, and the trust it checks them against.
        self.keys = keys or Keyring.ephemeral()
        # Cost and budgets (agents/cost.py, agents/budget.py); None = no default budget.
        self.request_budget_usd = request_budget_usd
        # Identical investigation tasks within this window run once (agents/reuse.py).
        self.reuse_window = reuse_window
        # Past outcomes per customer and service (agents/outcomes.py); in memory unless given.
        self.outcomes = outcomes or OutcomeStore.in_memory()
        # The tools agents may be given (each agent only its allowlist) and how many model
        # turns of one investigation may ask for tools before it must answer.
        self.tools = tools
        self.max_tool_turns = max_tool_turns
        # Result webhooks (agents/webhooks.py): source or kind -> URL, the HMAC secret, the
        # seconds one POST may take.
        self.webhook_targets: Mapping[str, str] = dict(webhook_targets or {})
        self.webhook_secret = webhook_secret
        self.webhook_timeout_s = webhook_timeout_s

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

    def model_for(self, agent: str) -> str:
        return self.models.get(agent, DEFAULT_MODEL)

    def config(self, model: type[M]) -> M:
        """This agent's settings validated as `model`; SettingsError names the key.

        A key the model does not know is an error (a typo would otherwise pass unnoticed)
        unless the model says `extra="allow"` or `"ignore"` itself.
        """
        problems = []
        if model.model_config.get("extra") is None:
            known = {f.alias or n for n, f in model.model_fields.items()} | set(
                model.model_fields)
            problems = [f"{self.where}.{key}: unknown setting (known: "
                        f"{', '.join(model.model_fields) or 'none'})"
                        for key in self.settings if key not in known]
        try:
            value = model.model_validate(dict(self.settings))
        except ValidationError as exc:
            problems += [
                f"{'.'.join([self.where, *(str(p) for p in e['loc'])])}: {_problem(e, model)}"
                for e in exc.errors()]
        if problems:
            raise SettingsError("; ".join(problems))
        return value


def _problem(error: Any, model: type[BaseModel]) -> str:
    if error.get("type") == "extra_forbidden":
        return f"unknown setting (known: {', '.join(model.model_fields) or 'none'})"
    return f"{error['msg']} (got {error.get('input')!r})"
