"""Event models for every boundary a Counterpoint request crosses.

Intake models (`Ticket`, `AlertmanagerWebhook`, `SimpleAlert`) describe what business systems
send, so they accept and keep extra fields. Internal models are strict (`extra="forbid"`): an
internal event with an unknown field is a bug or a version skew and must be dead-lettered, not
half-understood.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as _ValidationError

SCHEMA_VERSION = "1"


class _Intake(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class _Internal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- intake ---------------------------------------------------------------------------------

_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


def _http_url(value: str) -> str:
    """A URL one can POST to: http(s), a host, a valid port (WHATWG parsing, as browsers and
    HTTP clients parse it) and DNS-sized host labels. Checked at intake, so a bad one is a 4xx
    there rather than a failure later; where it may point is the webhooks agent's business.
    The text is kept as sent."""
    try:
        url = _HTTP_URL.validate_python(value)
    except _ValidationError as exc:
        raise ValueError(f"not a valid http(s) URL: {exc.errors()[0]['msg']}") from None
    host = (url.host or "").rstrip(".")
    if not host.startswith("[") and not host.replace(".", "").isdigit():
        labels = host.split(".")
        if len(host) > 253 or any(not 0 < len(label) <= 63 for label in labels):
            raise ValueError(f"not a valid http(s) URL: host {host[:80]!r} is not a valid "
                             "DNS name (labels of 1-63 characters, 253 in all)")
    return value


# Where a request's result is POSTed when it is ready (see agents/webhooks.py); optional on
# every intake shape, so a business system can ask for a callback per request.
CallbackUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000),
                        AfterValidator(_http_url)]
# What a request may spend on model calls (unset = COUNTERPOINT_REQUEST_BUDGET_USD): a finite
# number >= 0. Strict, so true/false and strings such as "inf" are refused, not coerced.
BudgetUsd = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class Ticket(_Intake):
    """A help-desk ticket as any business system publishes it on `intake.tickets`."""

    id: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=100_000)]
    customer_id: str | None = None
    subject: str | None = None
    channel: str | None = None
    budget_usd: BudgetUsd | None = None
    callback_url: CallbackUrl | None = None


class AlertmanagerAlert(_Intake):
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class AlertmanagerWebhook(_Intake):
    """Prometheus Alertmanager webhook body, version 4."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    groupKey: str
    alerts: Annotated[list[AlertmanagerAlert], Field(min_length=1)]
    receiver: str | None = None
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    truncatedAlerts: int = 0
    budget_usd: BudgetUsd | None = None
    callback_url: CallbackUrl | None = None


class SimpleAlert(_Intake):
    """The minimal alert shape for systems that are not Alertmanager."""

    id: Annotated[str, Field(min_length=1, max_length=200)]
    service: Annotated[str, Field(min_length=1)]
    severity: str = "warning"
    summary: Annotated[str, Field(min_length=1)]
    starts_at: datetime | None = None
    budget_usd: BudgetUsd | None = None
    callback_url: CallbackUrl | None = None


Alert = AlertmanagerWebhook | SimpleAlert
ALERT_ADAPTER: TypeAdapter[Alert] = TypeAdapter(Alert)


# --- internal -------------------------------------------------------------------------------

# A skill is open: any name an investigator registers a task topic for
# (topics/registry.py task_topic), not a fixed list.
SKILL_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
Skill = Annotated[str, Field(pattern=SKILL_PATTERN)]
RequestKind = Literal["ticket", "alert"]


class Usage(_Internal):
    """Token usage of one or more model calls. `estimated` is true when no model counted them.

    `input_tokens` counts every input token; `cache_read_tokens` and `cache_write_tokens` are
    the parts of it read from or written to the prompt cache (priced differently).
    `cost_usd` is what the calls cost at the configured prices (agents/cost.py).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    estimated: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            calls=self.calls + other.calls,
            estimated=self.estimated or other.estimated,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class Budget(_Internal):
    """A request's spending limit on model calls, travelling with the request's events."""

    limit_usd: float | None = None  # None: no limit
    spent_usd: float = 0.0  # spent by the steps before the event carrying this
    allowance_usd: float | None = None  # what the step receiving this event may spend
    ran_out: list[str] = Field(default_factory=list)  # steps that skipped the model for it


class Reused(_Internal):
    """The investigation whose finding a duplicate task reused instead of investigating again."""

    task_id: str
    request_id: str
    at: datetime  # when that investigation finished


class PastOutcome(_Internal):
    """A finished request remembered for the same customer or service (agents/outcomes.py)."""

    request_id: str
    source_id: str
    kind: str
    title: str
    summary: str
    status: str
    completed_at: datetime
    customer_id: str | None = None
    service: str | None = None


class Generation(_Internal):
    """Who produced a piece of text: a model, or the offline provider (never disguised)."""

    provider: str
    model: str
    offline: bool


class Subject(_Internal):
    """What a request is about, normalised from a ticket or an alert."""

    kind: RequestKind
    source_id: str
    title: str
    text: str
    customer_id: str | None = None
    service: str | None = None
    severity: str | None = None
    started_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    # Where the result goes besides synthesis.results (agents/webhooks.py), and the intake
    # event's CloudEvents source, which per-source webhook configuration matches on.
    callback_url: str | None = None
    origin: str | None = None


class PlannedInvestigation(_Internal):
    task_id: str
    skill: Skill
    focus: str


class TriageDecision(_Internal):
    """Triage's plan for one request: synthesis waits for exactly `investigations`."""

    request_id: str
    subject: Subject
    category: str
    intents: list[str]
    priority: Literal["low", "normal", "high", "urgent"]
    severity: Literal["info", "warning", "critical"] | None = None
    investigations: list[PlannedInvestigation]
    deadline_at: datetime
    rationale: str
    generation: Generation
    usage: Usage
    budget: Budget | None = None
    # When the request's first event (its intake record) was published: synthesis measures
    # the request's end-to-end latency from it. None from a triage that predates it.
    received_at: datetime | None = None


class InvestigationTask(_Internal):
    task_id: str
    request_id: str
    skill: Skill
    focus: str
    subject: Subject
    budget: Budget | None = None


class Fact(_Internal):
    """One concrete, checkable observation with where it came from."""

    text: str
    source: str


class Finding(_Internal):
    task_id: str
    request_id: str
    skill: Skill
    focus: str
    agent: str
    summary: str
    facts: list[Fact]
    recommended_actions: list[str] = Field(default_factory=list)
    generation: Generation
    usage: Usage
    reused_from: Reused | None = None
    budget_ran_out: bool = False


class FindingRef(_Internal):
    task_id: str
    skill: Skill
    focus: str
    agent: str
    summary: str
    facts: list[Fact]
    reused_from: Reused | None = None


class ProposedAction(_Internal):
    """An action synthesis recommends. Nothing executes it yet: `status` says so."""

    action: str
    target: str
    risk: Literal["low", "medium", "high"]
    status: Literal["proposed"] = "proposed"


class AlertResolved(_Internal):
    """Alertmanager says an alert stopped firing: close the request opened for it.

    Published by triage on `triage.closures` under the request id of the alert's firing
    notification (see schemas/identity.py), so it meets that request's plan in synthesis.
    """

    request_id: str
    source_id: str
    title: str
    resolved_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    callback_url: str | None = None
    origin: str | None = None


class Resolution(_Internal):
    """How a request was closed. `during` says whether its investigation was still running
    (`investigation`), had already produced a result (`after`), or was never seen (`unseen`)."""

    state: Literal["resolved"] = "resolved"
    resolved_at: datetime | None = None
    during: Literal["investigation", "after", "unseen"]


class WebhookDelivery(_Internal):
    """A result POSTed to a webhook and acknowledged (2xx) by the receiver."""

    request_id: str
    result_id: str
    url: str  # scheme, host and path only: a query string may carry a receiver's secret
    attempts: int
    status_code: int
    delivered_at: datetime


class Result(_Internal):
    """The final answer for one request, published on `synthesis.results`."""

    request_id: str
    source_id: str
    kind: Literal["reply", "runbook"]
    title: str
    text: str
    priority: str
    status: Literal["complete", "partial"]
    missing: list[str] = Field(default_factory=list)
    findings: list[FindingRef]
    proposed_actions: list[ProposedAction] = Field(default_factory=list)
    customer: dict[str, Any] | None = None
    generation: Generation
    usage: Usage
    usage_by_step: dict[str, Usage] = Field(default_factory=dict)
    completed_at: datetime
    models_by_step: dict[str, str] = Field(default_factory=dict)  # which model answered each
    budget: Budget | None = None
    history: list[PastOutcome] = Field(default_factory=list)  # earlier requests offered
    customer_id: str | None = None
    service: str | None = None
    # Set when the alert behind the request resolved: the request is closed.
    resolution: Resolution | None = None
    callback_url: str | None = None
    origin: str | None = None
