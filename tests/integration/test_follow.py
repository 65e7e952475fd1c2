"""`counterpoint results --follow` as a person runs it (on a terminal: a pty) and as a script
runs it (`--json`: JSON lines and nothing else), against real agent processes."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from counterpoint.infra.publishing import publish
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config
from tests.integration.test_gateway import example

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EXE = str(Path(sys.executable).with_name("counterpoint"))
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _env(stack: AgentStack) -> dict[str, str]:
    return dict(stack.env, COLUMNS="160", LINES="50", TERM="xterm")


def read_until(fd: int, proc: subprocess.Popen[bytes], wanted: list[bytes],
               timeout_s: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
        plain = ANSI.sub(b"", out)
        if all(w in plain for w in wanted):
            return plain
        assert proc.poll() is None, plain.decode(errors="replace")[-3000:]
    raise AssertionError(f"never saw {wanted}:\n" + ANSI.sub(b"", out).decode(
        errors="replace")[-3000:])


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def test_follow_prints_results_under_a_live_status_line(pipeline: AgentStack) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([EXE, "results", "--follow"], env=_env(pipeline),
                            stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL)
    os.close(secondary)
    try:
        read_until(primary, proc, [b"requests ", b" in progress "], 60)
        ticket = dict(example("ticket_dual_intent.json"), id=f"T-follow-{uuid.uuid4().hex[:8]}")
        receipt = await publish(config(pipeline.bootstrap), "ticket", orjson.dumps(ticket),
                                "test")
        seen = read_until(primary, proc, [f"reply for {ticket['id']}".encode(),
                                          "in progress 0 · done 1".encode()], 120)
        # The status line counted the request; once answered it is not pending any more.
        after = seen.rsplit(f"reply for {ticket['id']}".encode(), 1)[1]
        assert "requests 1 · in progress 0 · done 1".encode() in after
        assert receipt.request_id[:8].encode() not in after.rsplit(b"in progress 0", 1)[1]
    finally:
        stop(proc)
        os.close(primary)


async def test_follow_json_stays_json_lines(pipeline: AgentStack) -> None:
    ticket = dict(example("ticket_dual_intent.json"), id=f"T-fjson-{uuid.uuid4().hex[:8]}")
    proc = subprocess.Popen([EXE, "results", "--follow", "--json"], env=_env(pipeline),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        receipt = await publish(config(pipeline.bootstrap), "ticket", orjson.dumps(ticket),
                                "test")
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        lines: list[bytes] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "results --follow --json ended"
            lines.append(line)
            if orjson.loads(line)["request_id"] == receipt.request_id:
                break
        else:
            raise AssertionError("no result line for the request")
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    assert all(isinstance(orjson.loads(line), dict) for line in lines)  # nothing but JSON
