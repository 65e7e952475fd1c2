"""Local stores are their owner's alone (0600 files, 0700 folders), and what memory keeps is
redacted like a span."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from counterpoint.agents.outcomes import OutcomeStore
from counterpoint.agents.private_files import open_private_append, private_dir, private_file
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.infra.redaction import redact
from counterpoint.infra.telemetry import setup_telemetry
from counterpoint.schemas.events import Generation, Result, Usage

TITLE = "Refund: card 4242 4242 4242 4242, dana@example.com, password=hunter2"
CLEAR = (b"4242 4242 4242 4242", b"4242424242424242", b"dana@example.com", b"hunter2")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def lax_umask() -> Iterator[None]:
    """The common default, under which plain creation makes 0644 files and 0755 folders."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def result() -> Result:
    return Result(request_id="req-1", source_id="T-1", kind="reply", title=TITLE,
                  text=f"We refunded you. {TITLE}", priority="normal", status="complete",
                  findings=[], generation=Generation(provider="offline", model="m", offline=True),
                  usage=Usage(), completed_at=datetime(2026, 11, 21, tzinfo=UTC),
                  customer_id="C-42")


def test_folders_and_files_are_created_private(tmp_path: Path) -> None:
    deep = private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", deep)] == [0o700] * 3
    assert mode(private_file(tmp_path / "x" / "f.db")) == 0o600
    with open_private_append(tmp_path / "logs" / "a.log") as out:
        out.write(b"line\n")
    assert mode(tmp_path / "logs" / "a.log") == 0o600 and mode(tmp_path / "logs") == 0o700


def test_what_exists_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    mine = shared / "memory.db"
    mine.write_bytes(b"")
    mine.chmod(0o640)
    private_dir(shared)
    private_file(mine)
    assert (mode(shared), mode(mine)) == (0o755, 0o640)


def test_memory_db_is_private_and_keeps_no_secret_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "home" / "memory.db"
    store = OutcomeStore.open(path, scrub=redact)
    store.record(result(), "C-42", None)
    (past,) = store.recall(customer_id="C-42", service=None, exclude="")
    stored = b"".join(p.read_bytes() for p in path.parent.iterdir())
    files = {p.name: mode(p) for p in path.parent.iterdir()}  # SQLite drops -wal/-shm on close
    store.close()
    assert files == dict.fromkeys(["memory.db", "memory.db-shm", "memory.db-wal"], 0o600)
    assert mode(path.parent) == 0o700
    for secret in CLEAR:
        assert secret not in stored
    assert past.title == "Refund: card [card], [email], password=[secret]"
    assert "[card]" in past.summary


def test_business_db_and_span_files_are_private(tmp_path: Path) -> None:
    BusinessStore.open(tmp_path / "home" / "business.db")
    assert mode(tmp_path / "home") == 0o700
    assert mode(tmp_path / "home" / "business.db") == 0o600
    telemetry = setup_telemetry("test", traces_dir=tmp_path / "home" / "traces",
                                instance_id="i-1")
    with telemetry.tracer("t").start_as_current_span("s"):
        pass
    telemetry.shutdown()
    assert telemetry.traces_file is not None
    assert mode(telemetry.traces_file) == 0o600 and mode(telemetry.traces_file.parent) == 0o700
