"""The demo business's systems as one SQLite file: CRM, billing, auth, monitoring, deploys and a
knowledge base, seeded with fixed data (demo/seed.py). Only the demo business server opens it.

The file is created by this module alone, atomically (built next to the target, then linked into
place), and marked with its own SQLite application id. A file at the path that does not carry
that mark was not made here and is never replaced: opening it fails, saying so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, cast

from counterpoint.agents.private_files import private_dir
from counterpoint.agents.sqlite_files import immediate
from counterpoint_demo.seed import SCHEMA, seed_rows, ts

# Bump when the schema or seed changes: a file of ours with another version is rebuilt.
SEED_VERSION: Final = 5
# "CPDB": which SQLite files this module created (PRAGMA application_id).
APPLICATION_ID: Final = 0x43504442

Tier = Literal["free", "pro", "enterprise"]
LoginOutcome = Literal["success", "failure", "locked"]
AccountState = Literal["active", "locked", "suspended"]


class ForeignFile(Exception):
    """A file at the database path that this module did not create."""


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


# --- time decoding ----------------------------------------------------------------------------


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


# A pure function of the text, and every search splits every article again: cached, so a search
# costs one query's words, not the whole knowledge base's (most of the server's CPU per search).
@functools.lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    """Lower-case words; hyphenated terms also count as their parts; a plural 's' is dropped."""
    words: set[str] = set()
    for token in re.findall(r"[a-z0-9]+(?:[-_][a-z0-9]+)*", text.lower()):
        for word in {token, *re.split(r"[-_]", token)}:
            if len(word) < 2 or word in _STOPWORDS:
                continue
            if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
                word = word[:-1]
            words.add(word)
    return frozenset(words)


def _score(query: frozenset[str], article: Article) -> int:
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
        """Our database at `path`, created or rebuilt first when needed (`ForeignFile` when
        another file is there)."""
        private_dir(path.parent)  # it holds personal data; the file itself is made 0600
        if _seed_version(path) != SEED_VERSION:
            _publish(_build(path.parent, path.name), path)
        return cls(sqlite3.connect(_ro_uri(path), uri=True, check_same_thread=False), path)

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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on its own connection (the actions'); BEGIN IMMEDIATE, so two
        writers serialise instead of both reading "not done yet"."""
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            with immediate(db):
                yield db
        finally:
            db.close()

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
                ts(around - window),
                ts(around + window),
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
                ts(around - window),
                ts(around + window),
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
                ts(before - within),
                ts(before),
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
    """The seed version of our file at `path`, None when there is none; `ForeignFile` when
    something else is there."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(_ro_uri(path), uri=True)) as db:
            app = int(db.execute("PRAGMA application_id").fetchone()[0])
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError:
        app, version = 0, 0
    if app != APPLICATION_ID:
        raise ForeignFile(f"{path} exists and was not created by the demo business server; "
                          "it is left as it is. Choose another path (--db).")
    return version


def _build(folder: Path, name: str) -> Path:
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.executescript(SCHEMA)
            for table, rows in seed_rows():
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
    """Move a finished database into place without ever replacing a file we did not make."""
    try:
        version = _seed_version(path)
        if version == SEED_VERSION:
            return  # someone published ours meanwhile; it may be open (and written): keep it
        if version is not None:
            os.replace(tmp, path)  # our own file, of an older seed
            return
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            _seed_version(path)  # raced: keep what is there if it is ours, else say whose
        except OSError:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # no hard links
            with os.fdopen(fd, "wb") as out:
                out.write(tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
