"""The demo business's read-only tools, written as a user writes tools: `@tool` functions.

The demo business server (demo/server.py) serves them over MCP; a test can load them in-process
as a Python tool source. Every tool only reads (the store's connection is read-only too) and
gets the store injected, never from a model. Each answers with typed records and with `facts`
worded by demo/wording.py.

    lookup_customer         CRM: tier, plan, tenure, history notes (no email)
    list_invoices           billing: invoices with their payments
    get_account_status      auth: active/locked, lock reason, MFA, last password reset
    list_login_events       auth: recent login attempts (outcome, IP, reason)
    search_service_logs     monitoring: log lines around a time
    get_service_metrics     monitoring: metric series around a time
    list_recent_deploys     deploys in the week before a time
    search_knowledge_base   help articles and runbooks
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from counterpoint.agents.tools.define import Injected, tool
from counterpoint_demo import wording
from counterpoint_demo.store import BusinessStore
from counterpoint_demo.wording import Fact

# --- inputs ---------------------------------------------------------------------------------

CustomerId = Annotated[str, Field(min_length=1, max_length=64,
                                  description="the CRM id, e.g. C-42")]
Service = Annotated[str, Field(min_length=1, max_length=128, description="the service name")]
StartedAt = Annotated[datetime | None, Field(
    description="when the problem started (ISO 8601, UTC); omitted: around the service's "
                "newest data")]
ReportedBy = Annotated[Literal["alert", "customer"], Field(
    description="who gave started_at: an alert, or a customer's report")]
Queries = Annotated[list[Annotated[str, Field(min_length=1, max_length=10_000)]], Field(
    min_length=1, max_length=3,
    description="search phrases, most important first; an earlier phrase's matches rank first")]
Limit = Annotated[int, Field(ge=1, le=5, description="at most this many articles")]
Store = Annotated[BusinessStore, Injected()]


# --- outputs --------------------------------------------------------------------------------


class Record(BaseModel):
    """A typed record inside a tool's output."""

    model_config = ConfigDict(frozen=True)


class ToolOutput(Record):
    facts: list[Fact]


class CustomerRecord(Record):
    customer_id: str
    name: str
    tier: str
    plan: str
    customer_since: date
    tenure: str
    history: list[str]


class CustomerResult(ToolOutput):
    customer: CustomerRecord | None


class PaymentRecord(Record):
    id: str
    amount: Decimal
    currency: str
    charged_at: datetime
    card_last4: str
    status: str


class InvoiceRecord(Record):
    id: str
    period: str
    issued_on: date
    amount: Decimal
    currency: str
    status: str
    description: str
    payments: list[PaymentRecord]


class InvoicesResult(ToolOutput):
    invoices: list[InvoiceRecord]


class AccountRecord(Record):
    status: str
    locked_at: datetime | None
    lock_reason: str | None
    mfa_enabled: bool
    last_password_reset: datetime | None


class AccountResult(ToolOutput):
    account: AccountRecord | None


class LoginRecord(Record):
    time: datetime
    outcome: str
    ip: str
    reason: str | None


class LoginsResult(ToolOutput):
    events: list[LoginRecord]


class LogsResult(ToolOutput):
    service: str
    lines: int
    errors: int
    warnings: int


class MetricSeries(Record):
    name: str
    unit: str
    points: int
    low: float
    high: float


class MetricsResult(ToolOutput):
    service: str
    series: list[MetricSeries]


class DeployRecord(Record):
    id: str
    version: str
    deployed_at: datetime
    author: str
    summary: str


class DeploysResult(ToolOutput):
    service: str
    deploys: list[DeployRecord]


class ArticleRecord(Record):
    id: str
    title: str
    excerpt: str
    tags: list[str]


class ArticlesResult(ToolOutput):
    articles: list[ArticleRecord]


# --- the tools ------------------------------------------------------------------------------


@tool
def lookup_customer(customer_id: CustomerId, *, store: Store) -> CustomerResult:
    """Look up a customer in the CRM: tier, plan, tenure and history notes."""
    customer = store.customer(customer_id)
    if customer is None:
        return CustomerResult(customer=None, facts=[Fact(
            text=f"No customer {customer_id} exists in the CRM.",
            source=f"crm.customers/{customer_id}")])
    tenure = customer.tenure_text(datetime.now(UTC).date())
    record = CustomerRecord(customer_id=customer.id, name=customer.name, tier=customer.tier,
                            plan=customer.plan, customer_since=customer.customer_since,
                            tenure=tenure, history=list(customer.notes))
    return CustomerResult(customer=record, facts=[Fact(
        text=f"Customer {customer.id} is on the {customer.tier} tier ({customer.plan}), a "
             f"customer for {tenure}.", source=f"crm.customers/{customer.id}")])


@tool
def list_invoices(customer_id: CustomerId, *, store: Store) -> InvoicesResult:
    """List a customer's invoices, newest first, each with its payments; facts flag duplicate,
    mismatched, unpaid and failed payments."""
    found = store.customer(customer_id) is not None
    invoices = store.invoices(customer_id) if found else []
    return InvoicesResult(
        invoices=[InvoiceRecord(
            id=i.id, period=i.period, issued_on=i.issued_on, amount=i.amount,
            currency=i.currency, status=i.status, description=i.description,
            payments=[PaymentRecord(id=p.id, amount=p.amount, currency=p.currency,
                                    charged_at=p.charged_at, card_last4=p.card_last4,
                                    status=p.status) for p in i.payments])
            for i in invoices],
        facts=wording.invoice_facts(store, customer_id))


@tool
def get_account_status(customer_id: CustomerId, *, store: Store) -> AccountResult:
    """A customer's login account: active or locked (since when and why), MFA, last password
    reset."""
    status = store.account_status(customer_id)
    record = None if status is None else AccountRecord(
        status=status.status, locked_at=status.locked_at, lock_reason=status.lock_reason,
        mfa_enabled=status.mfa_enabled, last_password_reset=status.last_password_reset)
    return AccountResult(account=record,
                         facts=wording.account_status_facts(store, customer_id))


@tool
def list_login_events(customer_id: CustomerId, *, store: Store) -> LoginsResult:
    """A customer's recent login attempts, newest first (outcome, IP, reason); facts summarise
    failures since the last success."""
    events = store.login_events(customer_id)
    return LoginsResult(
        events=[LoginRecord(time=e.time, outcome=e.outcome, ip=e.ip, reason=e.reason)
                for e in events],
        facts=wording.login_facts(store, customer_id))


def _anchor(store: BusinessStore, service: str, started_at: datetime | None) -> datetime | None:
    if service not in store.services():
        return None
    return started_at or store.latest_observation(service)


@tool
def search_service_logs(service: Service, started_at: StartedAt = None,
                        reported_by: ReportedBy = "alert", *, store: Store) -> LogsResult:
    """A service's log lines within 30 minutes of a time; facts count ERROR lines and name the
    commonest error messages."""
    anchor = _anchor(store, service, started_at)
    lines = [] if anchor is None else store.service_logs(service, anchor, wording.LOG_WINDOW)
    return LogsResult(
        service=service, lines=len(lines), errors=sum(x.level == "ERROR" for x in lines),
        warnings=sum(x.level == "WARN" for x in lines),
        facts=wording.service_facts(store, service, "logs", started_at, reported_by))


@tool
def get_service_metrics(service: Service, started_at: StartedAt = None,
                        reported_by: ReportedBy = "alert", *, store: Store) -> MetricsResult:
    """A service's metrics within 30 minutes of a time; facts say which rose or fell at that
    time."""
    anchor = _anchor(store, service, started_at)
    points = ([] if anchor is None
              else store.service_metrics(service, anchor, wording.METRIC_WINDOW))
    series = []
    for name in dict.fromkeys(p.name for p in points):
        values = [p for p in points if p.name == name]
        series.append(MetricSeries(name=name, unit=values[0].unit, points=len(values),
                                   low=min(p.value for p in values),
                                   high=max(p.value for p in values)))
    return MetricsResult(
        service=service, series=series,
        facts=wording.service_facts(store, service, "metrics", started_at, reported_by))


@tool
def list_recent_deploys(service: Service, started_at: StartedAt = None,
                        reported_by: ReportedBy = "alert", *, store: Store) -> DeploysResult:
    """A service's deploys in the 7 days before a time, newest first."""
    anchor = _anchor(store, service, started_at)
    deploys = ([] if anchor is None
               else store.deploys(service, anchor, wording.DEPLOY_LOOKBACK))
    return DeploysResult(
        service=service,
        deploys=[DeployRecord(id=d.id, version=d.version, deployed_at=d.deployed_at,
                              author=d.author, summary=d.summary) for d in deploys],
        facts=wording.service_facts(store, service, "deploys", started_at, reported_by))


@tool
def search_knowledge_base(queries: Queries, limit: Limit = 3, *,
                          store: Store) -> ArticlesResult:
    """Search help articles and runbooks."""
    articles = wording.find_articles(store, list(queries), limit)
    facts = wording.article_facts(articles) or [Fact(
        text=f"No knowledge-base article matches {queries[0]!r}.", source="kb.articles")]
    return ArticlesResult(
        articles=[ArticleRecord(id=a.id, title=a.title, excerpt=wording.article_excerpt(a),
                                tags=a.tags) for a in articles],
        facts=facts)
