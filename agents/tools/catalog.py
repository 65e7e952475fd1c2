"""The investigators' tools over the business systems, and which agent may use which.

Every tool here only reads (the store's connection is read-only too). Each answers with typed
records and with `facts` worded by agents/tools/facts.py, the same sentences the findings and
the offline templates use.

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
from typing import Annotated, Final, Literal

from pydantic import Field

from counterpoint.agents.tools import facts as wording
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.registry import Record, Registry, Tool, ToolInput, ToolOutput
from counterpoint.schemas.events import Fact

# --- inputs ---------------------------------------------------------------------------------


class CustomerQuery(ToolInput):
    customer_id: str = Field(min_length=1, max_length=64, description="the CRM id, e.g. C-42")


ReportedBy = Literal["alert", "customer"]


class ServiceQuery(ToolInput):
    service: str = Field(min_length=1, max_length=128, description="the service name")
    started_at: datetime | None = Field(
        default=None, description="when the problem started (ISO 8601, UTC); omitted: around "
                                  "the service's newest data")
    reported_by: ReportedBy = Field(
        default="alert", description="who gave started_at: an alert, or a customer's report")


class KnowledgeQuery(ToolInput):
    queries: list[Annotated[str, Field(min_length=1, max_length=10_000)]] = Field(
        min_length=1, max_length=3, description=(
        "search phrases, most important first; an earlier phrase's matches rank first"))
    limit: int = Field(default=3, ge=1, le=5, description="at most this many articles")


# --- outputs --------------------------------------------------------------------------------


class CustomerRecord(Record):
    id: str
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


def lookup_customer(store: BusinessStore, q: CustomerQuery) -> CustomerResult:
    customer = store.customer(q.customer_id)
    if customer is None:
        return CustomerResult(customer=None, facts=[Fact(
            text=f"No customer {q.customer_id} exists in the CRM.",
            source=f"crm.customers/{q.customer_id}")])
    tenure = customer.tenure_text(datetime.now(UTC).date())
    record = CustomerRecord(id=customer.id, name=customer.name, tier=customer.tier,
                            plan=customer.plan, customer_since=customer.customer_since,
                            tenure=tenure, history=list(customer.notes))
    return CustomerResult(customer=record, facts=[Fact(
        text=f"Customer {customer.id} is on the {customer.tier} tier ({customer.plan}), a "
             f"customer for {tenure}.", source=f"crm.customers/{customer.id}")])


def list_invoices(store: BusinessStore, q: CustomerQuery) -> InvoicesResult:
    found = store.customer(q.customer_id) is not None
    invoices = store.invoices(q.customer_id) if found else []
    return InvoicesResult(
        invoices=[InvoiceRecord(
            id=i.id, period=i.period, issued_on=i.issued_on, amount=i.amount,
            currency=i.currency, status=i.status, description=i.description,
            payments=[PaymentRecord(id=p.id, amount=p.amount, currency=p.currency,
                                    charged_at=p.charged_at, card_last4=p.card_last4,
                                    status=p.status) for p in i.payments])
            for i in invoices],
        facts=wording.invoice_facts(store, q.customer_id))


def get_account_status(store: BusinessStore, q: CustomerQuery) -> AccountResult:
    status = store.account_status(q.customer_id)
    record = None if status is None else AccountRecord(
        status=status.status, locked_at=status.locked_at, lock_reason=status.lock_reason,
        mfa_enabled=status.mfa_enabled, last_password_reset=status.last_password_reset)
    return AccountResult(account=record,
                         facts=wording.account_status_facts(store, q.customer_id))


def list_login_events(store: BusinessStore, q: CustomerQuery) -> LoginsResult:
    events = store.login_events(q.customer_id)
    return LoginsResult(
        events=[LoginRecord(time=e.time, outcome=e.outcome, ip=e.ip, reason=e.reason)
                for e in events],
        facts=wording.login_facts(store, q.customer_id))


def _anchor(store: BusinessStore, q: ServiceQuery) -> datetime | None:
    if q.service not in store.services():
        return None
    return q.started_at or store.latest_observation(q.service)


def search_service_logs(store: BusinessStore, q: ServiceQuery) -> LogsResult:
    anchor = _anchor(store, q)
    lines = [] if anchor is None else store.service_logs(q.service, anchor, wording.LOG_WINDOW)
    return LogsResult(
        service=q.service, lines=len(lines), errors=sum(x.level == "ERROR" for x in lines),
        warnings=sum(x.level == "WARN" for x in lines),
        facts=wording.service_facts(store, q.service, "logs", q.started_at, q.reported_by))


def get_service_metrics(store: BusinessStore, q: ServiceQuery) -> MetricsResult:
    anchor = _anchor(store, q)
    points = ([] if anchor is None
              else store.service_metrics(q.service, anchor, wording.METRIC_WINDOW))
    names = list(dict.fromkeys(p.name for p in points))
    series = []
    for name in names:
        values = [p for p in points if p.name == name]
        series.append(MetricSeries(name=name, unit=values[0].unit, points=len(values),
                                   low=min(p.value for p in values),
                                   high=max(p.value for p in values)))
    return MetricsResult(
        service=q.service, series=series,
        facts=wording.service_facts(store, q.service, "metrics", q.started_at, q.reported_by))


def list_recent_deploys(store: BusinessStore, q: ServiceQuery) -> DeploysResult:
    anchor = _anchor(store, q)
    deploys = ([] if anchor is None
               else store.deploys(q.service, anchor, wording.DEPLOY_LOOKBACK))
    return DeploysResult(
        service=q.service,
        deploys=[DeployRecord(id=d.id, version=d.version, deployed_at=d.deployed_at,
                              author=d.author, summary=d.summary) for d in deploys],
        facts=wording.service_facts(store, q.service, "deploys", q.started_at, q.reported_by))


def search_knowledge_base(store: BusinessStore, q: KnowledgeQuery) -> ArticlesResult:
    articles = wording.find_articles(store, list(q.queries), q.limit)
    facts = wording.article_facts(articles) or [Fact(
        text=f"No knowledge-base article matches {q.queries[0]!r}.", source="kb.articles")]
    return ArticlesResult(
        articles=[ArticleRecord(id=a.id, title=a.title, excerpt=wording.article_excerpt(a),
                                tags=a.tags) for a in articles],
        facts=facts)


TOOLS: Final[list[Tool]] = [  # type: ignore[type-arg]
    Tool("lookup_customer", "Look up a customer in the CRM: tier, plan, tenure and history "
         "notes.", CustomerQuery, CustomerResult, lookup_customer),
    Tool("list_invoices", "List a customer's invoices, newest first, each with its payments; "
         "facts flag duplicate, mismatched, unpaid and failed payments.", CustomerQuery,
         InvoicesResult, list_invoices),
    Tool("get_account_status", "A customer's login account: active or locked (since when and "
         "why), MFA, last password reset.", CustomerQuery, AccountResult, get_account_status),
    Tool("list_login_events", "A customer's recent login attempts, newest first (outcome, IP, "
         "reason); facts summarise failures since the last success.", CustomerQuery,
         LoginsResult, list_login_events),
    Tool("search_service_logs", "A service's log lines within 30 minutes of a time; facts "
         "count ERROR lines and name the commonest error messages.", ServiceQuery, LogsResult,
         search_service_logs),
    Tool("get_service_metrics", "A service's metrics within 30 minutes of a time; facts say "
         "which rose or fell at that time.", ServiceQuery, MetricsResult, get_service_metrics),
    Tool("list_recent_deploys", "A service's deploys in the 7 days before a time, newest "
         "first.", ServiceQuery, DeploysResult, list_recent_deploys),
    Tool("search_knowledge_base", "Search help articles and runbooks.", KnowledgeQuery,
         ArticlesResult, search_knowledge_base),
]

CATALOG: Final = Registry(TOOLS)

# Which tools each agent may call. Anything not listed is refused, unrun.
ALLOWLISTS: Final[dict[str, tuple[str, ...]]] = {
    "billing": ("lookup_customer", "list_invoices", "search_knowledge_base"),
    "account": ("lookup_customer", "get_account_status", "list_login_events",
                "search_knowledge_base"),
    "infrastructure": ("search_service_logs", "get_service_metrics", "list_recent_deploys",
                       "search_knowledge_base"),
    "knowledge": ("search_knowledge_base",),
    "triage": (),
    "synthesis": (),
}


def allowlist(agent: str) -> tuple[str, ...]:
    """The tools `agent` may call; none for an agent not listed."""
    return ALLOWLISTS.get(agent, ())
