"""What the demo business's tools say about their records: checkable facts, each naming the
record it came from (the `facts` of every tool output, demo/tools.py).

A model (or Counterpoint's offline rules) turns them into prose later; these functions never
guess. When there is nothing to report they still return one fact saying what was checked, so a
missing customer or service is an answer, not an exception.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from counterpoint_demo.store import (
    Article,
    BusinessStore,
    Deploy,
    Invoice,
    LoginEvent,
    MetricPoint,
)

LOG_WINDOW = timedelta(minutes=30)
METRIC_WINDOW = timedelta(minutes=30)
DEPLOY_LOOKBACK = timedelta(days=7)
_TIMES = {1: "once", 2: "twice"}


class Fact(BaseModel):
    """One concrete, checkable observation with where it came from."""

    model_config = ConfigDict(frozen=True)

    text: str
    source: str


# --- formatting -----------------------------------------------------------------------------


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def _day(moment: date) -> str:
    return f"{moment.day} {moment:%b %Y}"


def _clock(moment: datetime, reference: datetime | None = None) -> str:
    """"13:42 UTC" on the reference day, "17 Nov 2026 10:05 UTC" otherwise."""
    if reference is not None and moment.date() == reference.date():
        return f"{moment:%H:%M} UTC"
    return f"{_day(moment)} {moment:%H:%M} UTC"


def _gap(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{minutes // (24 * 60)} days"


def _value(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:g} {unit}".strip()


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _known_customer_gate(store: BusinessStore, customer_id: str, table: str) -> list[Fact]:
    if store.customer(customer_id) is None:
        return [Fact(text=f"No customer {customer_id} exists; {table} has no records "
                          "to check.", source=f"crm.customers/{customer_id}")]
    return []


# --- billing --------------------------------------------------------------------------------


def invoice_facts(store: BusinessStore, customer_id: str) -> list[Fact]:
    """Duplicate, mismatched, unpaid and failed payments of one customer's invoices."""
    if gate := _known_customer_gate(store, customer_id, "billing.invoices"):
        return gate
    invoices = store.invoices(customer_id)
    if not invoices:
        return [Fact(text=f"Customer {customer_id} has no invoices.",
                     source=f"billing.invoices?customer={customer_id}")]
    facts: list[Fact] = []
    normal: list[str] = []
    for invoice in invoices:
        found = _invoice_facts(invoice)
        facts.extend(found)
        if not found and sum(p.status == "succeeded" for p in invoice.payments) == 1:
            normal.append(invoice.id)
    if normal:
        facts.append(Fact(text=_paid_once(normal, len(invoices), others=bool(facts)),
                          source=f"billing.invoices?customer={customer_id}"))
    return facts


def _paid_once(ids: list[str], total: int, others: bool) -> str:
    if len(ids) == 1:
        return f"{'The other invoice' if others else 'Invoice'} {ids[0]} was paid once, " \
               "for the billed amount."
    if others:
        who = "The other invoices"
    elif len(ids) == total:
        who = "Both invoices" if total == 2 else f"All {total} invoices"
    else:
        who = "Invoices"
    return f"{who} ({_join(ids)}) were each paid once, for the billed amount."


def _invoice_facts(invoice: Invoice) -> list[Fact]:
    source = f"billing.invoices/{invoice.id}"
    billed = _money(invoice.amount, invoice.currency)
    paid = [p for p in invoice.payments if p.status == "succeeded"]
    failed = [p for p in invoice.payments if p.status == "failed"]
    facts: list[Fact] = []
    if len(paid) > 1:
        days = sorted({p.charged_at.date() for p in paid})
        when = f"on {_day(days[0])}" if len(days) == 1 else (
            f"between {_day(days[0])} and {_day(days[-1])}")
        cards = sorted({p.card_last4 for p in paid})
        card = f"card ending {cards[0]}" if len(cards) == 1 else f"cards ending {_join(cards)}"
        times = _TIMES.get(len(paid), f"{len(paid)} times")
        facts.append(Fact(
            text=f"Invoice {invoice.id} ({billed}) was charged {times} {when}: "
                 f"{_join([p.id for p in paid])}, {card}.",
            source=source,
        ))
        total = sum((p.amount for p in paid), Decimal(0))
        spread = _gap(paid[-1].charged_at - paid[0].charged_at)
        extra = _money(total - invoice.amount, invoice.currency)
        facts.append(Fact(
            text=f"The charges for {invoice.id} were {spread} apart and total "
                 f"{_money(total, invoice.currency)}: {extra} more than billed.",
            source=f"billing.payments?invoice={invoice.id}",
        ))
    elif paid and paid[0].amount != invoice.amount:
        facts.append(Fact(
            text=f"Invoice {invoice.id} was billed {billed} but {paid[0].id} charged "
                 f"{_money(paid[0].amount, paid[0].currency)}.",
            source=source,
        ))
    elif not paid and invoice.status == "open":
        facts.append(Fact(text=f"Invoice {invoice.id} ({billed}) is unpaid.", source=source))
    if failed:
        facts.append(Fact(
            text=f"Invoice {invoice.id} has {len(failed)} failed payment attempt(s): "
                 f"{_join([p.id for p in failed])}.",
            source=f"billing.payments?invoice={invoice.id}",
        ))
    return facts


# --- account --------------------------------------------------------------------------------


def account_status_facts(store: BusinessStore, customer_id: str) -> list[Fact]:
    """Whether the login account is active or locked (since when, why), MFA, password reset."""
    if gate := _known_customer_gate(store, customer_id, "auth.accounts"):
        return gate
    source = f"auth.accounts/{customer_id}"
    status = store.account_status(customer_id)
    facts: list[Fact] = []
    if status is None:
        facts.append(Fact(text=f"No login account exists for customer {customer_id}.",
                          source=source))
    else:
        if status.status == "locked":
            since = f" since {_clock(status.locked_at)}" if status.locked_at else ""
            reason = f"; reason: {status.lock_reason}" if status.lock_reason else ""
            facts.append(Fact(text=f"Account {customer_id} has been locked{since}{reason}.",
                              source=source))
        else:
            facts.append(Fact(text=f"Account {customer_id} is {status.status}.", source=source))
        reset = (f"last password reset {_day(status.last_password_reset)}"
                 if status.last_password_reset else "no password reset on record")
        facts.append(Fact(
            text=f"MFA is {'enabled' if status.mfa_enabled else 'not enabled'}; {reset}.",
            source=source,
        ))
    return facts


def login_facts(store: BusinessStore, customer_id: str) -> list[Fact]:
    """Failed logins since the last success (how many, why, from where) and the last success."""
    if gate := _known_customer_gate(store, customer_id, "auth.login_events"):
        return gate
    return _login_facts(customer_id, store.login_events(customer_id))


def _login_facts(customer_id: str, events: list[LoginEvent]) -> list[Fact]:
    source = f"auth.login_events?customer={customer_id}"
    if not events:
        return [Fact(text=f"No login events are recorded for {customer_id}.", source=source)]
    # The trouble is what happened since the last successful login (events are newest first).
    recent = []
    for event in events:
        if event.outcome == "success":
            break
        recent.append(event)
    successes = [e for e in events if e.outcome == "success"]
    failures = sorted((e for e in recent if e.outcome == "failure"), key=lambda e: e.time)
    facts: list[Fact] = []
    if failures:
        ips = sorted({e.ip for e in failures})
        reasons = sorted({e.reason for e in failures if e.reason})
        why = f" ({', '.join(reasons)})" if reasons else ""
        first, last = failures[0].time, failures[-1].time
        span = (f"on {_day(first)} between {first:%H:%M} and {last:%H:%M} UTC"
                if first.date() == last.date() else f"from {_clock(first)} to {_clock(last)}")
        source_ips = f"all from {ips[0]}" if len(ips) == 1 else f"from {_join(ips)}"
        text = f"{len(failures)} failed logins{why} {span}, {source_ips}"
        locks = [e for e in recent if e.outcome == "locked"]
        if locks:
            text += f", then the account was locked at {_clock(locks[0].time, last)}"
        facts.append(Fact(text=text + ".", source=source))
        known = {e.ip for e in successes}
        unknown = [ip for ip in ips if ip not in known]
        if successes and unknown:
            facts.append(Fact(
                text=f"{_join(unknown)} {'does' if len(unknown) == 1 else 'do'} not appear in "
                     f"the {len(successes)} earlier successful logins on record.",
                source=source,
            ))
    if successes:
        last_ok = successes[0]
        facts.append(Fact(
            text=f"Last successful login: {_clock(last_ok.time)} from {last_ok.ip}.",
            source=source,
        ))
    else:
        facts.append(Fact(text=f"No successful login among the last {len(events)} events.",
                          source=source))
    return facts


# --- infrastructure -------------------------------------------------------------------------


def service_facts(store: BusinessStore, service: str, focus: str,
                  started_at: datetime | None = None, reported_by: str = "alert") -> list[Fact]:
    """Logs, metrics and/or deploys of `service` (by `focus`) around `started_at`, which an
    alert or a customer (`reported_by`) gave; without it, around the service's newest data."""
    if service not in store.services():
        return [Fact(text=f"No service named {service} is monitored "
                          f"(known: {', '.join(store.services())}); no {focus} to check.",
                     source="monitoring.services")]
    anchor = started_at or store.latest_observation(service)
    if anchor is None:
        return [Fact(text=f"No logs or metrics are recorded for {service}.",
                     source=f"monitoring.services/{service}")]
    label = ("the alert started" if started_at and reported_by == "alert"
             else "the reported start" if started_at else "the newest data")
    wanted = focus.lower()
    parts = [p for p in ("log", "metric", "deploy") if p in wanted] or ["log", "metric", "deploy"]
    facts: list[Fact] = []
    if "log" in parts:
        facts += _log_facts(store, service, anchor, label)
    if "metric" in parts:
        facts += _metric_facts(store, service, anchor)
    if "deploy" in parts:
        facts += _deploy_facts(store.deploys(service, anchor, DEPLOY_LOOKBACK), service, anchor,
                               label)
    return facts


def _log_facts(store: BusinessStore, service: str, anchor: datetime, label: str) -> list[Fact]:
    lines = store.service_logs(service, anchor, LOG_WINDOW)
    source = f"monitoring.logs?service={service}"
    start, end = anchor - LOG_WINDOW, anchor + LOG_WINDOW
    span = (f"between {start:%H:%M} and {end:%H:%M} UTC on {_day(anchor)}"
            if start.date() == end.date() else f"between {_clock(start)} and {_clock(end)}")
    errors = [line for line in lines if line.level == "ERROR"]
    if not errors:
        warns = sum(line.level == "WARN" for line in lines)
        return [Fact(text=f"{service} logged no ERROR lines {span} "
                          f"({len(lines)} lines, {warns} WARN).", source=source)]
    before = sum(e.time < anchor for e in errors)
    facts = [Fact(
        text=f"{service} logged {len(errors)} ERROR lines {span}; the first at "
             f"{errors[0].time:%H:%M:%S} UTC, {before or 'none'} before {label} "
             f"({anchor:%H:%M} UTC).",
        source=source,
    )]
    # Group messages that differ only in numbers (counts, durations) to find the patterns.
    patterns = Counter(re.sub(r"\d+", "#", e.message) for e in errors)
    examples = {re.sub(r"\d+", "#", e.message): e.message for e in reversed(errors)}
    for pattern, count in sorted(patterns.items(), key=lambda p: (-p[1], p[0]))[:2]:
        facts.append(Fact(text=f"{count}x ERROR in {service}: \"{examples[pattern]}\"",
                          source=source))
    return facts


def _metric_facts(store: BusinessStore, service: str, anchor: datetime) -> list[Fact]:
    points = store.service_metrics(service, anchor, METRIC_WINDOW)
    if not points:
        return [Fact(text=f"No metrics for {service} within {_gap(METRIC_WINDOW)} of "
                          f"{_clock(anchor)}.", source=f"monitoring.metrics?service={service}")]
    by_name: dict[str, list[MetricPoint]] = {}
    for point in points:
        by_name.setdefault(point.name, []).append(point)
    return [_metric_fact(service, name, series, anchor) for name, series in by_name.items()]


def _metric_fact(service: str, name: str, series: list[MetricPoint], anchor: datetime) -> Fact:
    source = f"monitoring.metrics/{service}/{name}"
    unit = series[0].unit
    before = [p.value for p in series if p.time < anchor]
    after = [p for p in series if p.time >= anchor]
    if not before or not after:
        values = [p.value for p in series]
        return Fact(text=f"{service} {name} ranged {_value(min(values), unit)}-"
                         f"{_value(max(values), unit)} around {_clock(anchor)}.", source=source)
    base = statistics.median(before)
    peak = max(after, key=lambda p: p.value)
    settled = statistics.median(p.value for p in after)
    # The seeded noise is a few percent: a move by half again is a change worth naming.
    if settled >= 1.5 * base or peak.value >= 3 * base:
        return Fact(text=f"{service} {name} rose from about {_value(base, unit)} before "
                         f"{_clock(anchor, anchor)} to {_value(settled, unit)} after (peak "
                         f"{_value(peak.value, unit)} at {_clock(peak.time, anchor)}).",
                    source=source)
    if settled <= base / 1.5:
        return Fact(text=f"{service} {name} fell from about {_value(base, unit)} to "
                         f"{_value(settled, unit)} after {_clock(anchor)}.", source=source)
    return Fact(text=f"{service} {name} was steady around {_value(settled, unit)} within "
                     f"{_gap(METRIC_WINDOW)} of {_clock(anchor)}.", source=source)


def _deploy_facts(deploys: list[Deploy], service: str, anchor: datetime, label: str) -> list[Fact]:
    if not deploys:
        return [Fact(text=f"No {service} deploys in the {_gap(DEPLOY_LOOKBACK)} before "
                          f"{_clock(anchor)}.", source=f"deploys?service={service}")]
    latest, *earlier = deploys
    facts = [Fact(
        text=f"{service} deploy {latest.version} by {latest.author} at "
             f"{_clock(latest.deployed_at, anchor)}, {_gap(anchor - latest.deployed_at)} before "
             f"{label}: {latest.summary} ({latest.id}).",
        source=f"deploys/{latest.id}",
    )]
    if earlier:
        listed = [f"{d.version} on {_day(d.deployed_at)} by {d.author}" for d in earlier]
        facts.append(Fact(
            text=f"The version before {latest.version} was {earlier[0].version}; earlier "
                 f"{service} deploys in the last {_gap(DEPLOY_LOOKBACK)}: {'; '.join(listed)}.",
            source=f"deploys?service={service}",
        ))
    return facts


# --- knowledge ------------------------------------------------------------------------------


def find_articles(store: BusinessStore, queries: list[str], limit: int = 3) -> list[Article]:
    """Articles matching any query; an earlier query's matches rank before a later one's."""
    found: dict[str, Article] = {}
    for query in queries:
        for article in store.search_articles(query) if query.strip() else []:
            found.setdefault(article.id, article)
    return list(found.values())[:limit]


def article_facts(articles: list[Article]) -> list[Fact]:
    return [
        Fact(text=f"{a.id} \"{a.title}\": {_first_sentences(a.body, 2)}", source=f"kb/{a.id}")
        for a in articles
    ]


def article_excerpt(article: Article) -> str:
    return _first_sentences(article.body, 2)


def _first_sentences(text: str, count: int) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(sentences[:count])
