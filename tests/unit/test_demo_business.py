"""The demo business: its database (created only by itself, never over a file it did not
make), its queries, and what its tools say, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from counterpoint.schemas.events import ALERT_ADAPTER, AlertmanagerWebhook, Ticket
from counterpoint_demo import store as business
from counterpoint_demo import tools
from counterpoint_demo.store import BusinessStore, ForeignFile
from counterpoint_demo.wording import Fact

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
TODAY = date(2026, 11, 21)
ALERT_START = datetime(2026, 11, 21, 13, 45, tzinfo=UTC)

TABLES = ("customers", "invoices", "payments", "login_events", "accounts", "log_lines",
          "metrics", "deploys", "articles")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BusinessStore]:
    with BusinessStore.open(tmp_path / "home" / "demo-business.db") as opened:
        yield opened


def billing(store: BusinessStore, customer_id: str) -> list[Fact]:
    return tools.list_invoices.fn(customer_id=customer_id, store=store).facts


def account(store: BusinessStore, customer_id: str) -> list[Fact]:
    return (tools.get_account_status.fn(customer_id=customer_id, store=store).facts
            + tools.list_login_events.fn(customer_id=customer_id, store=store).facts)


def infrastructure(store: BusinessStore, focus: str, service: str = "checkout-api",
                   started_at: datetime | None = ALERT_START) -> list[Fact]:
    tool = {"logs": tools.search_service_logs, "metrics": tools.get_service_metrics,
            "deploys": tools.list_recent_deploys}[focus]
    return tool.fn(service=service, started_at=started_at, reported_by="alert",
                   store=store).facts


def knowledge(store: BusinessStore, *queries: str) -> list[Fact]:
    return tools.search_knowledge_base.fn(queries=list(queries), limit=3, store=store).facts


def _counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


# --- creation -------------------------------------------------------------------------------


def test_open_creates_folder_and_seeds_once(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "business.db"
    BusinessStore.open(path).close()
    first_inode, first = path.stat().st_ino, _counts(path)
    BusinessStore.open(path).close()

    assert path.stat().st_ino == first_inode  # not rebuilt
    assert _counts(path) == first
    assert first["customers"] == 3 and first["payments"] == 6 and first["articles"] >= 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["business.db"]


@pytest.mark.parametrize("content", [b"not a database at all", None])
def test_a_file_it_did_not_create_is_never_rewritten(tmp_path: Path,
                                                     content: bytes | None) -> None:
    path = tmp_path / "business.db"
    if content is None:  # someone else's SQLite database, of any version
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE mine (x)")
            db.execute("PRAGMA user_version = 3")
    else:
        path.write_bytes(content)
    before = path.read_bytes()

    with pytest.raises(ForeignFile, match="was not created by the demo business server"):
        BusinessStore.open(path)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["business.db"]  # no temp left


def test_its_own_stale_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "business.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA application_id = {business.APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
    with BusinessStore.open(path) as opened:
        assert opened.customer("C-42") is not None


def test_concurrent_open_from_processes_yields_one_correct_db(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "business.db"
    start_at = time.time() + 1.5  # every child starts opening at the same instant
    child = (
        "import sys, time; from pathlib import Path\n"
        "from counterpoint_demo.store import BusinessStore\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "with BusinessStore.open(Path(sys.argv[1])) as s:\n"
        "    print(len(s.invoices('C-42')), s.account_status('C-42').status)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", child, str(path), str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [p.communicate(timeout=60) for p in procs]

    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    assert [out.strip() for out, _ in results] == ["3 locked"] * 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["business.db"]  # no temp left
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == business.SEED_VERSION
        assert db.execute("SELECT count(*) FROM payments WHERE invoice_id = 'INV-2291'"
                          ).fetchone()[0] == 2
    finally:
        db.close()


# --- queries --------------------------------------------------------------------------------


def test_customers_and_tenure(store: BusinessStore) -> None:
    dana = store.customer("C-42")
    assert dana is not None
    assert (dana.name, dana.tier, dana.plan) == ("Dana Whitfield", "enterprise",
                                                 "Enterprise annual")
    assert dana.customer_since == date(2023, 9, 14)
    assert dana.tenure_text(TODAY) == "3 years"
    assert dana.notes and dana.notes[0].startswith("2026-")
    newcomer = store.customer("C-7")
    assert newcomer is not None and newcomer.tier == "free"
    assert newcomer.tenure_text(TODAY) == "1 day"
    assert store.customer("C-99") is None
    assert business.tenure_text(date(2025, 2, 10), TODAY) == "1 year"
    assert business.tenure_text(date(2026, 9, 30), TODAY) == "1 month"
    assert business.tenure_text(TODAY, TODAY) == "less than a day"


def test_invoices_carry_the_double_payment(store: BusinessStore) -> None:
    invoices = store.invoices("C-42")
    assert [i.id for i in invoices] == ["INV-2291", "INV-2044", "INV-1802"]
    november = invoices[0]
    assert november.amount == Decimal("1250.00") and november.currency == "USD"
    assert [(p.id, p.status, p.card_last4) for p in november.payments] == [
        ("PAY-88121", "succeeded", "4242"), ("PAY-88122", "succeeded", "4242")]
    assert all(len(i.payments) == 1 for i in invoices[1:])


def test_login_events_newest_first_and_lock(store: BusinessStore) -> None:
    events = store.login_events("C-42", limit=6)
    assert [e.outcome for e in events] == ["locked"] + ["failure"] * 5
    assert events == sorted(events, key=lambda e: e.time, reverse=True)
    status = store.account_status("C-42")
    assert status is not None and status.status == "locked" and status.mfa_enabled
    assert status.locked_at == datetime(2026, 11, 20, 9, 14, 7, tzinfo=UTC)


def test_monitoring_queries(store: BusinessStore) -> None:
    assert store.services() == ["auth-service", "billing-worker", "checkout-api"]
    deploys = store.deploys("checkout-api", ALERT_START, timedelta(days=7))
    assert (deploys[0].version, deploys[0].author) == ("v2.14.0", "mlopez")
    assert deploys[0].deployed_at == datetime(2026, 11, 21, 13, 42, tzinfo=UTC)
    logs = store.service_logs("checkout-api", ALERT_START, timedelta(minutes=10))
    assert logs and all(abs(line.time - ALERT_START) <= timedelta(minutes=10) for line in logs)
    first_error = next(line for line in logs if line.level == "ERROR")
    assert first_error.time >= ALERT_START and "pool exhausted" in first_error.message
    ratio = {p.time: p.value for p in store.service_metrics("checkout-api", ALERT_START,
                                                              timedelta(minutes=15))
             if p.name == "http_5xx_ratio"}
    assert ratio[ALERT_START - timedelta(minutes=5)] < 0.5
    assert ratio[ALERT_START + timedelta(minutes=10)] > 10


def test_article_search_ranks_refund_first(store: BusinessStore) -> None:
    assert store.search_articles("charged twice refund")[0].id == "KB-101"
    assert store.search_articles("account locked after failed login")[0].id == "KB-104"
    assert store.search_articles("checkout-api 5xx after deploy")[0].id == "KB-201"
    assert store.search_articles("xyzzy plugh") == []
    assert len(store.search_articles("runbook", limit=2)) == 2


# --- what the tools say ---------------------------------------------------------------------


def test_invoice_facts_flag_the_duplicate_charge(store: BusinessStore) -> None:
    found = billing(store, "C-42")
    assert found[0].text == ("Invoice INV-2291 (1,250.00 USD) was charged twice on 3 Nov 2026: "
                             "PAY-88121 and PAY-88122, card ending 4242.")
    assert found[0].source == "billing.invoices/INV-2291"
    assert any("2,500.00 USD" in f.text and "1,250.00 USD more" in f.text for f in found)
    assert any("INV-2044" in f.text and "paid once" in f.text for f in found)
    clean = billing(store, "C-19")
    assert len(clean) == 1 and "paid once" in clean[0].text and "twice" not in clean[0].text


def test_account_facts_find_the_lockout(store: BusinessStore) -> None:
    texts = [f.text for f in account(store, "C-42")]
    assert "Account C-42 has been locked since 20 Nov 2026 09:14 UTC; reason: too many failed " \
           "login attempts." in texts
    failed = next(t for t in texts if "failed logins" in t)
    assert failed.startswith("5 failed logins (invalid password)") and "198.51.100.77" in failed
    assert any(t.startswith("MFA is enabled") for t in texts)


def test_service_facts_find_the_deploy_before_the_alert(store: BusinessStore) -> None:
    deploy = infrastructure(store, "deploys")
    assert deploy[0].text.startswith("checkout-api deploy v2.14.0 by mlopez at 13:42 UTC, "
                                     "3 min before the alert started")
    assert deploy[0].source == "deploys/D-5160"
    assert any("v2.13.2" in f.text for f in deploy[1:])
    metrics = infrastructure(store, "metrics")
    ratio = next(f.text for f in metrics if "http_5xx_ratio" in f.text)
    assert "rose from about 0.2%" in ratio and "to 14.0%" in ratio
    logs = infrastructure(store, "logs")
    assert "first at 13:45:12 UTC, none before the alert started" in logs[0].text
    assert any("pool exhausted" in f.text for f in logs)
    quiet = infrastructure(store, "metrics", service="auth-service")
    assert all("steady" in f.text for f in quiet)
    newest = infrastructure(store, "deploys", started_at=None)
    assert "before the newest data" in newest[0].text


def test_knowledge_facts_cite_articles(store: BusinessStore) -> None:
    refund = knowledge(store, "duplicate charge refund")
    assert refund[0].source == "kb/KB-101" and refund[0].text.startswith("KB-101 ")
    runbooks = knowledge(store, "runbook rollback", "HighErrorRate checkout-api 5xx")
    assert runbooks[0].source == "kb/KB-201"


def test_missing_customer_gives_a_nothing_found_fact(store: BusinessStore) -> None:
    for found in (billing(store, "C-99"), account(store, "C-99")):
        assert "no customer c-99" in found[0].text.lower()
    assert tools.lookup_customer.fn(customer_id="C-99", store=store).customer is None


def test_missing_service_or_article_gives_a_nothing_found_fact(store: BusinessStore) -> None:
    for focus in ("logs", "metrics", "deploys"):
        [unknown] = infrastructure(store, focus, service="payroll")
        assert unknown.text.startswith("No service named payroll")
    [nothing] = knowledge(store, "xyzzy")
    assert nothing.source == "kb.articles" and "No knowledge-base article" in nothing.text


def test_the_customer_record_sets_tone(store: BusinessStore) -> None:
    found = tools.lookup_customer.fn(customer_id="C-42", store=store).customer
    assert found is not None
    assert (found.customer_id, found.name, found.tier, found.plan) == (
        "C-42", "Dana Whitfield", "enterprise", "Enterprise annual")
    assert found.history
    newcomer = tools.lookup_customer.fn(customer_id="C-7", store=store).customer
    assert newcomer is not None and newcomer.tier == "free"


# --- demo inputs ----------------------------------------------------------------------------


def test_example_ticket_matches_the_seed(store: BusinessStore) -> None:
    ticket = Ticket.model_validate_json((EXAMPLES / "ticket_dual_intent.json").read_text())
    assert (ticket.id, ticket.customer_id, ticket.channel) == ("T-1001", "C-42", "email")
    assert ticket.customer_id is not None and store.customer(ticket.customer_id) is not None


def test_example_alert_is_an_alertmanager_v4_body(store: BusinessStore) -> None:
    raw = (EXAMPLES / "alert_alertmanager.json").read_text()
    webhook = AlertmanagerWebhook.model_validate_json(raw)
    assert isinstance(ALERT_ADAPTER.validate_json(raw), AlertmanagerWebhook)
    [alert] = webhook.alerts
    assert webhook.status == alert.status == "firing" and webhook.truncatedAlerts == 0
    assert alert.labels["service"] in store.services()
    assert alert.startsAt == ALERT_START
    assert alert.endsAt is not None and alert.endsAt.year == 1  # Alertmanager's "no end yet"
    assert alert.fingerprint == "c0ffee1234abcd"
