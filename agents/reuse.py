"""Avoid redundant investigations: identical tasks within a window run once.

An alert storm (fifty alerts with one fingerprint) or the same ticket sent twice makes triage
plan the same investigation again and again. Each task carries a *cache key*: its skill, its
focus and the identity of its subject (an alert's fingerprint and status; a ticket's customer
and normalised text). Triage publishes the task under that key, so

- every identical task lands on the same partition of the skill's topic, and so in the one
  process that owns it, and
- the bus handles records of one (partition, key) one after another,

so the first runs the investigation and the duplicates, queued behind it, find its finding in
this process's cache and reuse it, saying so (`Finding.reused_from`). Nothing is shared
between processes: after a crash or a rebalance the new owner starts with an empty cache, and
the worst case is one more investigation. Entries expire after the window (setting
`COUNTERPOINT_REUSE_WINDOW_S`, 600 s) and the cache is bounded. A finding that could not call
the model for lack of budget is never cached.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Final

from opentelemetry import trace

from counterpoint.agents.budget import NO_CALL, BudgetExhausted, metering
from counterpoint.bus.agent import Emit, Incoming
from counterpoint.schemas.events import Finding, InvestigationTask, Reused, Subject, Usage
from counterpoint.topics.registry import INVESTIGATION_FINDINGS

DEFAULT_WINDOW: Final = timedelta(minutes=10)
MAX_ENTRIES: Final = 10_000

TaskHandler = Callable[[Incoming[InvestigationTask]], Awaitable[Sequence[Emit]]]


def subject_identity(subject: Subject) -> list[str]:
    """What makes two requests the same case for an investigator."""
    if subject.kind == "alert":
        # An Alertmanager fingerprint (or group key, or a simple alert's id) names the alert
        # whatever its annotations say now; firing and resolved are different cases.
        return ["alert", subject.source_id, subject.labels.get("status", "firing")]
    text = re.sub(r"\s+", " ", f"{subject.title}\n{subject.text}").strip().lower()
    return ["ticket", subject.customer_id or "", text]


def task_cache_key(skill: str, focus: str, subject: Subject) -> str:
    """The Kafka key of an investigation task: equal for tasks one investigation answers."""
    raw = json.dumps([skill, focus, *subject_identity(subject)], ensure_ascii=False)
    return "c-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class FindingCache:
    """Findings of this process's recent investigations, by cache key; bounded, windowed."""

    def __init__(self, window: timedelta = DEFAULT_WINDOW, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window.total_seconds()
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Finding, datetime]] = OrderedDict()
        self.hits = 0

    def get(self, key: str) -> tuple[Finding, datetime] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored, finding, at = entry
        if self.clock() - stored > self.window_s:
            del self._entries[key]
            return None
        return finding, at

    def put(self, key: str, finding: Finding) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self.clock(), finding, datetime.now(UTC))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def reuse(self, task: InvestigationTask) -> Finding | None:
        """The finding for `task` from an earlier identical task, if one is fresh."""
        cached = self.get(task_cache_key(task.skill, task.focus, task.subject))
        if cached is None:
            return None
        original, at = cached
        if original.task_id == task.task_id:
            return original  # a redelivery of the task that investigated: the same finding
        self.hits += 1
        origin = original.reused_from or Reused(task_id=original.task_id,
                                                request_id=original.request_id, at=at)
        return original.model_copy(update={
            "task_id": task.task_id, "request_id": task.request_id, "reused_from": origin,
            "usage": Usage()})  # nothing was spent on this one


def budget_finding(task: InvestigationTask, agent: str, exc: BudgetExhausted) -> Finding:
    return Finding(task_id=task.task_id, request_id=task.request_id, skill=task.skill,
                   focus=task.focus, agent=agent, budget_ran_out=True,
                   summary=f"Not investigated: the request's budget ran out ({exc}).",
                   facts=[], generation=NO_CALL, usage=Usage())


def reuse_and_budget(cache: FindingCache, agent: str) -> Callable[[TaskHandler], TaskHandler]:
    """Wraps an investigator's task handler: answers duplicates from `cache`, runs the rest
    under the task's budget allowance (reporting a finding that says so when it ran out) and
    remembers what they found."""

    def wrap(handler: TaskHandler) -> TaskHandler:
        @wraps(handler)
        async def on_task(event: Incoming[InvestigationTask]) -> Sequence[Emit]:
            task = event.data
            reused = cache.reuse(task)
            span = trace.get_current_span()
            if reused is not None:
                if reused.reused_from is not None:
                    span.set_attribute("counterpoint.reused_from.request_id",
                                       reused.reused_from.request_id)
                    span.set_attribute("counterpoint.reused_from.task_id",
                                       reused.reused_from.task_id)
                return [Emit(INVESTIGATION_FINDINGS, reused, key=task.request_id,
                             tag=task.task_id)]
            allowance = task.budget.allowance_usd if task.budget else None
            try:
                with metering(allowance):
                    emits = await handler(event)
            except BudgetExhausted as exc:  # the span already has a "budget ran out" event
                return [Emit(INVESTIGATION_FINDINGS, budget_finding(task, agent, exc),
                             key=task.request_id, tag=task.task_id)]
            for emit in emits:
                if isinstance(emit.data, Finding) and not emit.data.budget_ran_out:
                    cache.put(task_cache_key(task.skill, task.focus, task.subject), emit.data)
            return emits

        return on_task

    return wrap
