"""The agents' metrics: model calls, tokens and cost, budget refusals, requests finished at
synthesis, approvals, webhook deliveries. (What the bus counts is in bus/metrics.py.)

Model calls follow the OpenTelemetry GenAI conventions (`gen_ai.client.operation.duration`,
whose count is the number of calls, and `gen_ai.client.token.usage`); the rest are
`counterpoint.*`. Every series names its agent (`counterpoint.agent`). The instruments are the
API's: they do nothing until infra/metrics.py installs a meter provider.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sized
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from counterpoint.bus.metrics import AGENT_ATTR as AGENT_ATTR
from counterpoint.bus.metrics import DURATION_BUCKETS

_meter: Final = metrics.get_meter("counterpoint.agents")

# Tokens per call: the conventions' advice (powers of 4 up to 64M).
TOKEN_BUCKETS: Final = tuple(float(4 ** i) for i in range(14))
# A request takes seconds to minutes (the synthesis deadline is 30 s by default).
REQUEST_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0,
                          300.0, 600.0)

model_duration: Final = _meter.create_histogram(
    "gen_ai.client.operation.duration", unit="s",
    description="Model calls and how long each took (failed ones with error.type).",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
token_usage: Final = _meter.create_histogram(
    "gen_ai.client.token.usage", unit="{token}",
    description="Tokens per model call, input and output (gen_ai.token.type).",
    explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
model_cost: Final = _meter.create_counter(
    "counterpoint.llm.cost_usd", unit="{USD}",
    description="What model calls cost at the configured prices (agents/cost.py).")
budget_refusals: Final = _meter.create_counter(
    "counterpoint.budget.refusals", unit="{call}",
    description="Model calls not made because the step's budget could not pay for them.")
requests_finished: Final = _meter.create_counter(
    "counterpoint.requests.finished", unit="{request}",
    description="Results synthesis published, by status (complete or partial) and kind.")
request_duration: Final = _meter.create_histogram(
    "counterpoint.request.duration", unit="s",
    description="From a request's first event (its intake record) to its result, measured "
                "when synthesis publishes the result.",
    explicit_bucket_boundaries_advisory=REQUEST_BUCKETS)
approvals_decided: Final = _meter.create_counter(
    "counterpoint.approvals.decided", unit="{approval}",
    description="Decisions the approval desk settled, by decision and by whom (via).")
approvals_expired: Final = _meter.create_counter(
    "counterpoint.approvals.expired", unit="{approval}",
    description="Approvals nobody decided in time (escalated, never executed).")
webhook_deliveries: Final = _meter.create_counter(
    "counterpoint.webhook.deliveries", unit="{attempt}",
    description="Result webhook POSTs by outcome: delivered (2xx), failed (retried, then "
                "dead-lettered), rejected (another 4xx) or refused (egress policy).")

_desks: dict[str, weakref.WeakSet[Sized]] = {}


def watch_waiting(agent: str, pending: Sized) -> None:
    """Report `len(pending)` as the approvals `agent` has waiting, while `pending` lives."""
    _desks.setdefault(agent, weakref.WeakSet()).add(pending)


def _waiting(_options: CallbackOptions) -> Iterator[Observation]:
    for agent, desks in list(_desks.items()):
        yield Observation(sum(len(d) for d in list(desks)), {AGENT_ATTR: agent})


_meter.create_observable_up_down_counter(
    "counterpoint.approvals.waiting", [_waiting], unit="{approval}",
    description="Approvals waiting for a person in this process (its partitions).")
