"""The small business systems investigators read: CRM, billing, auth, monitoring, knowledge base.

Everything lives in one local SQLite file seeded with fixed, deterministic data ("today" is
2026-11-21) that makes the two worked examples concrete: customer C-42's double-charged invoice
and locked account, and the checkout-api deploy that broke payments at 13:45 UTC.

Agents only read, so connections are opened read-only. Six agent processes start together and
may all call `BusinessStore.open` on a missing file: each builds a complete database in a temp
file next to the target and publishes it atomically, so nobody ever sees a half-seeded file.

Counterpoint never replaces or changes a business database it did not create. Every one it
builds carries its mark (SQLite's `application_id` header field, meant for exactly this); a
file at the path without the mark, a user's own database or not a database at all, stops the
process with `UnrecognisedFile`, naming the file and what to do, and is left as it is. Only a
database with the mark and an older seed version is rebuilt, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from counterpoint.agents.private_files import private_dir

# Bump when the schema or seed changes: a database of ours with another version is rebuilt.
SEED_VERSION = 3
# "CPNT" in SQLite's application_id header field: this file is one Counterpoint created.
APPLICATION_ID = int.from_bytes(b"CPNT", "big")

log = logging.getLogger(__name__)

Tier = Literal["free", "pro", "enterprise"]
LoginOutcome = Literal["success", "failure", "locked"]
AccountState = Literal["active", "locked", "suspended"]


def default_db_path(home: Path) -> Path:
    return home / "business.db"


class UnrecognisedFile(Exception):
    """A file where Counterpoint would create its own, which Counterpoint did not create."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(
            f"{path} {what}: Counterpoint does not replace or change a file it did not "
            "create. Move it elsewhere (or set COUNTERPOINT_HOME to another folder) and start "
            "again: the sample business database is then created fresh. If an older "
            "Counterpoint made it (those carry no mark), delete it.")
        self.path = path


# --- value objects --------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    email: str
    tier: Tier
    customer_since: date
    plan: str
    notes: list[str]

    def tenure_text(self, as_of: date) -> str:
        return tenure_text(self.customer_since, as_of)


@dataclass(frozen=True)
class Payment:
    id: str
    amount: Decimal
    currency: str
    charged_at: datetime
    card_last4: str
    status: Literal["succeeded", "failed", "refunded"]


@dataclass(frozen=True)
class Invoice:
    id: str
    customer_id: str
    period: str
    issued_on: date
    amount: Decimal
    currency: str
    status: Literal["paid", "open", "void"]
    description: str
    payments: list[Payment]


@dataclass(frozen=True)
class LoginEvent:
    time: datetime
    outcome: LoginOutcome
    ip: str
    reason: str | None


@dataclass(frozen=True)
class AccountStatus:
    customer_id: str
    status: AccountState
    locked_at: datetime | None
    lock_reason: str | None
    mfa_enabled: bool
    last_password_reset: datetime | None


@dataclass(frozen=True)
class LogLine:
    service: str
    time: datetime
    level: Literal["DEBUG", "INFO", "WARN", "ERROR"]
    message: str


@dataclass(frozen=True)
class MetricPoint:
    name: str
    time: datetime
    value: float
    unit: str


@dataclass(frozen=True)
class Deploy:
    id: str
    service: str
    version: str
    deployed_at: datetime
    author: str
    summary: str


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    body: str
    tags: list[str]


def tenure_text(since: date, as_of: date) -> str:
    """Whole years, else months, else days: "3 years", "1 month", "1 day"."""
    months = (as_of.year - since.year) * 12 + as_of.month - since.month
    if as_of.day < since.day:
        months -= 1
    if months >= 12:
        return _plural(months // 12, "year")
    if months >= 1:
        return _plural(months, "month")
    days = (as_of - since).days
    return _plural(days, "day") if days >= 1 else "less than a day"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


# --- time encoding: fixed-width UTC text, so SQL range filters compare correctly -------------


def _ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times in this codebase are UTC
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- search ---------------------------------------------------------------------------------

_STOPWORDS = frozenset({
    "an", "and", "are", "as", "at", "be", "but", "by", "can", "cant", "for", "from", "has",
    "have", "in", "is", "it", "its", "my", "me", "no", "not", "now", "of", "on", "or", "our",
    "so", "that", "the", "this", "to", "was", "we", "were", "what", "when", "with", "you",
    "your",
})


def _words(text: str) -> set[str]:
    """Lower-case words; hyphenated terms also count as their parts; a plural 's' is dropped."""
    words: set[str] = set()
    for token in re.findall(r"[a-z0-9]+(?:[-_][a-z0-9]+)*", text.lower()):
        for word in {token, *re.split(r"[-_]", token)}:
            if len(word) < 2 or word in _STOPWORDS:
                continue
            if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
                word = word[:-1]
            words.add(word)
    return words


def _score(query: set[str], article: Article) -> int:
    # Tags are curated, titles are short, bodies are long: weigh in that order.
    tags = _words(" ".join(article.tags))
    title = _words(article.title)
    body = _words(article.body)
    return sum(3 * (w in tags) + 2 * (w in title) + (w in body) for w in query)


# --- the store ------------------------------------------------------------------------------


class BusinessStore:
    """Read-only typed queries over the seeded business database."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()  # one connection shared by an agent's threads
        self.path = path

    @classmethod
    def open(cls, path: Path) -> BusinessStore:
        """Open the sample database at `path`, creating it if absent.

        Raises UnrecognisedFile when a file Counterpoint did not create is there."""
        private_dir(path.parent)  # the database itself is built 0600 (mkstemp)
        version = _seed_version(path)
        if version != SEED_VERSION:
            if version is not None:
                log.warning("%s holds sample data of seed version %d; rebuilding it as "
                            "version %d", path, version, SEED_VERSION)
            _publish(_build(path.parent, path.name), path)
        return cls(sqlite3.connect(_ro_uri(path), uri=True, check_same_thread=False), path)

    @staticmethod
    def check(path: Path) -> None:
        """Raise UnrecognisedFile if a file at `path` is not one Counterpoint created; makes
        nothing. For start-up, before anything could write there."""
        _seed_version(path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BusinessStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    # CRM

    def customer(self, customer_id: str) -> Customer | None:
        rows = self._rows("SELECT * FROM customers WHERE id = ?", customer_id)
        if not rows:
            return None
        row = rows[0]
        notes = self._rows(
            "SELECT noted_on, note FROM customer_notes WHERE customer_id = ?"
            " ORDER BY noted_on DESC",
            customer_id,
        )
        return Customer(
            id=row["id"],
            name=row["name"],
            email=row["email"],
            tier=cast(Tier, row["tier"]),
            customer_since=date.fromisoformat(row["customer_since"]),
            plan=row["plan"],
            notes=[f"{n['noted_on']}: {n['note']}" for n in notes],
        )

    # billing

    def invoices(self, customer_id: str) -> list[Invoice]:
        """Newest first; each invoice carries its payments in charge order."""
        payments: dict[str, list[Payment]] = {}
        for p in self._rows(
            "SELECT p.* FROM payments p JOIN invoices i ON i.id = p.invoice_id"
            " WHERE i.customer_id = ? ORDER BY p.charged_at, p.id",
            customer_id,
        ):
            payments.setdefault(p["invoice_id"], []).append(
                Payment(
                    id=p["id"],
                    amount=Decimal(p["amount_cents"]) / 100,
                    currency=p["currency"],
                    charged_at=_at(p["charged_at"]),
                    card_last4=p["card_last4"],
                    status=p["status"],
                )
            )
        return [
            Invoice(
                id=r["id"],
                customer_id=r["customer_id"],
                period=r["period"],
                issued_on=date.fromisoformat(r["issued_on"]),
                amount=Decimal(r["amount_cents"]) / 100,
                currency=r["currency"],
                status=r["status"],
                description=r["description"],
                payments=payments.get(r["id"], []),
            )
            for r in self._rows(
                "SELECT * FROM invoices WHERE customer_id = ? ORDER BY issued_on DESC, id DESC",
                customer_id,
            )
        ]

    # auth

    def login_events(self, customer_id: str, limit: int = 20) -> list[LoginEvent]:
        """Newest first."""
        return [
            LoginEvent(_at(r["at"]), cast(LoginOutcome, r["outcome"]), r["ip"], r["reason"])
            for r in self._rows(
                "SELECT * FROM login_events WHERE customer_id = ? ORDER BY at DESC, id DESC"
                " LIMIT ?",
                customer_id,
                limit,
            )
        ]

    def account_status(self, customer_id: str) -> AccountStatus | None:
        rows = self._rows("SELECT * FROM accounts WHERE customer_id = ?", customer_id)
        if not rows:
            return None
        r = rows[0]
        return AccountStatus(
            customer_id=r["customer_id"],
            status=cast(AccountState, r["status"]),
            locked_at=_dt(r["locked_at"]),
            lock_reason=r["lock_reason"],
            mfa_enabled=bool(r["mfa_enabled"]),
            last_password_reset=_dt(r["last_password_reset"]),
        )

    # monitoring

    def services(self) -> list[str]:
        return [r["name"] for r in self._rows("SELECT name FROM services ORDER BY name")]

    def service_logs(self, service: str, around: datetime, window: timedelta) -> list[LogLine]:
        """Lines within `window` either side of `around`, oldest first."""
        return [
            LogLine(r["service"], _at(r["at"]), r["level"], r["message"])
            for r in self._rows(
                "SELECT * FROM log_lines WHERE service = ? AND at BETWEEN ? AND ?"
                " ORDER BY at, id",
                service,
                _ts(around - window),
                _ts(around + window),
            )
        ]

    def service_metrics(
        self, service: str, around: datetime, window: timedelta
    ) -> list[MetricPoint]:
        """Points within `window` either side of `around`, by metric name then time."""
        return [
            MetricPoint(r["name"], _at(r["at"]), r["value"], r["unit"])
            for r in self._rows(
                "SELECT * FROM metrics WHERE service = ? AND at BETWEEN ? AND ?"
                " ORDER BY name, at",
                service,
                _ts(around - window),
                _ts(around + window),
            )
        ]

    def latest_observation(self, service: str) -> datetime | None:
        """The newest log line or metric point of `service`: the anchor when no time is given."""
        rows = self._rows(
            "SELECT max(at) AS at FROM (SELECT at FROM log_lines WHERE service = ?"
            " UNION ALL SELECT at FROM metrics WHERE service = ?)",
            service,
            service,
        )
        return _dt(rows[0]["at"])

    def deploys(self, service: str, before: datetime, within: timedelta) -> list[Deploy]:
        """Deploys in [before - within, before], newest first."""
        return [
            Deploy(
                r["id"], r["service"], r["version"], _at(r["deployed_at"]), r["author"],
                r["summary"],
            )
            for r in self._rows(
                "SELECT * FROM deploys WHERE service = ? AND deployed_at BETWEEN ? AND ?"
                " ORDER BY deployed_at DESC, id DESC",
                service,
                _ts(before - within),
                _ts(before),
            )
        ]

    # knowledge base

    def articles(self) -> list[Article]:
        return [
            Article(r["id"], r["title"], r["body"], r["tags"].split(","))
            for r in self._rows("SELECT * FROM articles ORDER BY id")
        ]

    def search_articles(self, query: str, limit: int = 3) -> list[Article]:
        """Articles sharing words with `query`, best first; ties go to the lower id."""
        words = _words(query)
        scored = [(_score(words, a), a) for a in self.articles()]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1].id))
        return [a for _, a in ranked[:limit]]


# --- creation -------------------------------------------------------------------------------


def _ro_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


def _seed_version(path: Path) -> int | None:
    """The seed version of our database at `path`; None when there is no file.

    Raises UnrecognisedFile for a file without our mark: it is not ours to replace."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(_ro_uri(path), uri=True)) as db:
            application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise UnrecognisedFile(path, f"cannot be read as an SQLite database ({exc})") from exc
    if application_id != APPLICATION_ID:
        raise UnrecognisedFile(path, f"is an SQLite database without Counterpoint's mark "
                                     f"(application_id {application_id})")
    return version


def _build(folder: Path, name: str) -> Path:
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.executescript(_SCHEMA)
            for table, rows in _seed_rows():
                marks = ", ".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SEED_VERSION}")
            db.commit()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _publish(tmp: Path, path: Path) -> None:
    """Move a finished database into place; whoever gets there first wins, the rest agree."""
    try:
        if path.exists():
            if _seed_version(path) == SEED_VERSION:
                # A concurrent opener published it while we built ours; other processes may
                # already have it open (and the executor writes to it): keep it.
                return
            os.replace(tmp, path)  # ours, stale: every builder writes the same bytes
            return
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            pass  # a concurrent opener published an identical database first
        except OSError:
            os.replace(tmp, path)  # filesystem without hard links
    finally:
        tmp.unlink(missing_ok=True)


_SCHEMA = """
CREATE TABLE customers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, tier TEXT NOT NULL,
    customer_since TEXT NOT NULL, plan TEXT NOT NULL);
CREATE TABLE customer_notes (
    customer_id TEXT NOT NULL REFERENCES customers(id), noted_on TEXT NOT NULL,
    note TEXT NOT NULL);
CREATE TABLE invoices (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    period TEXT NOT NULL, issued_on TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL, status TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE payments (
    id TEXT PRIMARY KEY, invoice_id TEXT NOT NULL REFERENCES invoices(id),
    amount_cents INTEGER NOT NULL, currency TEXT NOT NULL, charged_at TEXT NOT NULL,
    card_last4 TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE login_events (
    id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL, at TEXT NOT NULL, outcome TEXT NOT NULL,
    ip TEXT NOT NULL, reason TEXT);
CREATE INDEX login_events_by_customer ON login_events (customer_id, at);
CREATE TABLE accounts (
    customer_id TEXT PRIMARY KEY REFERENCES customers(id), status TEXT NOT NULL,
    locked_at TEXT, lock_reason TEXT, mfa_enabled INTEGER NOT NULL, last_password_reset TEXT);
CREATE TABLE services (name TEXT PRIMARY KEY, team TEXT NOT NULL);
CREATE TABLE log_lines (
    id INTEGER PRIMARY KEY, service TEXT NOT NULL, at TEXT NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL);
CREATE INDEX log_lines_by_service ON log_lines (service, at);
CREATE TABLE metrics (
    service TEXT NOT NULL, name TEXT NOT NULL, at TEXT NOT NULL, value REAL NOT NULL,
    unit TEXT NOT NULL);
CREATE INDEX metrics_by_service ON metrics (service, at);
CREATE TABLE deploys (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, version TEXT NOT NULL, deployed_at TEXT NOT NULL,
    author TEXT NOT NULL, summary TEXT NOT NULL);
CREATE TABLE articles (id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL,
    tags TEXT NOT NULL);
"""


# --- seed data ------------------------------------------------------------------------------

Row = tuple[object, ...]


def _seed_rows() -> Iterator[tuple[str, list[Row]]]:
    yield "customers", [
        ("C-42", "Dana Whitfield", "dana.whitfield@northwind-logistics.example", "enterprise",
         "2023-09-14", "Enterprise annual"),
        ("C-7", "Sam Okafor", "sam.okafor@mailbox.example", "free", "2026-11-20", "Free"),
        ("C-19", "Priya Raman", "priya@ramanstudio.example", "pro", "2025-02-10", "Pro monthly"),
    ]
    yield "customer_notes", [
        ("C-42", "2026-09-14", "Renewed Enterprise annual for a fourth year, 40 seats."),
        ("C-42", "2026-06-02", "Asked for invoices to go to the AP mailbox; updated."),
        ("C-42", "2025-11-18", "SSO setup question answered within 2 hours; rated support 5/5."),
        ("C-7", "2026-11-20", "Signed up from the pricing page."),
        ("C-19", "2026-04-08", "Upgraded from Free to Pro monthly."),
    ]
    yield "invoices", [
        ("INV-1802", "C-42", "2026-09", "2026-09-01", 125000, "USD", "paid",
         "Enterprise annual (billed monthly), September 2026"),
        ("INV-2044", "C-42", "2026-10", "2026-10-01", 125000, "USD", "paid",
         "Enterprise annual (billed monthly), October 2026"),
        ("INV-2291", "C-42", "2026-11", "2026-11-01", 125000, "USD", "paid",
         "Enterprise annual (billed monthly), November 2026"),
        ("INV-2052", "C-19", "2026-10", "2026-10-01", 4900, "USD", "paid",
         "Pro monthly, October 2026"),
        ("INV-2297", "C-19", "2026-11", "2026-11-01", 4900, "USD", "paid",
         "Pro monthly, November 2026"),
    ]
    yield "payments", [
        ("PAY-84977", "INV-1802", 125000, "USD", "2026-09-03T06:11:52Z", "4242", "succeeded"),
        ("PAY-86510", "INV-2044", 125000, "USD", "2026-10-03T06:12:17Z", "4242", "succeeded"),
        # The gateway timed out on the first charge, the billing worker retried: charged twice.
        ("PAY-88121", "INV-2291", 125000, "USD", "2026-11-03T06:12:04Z", "4242", "succeeded"),
        ("PAY-88122", "INV-2291", 125000, "USD", "2026-11-03T06:15:41Z", "4242", "succeeded"),
        ("PAY-86533", "INV-2052", 4900, "USD", "2026-10-02T07:40:10Z", "1881", "succeeded"),
        ("PAY-88140", "INV-2297", 4900, "USD", "2026-11-02T07:41:03Z", "1881", "succeeded"),
    ]
    yield "login_events", _login_events()
    yield "accounts", [
        ("C-42", "locked", "2026-11-20T09:14:07Z", "too many failed login attempts", 1,
         "2026-05-12T16:30:00Z"),
        ("C-7", "active", None, None, 0, None),
        ("C-19", "active", None, None, 0, "2025-02-10T11:02:00Z"),
    ]
    yield "services", [
        ("auth-service", "identity"),
        ("billing-worker", "payments"),
        ("checkout-api", "payments"),
    ]
    yield "log_lines", _log_lines()
    yield "metrics", _metrics()
    yield "deploys", [
        ("D-5088", "checkout-api", "v2.13.1", "2026-11-12T15:20:00Z", "akim",
         "add retries to tax-rate lookup"),
        ("D-5121", "checkout-api", "v2.13.2", "2026-11-17T10:05:00Z", "akim",
         "fix rounding of tax line items"),
        ("D-5160", "checkout-api", "v2.14.0", "2026-11-21T13:42:00Z", "mlopez",
         "switch payment client to connection pool v2"),
        ("D-5097", "auth-service", "v4.8.0", "2026-11-13T09:30:00Z", "jchen",
         "lock accounts after 5 failed logins in 15 minutes"),
        ("D-5140", "auth-service", "v4.8.1", "2026-11-19T14:10:00Z", "jchen",
         "clearer lockout message on the login page"),
        ("D-5012", "billing-worker", "v1.30.0", "2026-10-28T11:00:00Z", "tbaker",
         "retry payment-gateway calls that time out"),
    ]
    yield "articles", _ARTICLES


def _login_events() -> list[Row]:
    office, home, unknown = "203.0.113.24", "203.0.113.88", "198.51.100.77"
    rows: list[Row] = []
    for day, ip in [("2026-10-06", office), ("2026-10-13", office), ("2026-10-20", home),
                    ("2026-10-27", office), ("2026-11-10", office), ("2026-11-17", office)]:
        rows.append(("C-42", f"{day}T08:31:12Z", "success", ip, None))
    for minute in ("02:15", "05:40", "08:03", "11:27", "13:51"):
        rows.append(("C-42", f"2026-11-20T09:{minute}Z", "failure", unknown, "invalid password"))
    rows.append(("C-42", "2026-11-20T09:14:07Z", "locked", unknown,
                 "too many failed login attempts"))
    rows.append(("C-7", "2026-11-20T17:02:44Z", "success", "192.0.2.15", None))
    rows.append(("C-19", "2026-11-18T12:10:05Z", "failure", "192.0.2.61", "invalid password"))
    rows.append(("C-19", "2026-11-18T12:10:40Z", "success", "192.0.2.61", None))
    rows.append(("C-19", "2026-11-19T08:55:13Z", "success", "192.0.2.61", None))
    return [(i, *row) for i, row in enumerate(sorted(rows, key=lambda r: str(r[1])), start=1)]


_INCIDENT = datetime(2026, 11, 21, 13, 45, tzinfo=UTC)
_DAY_START = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)


def _wobble(i: int, salt: int) -> float:
    """Deterministic noise in [-1, 1]: seeded data must be the same in every process."""
    return ((i * 37 + salt * 11) % 9 - 4) / 4


def _log_lines() -> list[Row]:
    rows: list[tuple[str, str, str, str]] = []

    def log(service: str, at: datetime, level: str, message: str) -> None:
        rows.append((service, _ts(at), level, message))

    for i in range(25):  # 12:30 .. 14:30, every 5 minutes: the quiet background
        at = _DAY_START + timedelta(minutes=5 * i, seconds=7)
        if at < _INCIDENT:
            log("checkout-api", at, "INFO",
                f"POST /v1/checkout 200: {210 + 3 * i % 17} req/min, p50 {84 + i % 5} ms")
        log("auth-service", at + timedelta(seconds=20), "INFO",
            f"POST /v1/login 200: {400 + 7 * i % 23} req/min")
        log("billing-worker", at + timedelta(seconds=40), "INFO",
            f"processed {12 + i % 4} payment jobs")

    log("checkout-api", datetime(2026, 11, 21, 13, 42, 40, tzinfo=UTC), "INFO",
        "deploy D-5160 v2.14.0 rolled out (3/3 pods ready)")
    log("checkout-api", datetime(2026, 11, 21, 13, 43, 5, tzinfo=UTC), "INFO",
        "payment client: connection pool v2 initialised (max_size=20)")
    log("checkout-api", datetime(2026, 11, 21, 13, 44, 10, tzinfo=UTC), "WARN",
        "payment-gateway pool: 19/20 connections in use, 12 waiters")
    for i in range(46):  # 13:45 .. 14:30: the incident
        minute = _INCIDENT + timedelta(minutes=i)
        log("checkout-api", minute + timedelta(seconds=12), "ERROR",
            "upstream connect error or disconnect/reset before headers: payment-gateway: "
            f"pool exhausted (in_use=20/20, waiters={95 + 3 * i % 40})")
        log("checkout-api", minute + timedelta(seconds=41), "ERROR",
            f"POST /v1/checkout 503 Service Unavailable after {2300 + 13 * i % 250} ms")
    for i in range(0, 12, 3):  # billing-worker shares the gateway and notices it, mildly
        log("billing-worker", _INCIDENT + timedelta(minutes=2 + i, seconds=30), "WARN",
            "payment-gateway call slow (1.9 s), retrying")

    # The story behind C-42's tickets, for anyone who reads those days' logs.
    log("billing-worker", datetime(2026, 11, 3, 6, 11, 34, tzinfo=UTC), "INFO",
        "charging INV-2291 1250.00 USD (card ending 4242)")
    log("billing-worker", datetime(2026, 11, 3, 6, 12, 4, tzinfo=UTC), "WARN",
        "payment-gateway timeout after 30 s charging INV-2291; job scheduled for retry")
    log("billing-worker", datetime(2026, 11, 3, 6, 15, 41, tzinfo=UTC), "INFO",
        "charged INV-2291 1250.00 USD: PAY-88122")
    for clock in ("02:15", "05:40", "08:03", "11:27", "13:51"):
        log("auth-service", datetime.fromisoformat(f"2026-11-20T09:{clock}+00:00"), "WARN",
            "login failed: customer=C-42 ip=198.51.100.77 reason=invalid password")
    log("auth-service", datetime(2026, 11, 20, 9, 14, 7, tzinfo=UTC), "WARN",
        "account C-42 locked: 5 failed logins within 15 minutes")

    return [(i, *row) for i, row in enumerate(sorted(rows, key=lambda r: (r[1], r[0])), start=1)]


def _metrics() -> list[Row]:
    # (service, baseline 5xx %, incident 5xx %, baseline p99 ms, incident p99 ms)
    shapes = [
        ("checkout-api", 0.2, 14.0, 180.0, 2400.0),
        ("auth-service", 0.1, 0.1, 95.0, 95.0),
        ("billing-worker", 0.3, 0.9, 320.0, 610.0),
    ]
    ramp = [0.2, 0.55, 0.85]  # the first minutes of the incident, as a share of the jump
    rows: list[Row] = []
    for service, err0, err1, p990, p991 in shapes:
        for i in range(106):  # 12:45 .. 14:30, one point a minute
            at = datetime(2026, 11, 21, 12, 45, tzinfo=UTC) + timedelta(minutes=i)
            k = int((at - _INCIDENT).total_seconds() // 60)
            share = 0.0 if k < 0 else ramp[k] if k < len(ramp) else 1.0
            if service == "billing-worker" and k > 20:
                share = 0.0  # its retries absorb the trouble after a while
            noise = 1 + 0.05 * _wobble(i, len(service))
            err = (err0 + (err1 - err0) * share) * (1 + 0.05 * _wobble(i, 3))
            p99 = (p990 + (p991 - p990) * share) * noise
            rows.append((service, "http_5xx_ratio", _ts(at), round(err, 3), "%"))
            rows.append((service, "latency_p99", _ts(at), round(p99, 1), "ms"))
    return rows


_ARTICLES: list[Row] = [
    ("KB-101", "Refunding a duplicate charge",
     "When a customer was charged twice for the same invoice, confirm in billing that the "
     "invoice has two succeeded payments for the full amount. Refund the later payment in full "
     "from the billing console (Payments > Refund); do not void the invoice. Refunds reach the "
     "card in 5-10 business days. Tell the customer the refund id and the expected date. For "
     "enterprise customers, offer a credit on the next invoice as an alternative.",
     "billing,refund,duplicate,payment,charge"),
    ("KB-102", "Correcting an invoice",
     "If an invoice shows the wrong amount, seats or billing address, issue a credit note for "
     "the difference and a corrected invoice; never edit a paid invoice in place. Corrections "
     "over 1,000 USD need a billing lead's approval.",
     "billing,invoice,correction,credit-note"),
    ("KB-103", "Failed card payments and retries",
     "A failed payment is retried automatically after 1, 3 and 5 days. If the card keeps "
     "failing, ask the customer to update the card; the invoice stays open meanwhile.",
     "billing,payment,failed,card,retry"),
    ("KB-104", "Account locked after failed login attempts",
     "Accounts lock after 5 failed logins within 15 minutes. Before unlocking, verify the "
     "customer's identity (for accounts with MFA, through an MFA challenge). Unlock from the "
     "admin console (Accounts > Unlock). If the failed attempts came from an IP address the "
     "customer does not recognise, require a password reset on the next login.",
     "account,login,locked,lockout,unlock,security"),
    ("KB-105", "Resetting a password",
     "Customers reset their password from the login page (Forgot password). The link is valid "
     "for 30 minutes. Support can send a reset link from the admin console but never sets a "
     "password on the customer's behalf.",
     "account,password,reset,login"),
    ("KB-201", "Runbook: checkout-api high 5xx after deploy -> roll back",
     "If the checkout-api 5xx ratio exceeds 5% within 30 minutes of a deploy, roll back to the "
     "previous version first and investigate afterwards: deployctl rollback checkout-api "
     "--to <previous version>. A rollback in production needs the incident commander's "
     "approval. Verify that the 5xx ratio is below 1% within 10 minutes of the rollback, then "
     "post in the incident channel.",
     "checkout-api,5xx,rollback,deploy,runbook"),
    ("KB-202", "Runbook: connection pool exhaustion",
     "Symptoms: 'pool exhausted' or 'upstream connect error' in logs, p99 latency rising with "
     "waiters queued. Check the pool size against the upstream's connection limit and recent "
     "changes to the client. Mitigate by rolling back the client change or raising max_size "
     "temporarily; never raise it above the upstream's limit.",
     "connection-pool,pool,exhausted,upstream,latency,runbook"),
    ("KB-203", "Runbook: payment-gateway degraded",
     "If payment-gateway itself reports errors on its status page, switch checkout to the "
     "queue-and-retry mode (feature flag checkout.defer_payments) and inform customers of "
     "delayed confirmation. Do not roll back unrelated services.",
     "payment-gateway,checkout,degraded,runbook"),
    ("KB-204", "Runbook: auth-service login error spike",
     "A spike of login failures from few IPs is usually credential stuffing: rate-limit the "
     "IPs at the edge and check the lockout counts. A spike across all IPs after a deploy "
     "points at the deploy: roll back auth-service.",
     "auth-service,login,security,runbook"),
]
