"""A seeded card number and email never appear in exported spans, logs or stored outcomes, and
what a ticket says cannot drive the operator's terminal.

Real agent processes (and the CLI) handle one valid ticket and one invalid one carrying both;
afterwards no file under the stack's traces/ or logs/ holds them. The dead letter itself keeps
the original bytes by design: that is a Kafka record, not a span or a log, so it is not checked.
A ticket whose subject also carries a password and terminal control sequences is remembered
(memory.db) redacted, every local store is its owner's alone, and `results` / `request` print
the control sequences escaped.
"""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.outcomes import OutcomeStore, default_memory_path
from counterpoint.infra.publishing import publish
from counterpoint.topics.registry import INTAKE_TICKETS
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, send_raw, wait_deadletters, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SEEDED = "my card 4242 4242 4242 4242 and email dana@example.com"
FORBIDDEN = ("4242 4242 4242 4242", "4242424242424242", "dana@example.com")


@pytest.fixture(scope="module")
def stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"), dict.fromkeys(AGENT_NAMES, 1))
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


def _cli(stack: AgentStack, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("counterpoint")
    return subprocess.run([str(exe), *args], env={**stack.env, "COLUMNS": "250"},
                          capture_output=True, text=True, timeout=120, check=False)


def _ticket(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": f"T-redact-{uuid.uuid4().hex[:8]}", "customer_id": "C-42",
        "subject": "Charged twice", "channel": "email",
        "body": f"I was charged twice this month, {SEEDED}. Please refund.",
    }
    body.update(overrides)
    return body


def _assert_clean(text: str, where: str) -> None:
    for secret in FORBIDDEN:
        assert secret not in text, f"{secret!r} found in {where}"


# Retitles the window, clears the screen, reverses what follows.
CONTROL = "\x1b]0;pwned\x07\x1b[2J\u202eevil"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _remembered(stack: AgentStack, request_id: str, timeout_s: float = 60) -> None:
    store = OutcomeStore.open(default_memory_path(stack.home), scrub=str)  # reads only
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.request_id == request_id for p in
                   store.recall(customer_id="C-42", service=None, exclude="", limit=100)):
                return
            await asyncio.sleep(0.2)
    finally:
        store.close()
    raise AssertionError(f"memory did not record {request_id}\n{stack.logs()}")


async def test_stored_outcomes_are_redacted_private_and_printed_escaped(
        stack: AgentStack) -> None:
    ticket = _ticket(subject=f"Refund {CONTROL} password=hunter2 {SEEDED}")
    receipt = await publish(config(stack.bootstrap), "ticket", orjson.dumps(ticket), "test")
    (result,) = await wait_results(stack.bootstrap,
                                   lambda r: r.request_id == receipt.request_id, timeout_s=90)
    assert CONTROL in result.title  # the data itself is kept as sent
    await _remembered(stack, receipt.request_id)

    memory = default_memory_path(stack.home)
    stored = b"".join(p.read_bytes() for p in memory.parent.glob(memory.name + "*"))
    for secret in (*FORBIDDEN, "hunter2"):
        assert secret.encode() not in stored, f"{secret!r} stored in clear in {memory}"
    assert b"password=[secret]" in stored and b"[card]" in stored
    for path in [memory, stack.home / "business.db", *stack.home.glob("memory.db-*"),
                 *(stack.home / "traces").iterdir(), *(stack.home / "logs").iterdir()]:
        assert _mode(path) == 0o600, f"{path} is {_mode(path):o}"
    for folder in (stack.home / "traces", stack.home / "logs"):
        assert _mode(folder) == 0o700, f"{folder} is {_mode(folder):o}"

    for args in (("results", "--request", receipt.request_id),
                 ("results", "--request", receipt.request_id, "--json"),
                 ("request", receipt.request_id)):
        shown = _cli(stack, *args)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert "pwned" in out, out  # the title is shown ...
        for raw in ("\x1b", "\x07", "\u202e"):  # ... but drives nothing
            assert raw not in out, f"{raw!r} printed raw by counterpoint {' '.join(args)}"
        assert ("\\x1b]0;pwned" in out) or ("\\u001b]0;pwned" in out), out


async def test_seeded_card_and_email_never_reach_spans_or_logs(
        stack: AgentStack, tmp_path: Path) -> None:
    # (a) a valid ticket, published by the CLI (so the CLI process's spans and logs count too)
    valid = tmp_path / "ticket.json"
    valid.write_bytes(orjson.dumps(_ticket()))
    published = _cli(stack, "publish", "ticket", str(valid))
    assert published.returncode == 0, published.stderr
    match = re.search(r"request id: (\S+)", published.stdout)
    assert match, published.stdout
    request_id = match.group(1)

    # (b) an invalid ticket (no id) with the same secrets: dead-lettered by the first agent,
    # whose validation error may echo the input.
    invalid = _ticket()
    del invalid["id"]
    _, offset = await send_raw(stack.bootstrap, INTAKE_TICKETS.name, orjson.dumps(invalid))

    (result,) = await wait_results(stack.bootstrap, lambda r: r.request_id == request_id,
                                   timeout_s=90)
    assert result.status in ("complete", "partial")
    letters = await wait_deadletters(
        stack.bootstrap,
        lambda d: d.source_topic == INTAKE_TICKETS.name and d.source_offset == offset,
        count=1, timeout_s=60)
    assert letters, stack.logs()

    shown = _cli(stack, "trace", request_id, "--json", "--wait", "10")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip()
    _assert_clean(shown.stdout + shown.stderr, "counterpoint trace --json")
    _assert_clean(published.stdout + published.stderr, "counterpoint publish")

    stack.stop()  # flush every agent's spans and final log lines
    files = [p for folder in ("traces", "logs") for p in (stack.home / folder).rglob("*")
             if p.is_file()]
    assert any(p.parent.name == "traces" for p in files), files
    assert any(p.parent.name == "logs" for p in files), files
    for path in files:
        _assert_clean(path.read_text(errors="replace"), str(path))
    # The dead letter was traced, with its error recorded on the span.
    spans = [orjson.loads(line) for p in files if p.suffix == ".jsonl"
             for line in p.read_bytes().splitlines() if line.strip()]
    assert any(s["status"] == "ERROR" and any(e["name"] == "exception" for e in s["events"])
               for s in spans), "no dead-letter span recorded its error"
