"""The business fixtures and fact tools, on a real SQLite file."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from counterpoint.agents.tools import business, facts
from counterpoint.agents.tools.business import BusinessStore, default_db_path
from counterpoint.schemas.events import ALERT_ADAPTER, AlertmanagerWebhook, Subject, Ticket

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
TODAY = date(2026, 11, 21)
ALERT_START = datetime(2026, 11, 21, 13, 45, tzinfo=UTC)

TABLES = ("customers", "invoices", "payments", "login_events", "accounts", "log_lines",
          "metrics", "deploys", "articles")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BusinessStore]:
    with BusinessStore.open(default_db_path(tmp_path / "home")) as opened:
        yield opened


def _ticket(customer_id: str | None = "C-42") -> Subject:
    return Subject(
        kind="ticket", source_id="T-1001", customer_id=customer_id,
        title="Invoice wrong and can't log in",
        text="My invoice is wrong and I can't log into my account. I was charged twice this "
             "month and now the login page says my account is locked.",
    )


def _alert(service: str | None = "checkout-api", started_at: datetime | None = ALERT_START
           ) -> Subject:
    return Subject(
        kind="alert", source_id="c0ffee1234abcd", service=service, severity="critical",
        title="HighErrorRate", text="checkout-api 5xx error ratio above 5%",
        started_at=started_at,
    )


def _counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


# --- creation -------------------------------------------------------------------------------


def test_open_creates_folder_and_seeds_once(tmp_path: Path) -> None:
    path = default_db_path(tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" / "business.db"
    BusinessStore.open(path).close()
    first_inode, first = path.stat().st_ino, _counts(path)
    BusinessStore.open(path).close()

    assert path.stat().st_ino == first_inode  # not rebuilt
    assert _counts(path) == first
    assert first["customers"] == 3 and first["payments"] == 6 and first["articles"] >= 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["business.db"]


def _fingerprint(path: Path) -> tuple[int, int, bytes]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, path.read_bytes()


def _users_own_database(path: Path, user_version: int) -> None:
    """A database of the user's: their own table, no Counterpoint mark."""
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total_cents INTEGER)")
        db.execute("INSERT INTO orders VALUES ('O-1', 4200)")
        db.execute(f"PRAGMA user_version = {user_version}")
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("user_version", [0, business.SEED_VERSION - 1, business.SEED_VERSION])
def test_a_users_own_database_is_never_replaced(tmp_path: Path, user_version: int) -> None:
    path = default_db_path(tmp_path)
    _users_own_database(path, user_version)
    before = _fingerprint(path)

    try:
        BusinessStore.open(path).close()
    except Exception as exc:
        refused: Exception | None = exc
    else:
        refused = None

    assert _fingerprint(path) == before, "the user's file was changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["business.db"]  # no temp left
    assert isinstance(refused, business.UnrecognisedFile), refused
    message = str(refused)
    assert str(path) in message and "without Counterpoint's mark" in message
    assert "COUNTERPOINT_HOME" in message and "Move it" in message


def test_a_file_that_is_not_a_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "business.db"
    path.write_bytes(b"the user's notes, not a database at all" * 200)
    before = _fingerprint(path)
    with pytest.raises(business.UnrecognisedFile, match="cannot be read as an SQLite database"):
        BusinessStore.open(path)
    assert _fingerprint(path) == before


def test_our_own_database_of_an_older_seed_is_rebuilt_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "business.db"
    BusinessStore.open(path).close()
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA user_version = {business.SEED_VERSION - 1}")
        db.execute("DELETE FROM customers WHERE id = 'C-42'")
        db.commit()
    finally:
        db.close()
    with caplog.at_level(logging.WARNING), BusinessStore.open(path) as opened:
        assert opened.customer("C-42") is not None
    assert f"{path} holds sample data of seed version {business.SEED_VERSION - 1}" in caplog.text
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA application_id").fetchone()[0] == business.APPLICATION_ID
    finally:
        db.close()


def test_concurrent_open_from_processes_yields_one_correct_db(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "business.db"
    start_at = time.time() + 1.5  # every child starts opening at the same instant
    child = (
        "import sys, time; from pathlib import Path\n"
        "from counterpoint.agents.tools.business import BusinessStore\n"
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


# --- facts ----------------------------------------------------------------------------------


def test_billing_facts_flag_the_duplicate_charge(store: BusinessStore) -> None:
    found = facts.billing_facts(store, _ticket())
    assert found[0].text == ("Invoice INV-2291 (1,250.00 USD) was charged twice on 3 Nov 2026: "
                             "PAY-88121 and PAY-88122, card ending 4242.")
    assert found[0].source == "billing.invoices/INV-2291"
    assert any("2,500.00 USD" in f.text and "1,250.00 USD more" in f.text for f in found)
    assert any("INV-2044" in f.text and "paid once" in f.text for f in found)
    clean = facts.billing_facts(store, _ticket("C-19"))
    assert len(clean) == 1 and "paid once" in clean[0].text and "twice" not in clean[0].text


def test_account_facts_find_the_lockout(store: BusinessStore) -> None:
    texts = [f.text for f in facts.account_facts(store, _ticket())]
    assert "Account C-42 has been locked since 20 Nov 2026 09:14 UTC; reason: too many failed " \
           "login attempts." in texts
    failed = next(t for t in texts if "failed logins" in t)
    assert failed.startswith("5 failed logins (invalid password)") and "198.51.100.77" in failed
    assert any(t.startswith("MFA is enabled") for t in texts)


def test_infrastructure_facts_find_the_deploy_before_the_alert(store: BusinessStore) -> None:
    deploy = facts.infrastructure_facts(store, _alert(), "deploys")
    assert deploy[0].text.startswith("checkout-api deploy v2.14.0 by mlopez at 13:42 UTC, "
                                     "3 min before the alert started")
    assert deploy[0].source == "deploys/D-5160"
    assert any("v2.13.2" in f.text for f in deploy[1:])
    metrics = facts.infrastructure_facts(store, _alert(), "metrics")
    ratio = next(f.text for f in metrics if "http_5xx_ratio" in f.text)
    assert "rose from about 0.2%" in ratio and "to 14.0%" in ratio
    logs = facts.infrastructure_facts(store, _alert(), "logs")
    assert "first at 13:45:12 UTC, none before the alert started" in logs[0].text
    assert any("pool exhausted" in f.text for f in logs)
    quiet = facts.infrastructure_facts(store, _alert("auth-service"), "metrics")
    assert all("steady" in f.text for f in quiet)
    newest = facts.infrastructure_facts(store, _alert(started_at=None), "deploys")
    assert "before the newest data" in newest[0].text


def test_knowledge_facts_cite_articles(store: BusinessStore) -> None:
    refund = facts.knowledge_facts(store, _ticket(), "duplicate charge refund")
    assert refund[0].source == "kb/KB-101" and refund[0].text.startswith("KB-101 ")
    runbooks = facts.knowledge_facts(store, _alert(), "runbook rollback")
    assert runbooks[0].source == "kb/KB-201"


@pytest.mark.parametrize("customer_id", ["C-99", None])
def test_missing_customer_gives_a_nothing_found_fact(
    store: BusinessStore, customer_id: str | None
) -> None:
    for found in (facts.billing_facts(store, _ticket(customer_id)),
                  facts.account_facts(store, _ticket(customer_id))):
        assert len(found) == 1
        assert "no customer" in found[0].text.lower()
    assert facts.customer_context(store, customer_id or "", TODAY) is None


def test_missing_service_or_article_gives_a_nothing_found_fact(store: BusinessStore) -> None:
    for focus in ("logs", "metrics", "deploys"):
        [unknown] = facts.infrastructure_facts(store, _alert("payroll"), focus)
        assert unknown.text.startswith("No service named payroll")
        [none] = facts.infrastructure_facts(store, _alert(None), focus)
        assert "names no service" in none.text
    empty = Subject(kind="ticket", source_id="T-9", title="zzz", text="qqq")
    [nothing] = facts.knowledge_facts(store, empty, "xyzzy")
    assert nothing.source == "kb.articles" and "No knowledge-base article" in nothing.text


def test_customer_context_for_tone(store: BusinessStore) -> None:
    context = facts.customer_context(store, "C-42", TODAY)
    assert context is not None
    assert {k: context[k] for k in ("name", "tier", "tenure", "plan")} == {
        "name": "Dana Whitfield", "tier": "enterprise", "tenure": "3 years",
        "plan": "Enterprise annual"}
    assert isinstance(context["history"], list) and context["history"]
    newcomer = facts.customer_context(store, "C-7", TODAY)
    assert newcomer is not None and newcomer["tenure"] == "1 day"


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
