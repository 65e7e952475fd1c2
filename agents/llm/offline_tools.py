"""Which tools the offline provider calls for a task, by rule instead of by a model's choice.

The offline provider goes through the same tool layer as a model does (allowlist, input
validation, a span per call); these rules only pick the calls. Each investigator gets the
records its skill needs, the way the fixed fact-gathering did before tools existed:

    billing         list_invoices(customer)
    account         get_account_status(customer), list_login_events(customer)
    infrastructure  search_service_logs / get_service_metrics / list_recent_deploys (by focus;
                    an unknown focus gets all three), around the alert's start
    knowledge       search_knowledge_base([focus + service, the whole request])

A call whose tool is not on the agent's allowlist is left out, never attempted.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from counterpoint.agents.llm.tooluse import ToolOutcome
from counterpoint.agents.tools.facts import nothing_checked
from counterpoint.agents.tools.registry import ToolReply, facts_of
from counterpoint.schemas.events import Fact, Subject

Call = tuple[str, dict[str, Any]]

MAX_QUERY_CHARS = 10_000  # the knowledge-base tool's limit per search phrase

_INFRA_TOOLS = {"log": "search_service_logs", "metric": "get_service_metrics",
                "deploy": "list_recent_deploys"}


def plan(task: str, context: Mapping[str, Any], allowed: Collection[str]) -> list[Call]:
    if task != "investigate":
        return []
    skill: str = context.get("skill", "")
    focus: str = context.get("focus", "") or ""
    subject: Subject | None = context.get("subject")
    if subject is None:
        return []
    calls: list[Call] = []
    customer = {"customer_id": subject.customer_id} if subject.customer_id else None
    if skill == "billing" and customer:
        calls = [("list_invoices", customer)]
    elif skill == "account" and customer:
        calls = [("get_account_status", customer), ("list_login_events", customer)]
    elif skill == "infrastructure":
        service = subject.service or subject.labels.get("service")
        if service:
            args: dict[str, Any] = {"service": service,
                                    "reported_by": "alert" if subject.kind == "alert"
                                    else "customer"}
            if subject.started_at is not None:
                args["started_at"] = subject.started_at.isoformat()
            wanted = [t for part, t in _INFRA_TOOLS.items() if part in focus.lower()]
            calls = [(t, args) for t in wanted or _INFRA_TOOLS.values()]
    elif skill == "knowledge":
        # The focus ranks first, so two investigations of one request do not cite the same
        # articles; the whole request fills the remaining places.
        focused = " ".join(p for p in (focus, subject.service) if p)
        broad = " ".join(p for p in (focus, subject.title, subject.text, subject.service) if p)
        queries = [q[:MAX_QUERY_CHARS] for q in (focused, broad) if q.strip()]
        if queries:
            calls = [("search_knowledge_base", {"queries": queries})]
    return [c for c in calls if c[0] in allowed]


def facts_from(outcomes: list[ToolOutcome]) -> list[Fact]:
    """The facts the successful calls returned, in order, each once (read from their JSON, as a
    model reads a tool_result)."""
    seen: dict[tuple[str, str], Fact] = {}
    for outcome in outcomes:
        if outcome.is_error:
            continue
        try:
            data = json.loads(outcome.content)
        except ValueError:
            data = None
        for fact in facts_of(ToolReply(outcome.content, data), outcome.name):
            seen.setdefault((fact.text, fact.source), fact)
    return list(seen.values())


def unchecked(context: Mapping[str, Any]) -> list[Fact]:
    """When no call returned facts: the one fact saying why (as the finding will)."""
    subject: Subject | None = context.get("subject")
    if subject is None:
        return []
    return [nothing_checked(str(context.get("skill", "")), subject,
                            str(context.get("focus", "")))]
