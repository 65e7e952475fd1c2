"""What the CLI prints cannot drive the operator's terminal (infra/terminal.py).

Data from outside carries escape sequences, C1 controls and BiDi overrides; every renderer
prints through one SafeConsole (or json_line), so each arrives escaped whatever prints it.
"""

from __future__ import annotations

import ast
import io
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from rich.table import Table

from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.delivery import Failure, deadletter_headers
from counterpoint.bus.errors import SchemaError
from counterpoint.infra import approvals_cli, cli
from counterpoint.infra.deadletters import render_letter, render_list
from counterpoint.infra.progress import render_result
from counterpoint.infra.terminal import SafeConsole, SafeFormatter, escape, json_line
from counterpoint.infra.tracetree import SpanRecord, render_tree
from counterpoint.schemas.events import FindingRef, Generation, Result, Usage

INFRA = Path(__file__).resolve().parents[2] / "infra"
# Retitle the window, clear the screen, a CSI as a C1 control, reverse what follows.
HOSTILE = "\x1b]0;pwned\x07 \x1b[2J \x9b31m \u202eevil\u202c done"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colours: the only escapes allowed out


def printed(renderable: object) -> str:
    out = io.StringIO()
    console = SafeConsole(file=out, width=160, force_terminal=True, color_system="truecolor")
    console.print(renderable)
    return out.getvalue()


def assert_inert(text: str) -> None:
    rest = SGR.sub("", text)
    for raw in ("\x1b", "\x9b", "\u202e", "\u202c", "\x07"):
        assert raw not in rest, f"{raw!r} reached the terminal: {rest!r}"


def result() -> Result:
    return Result(request_id="req-1", source_id=f"T-{HOSTILE}", kind="reply",
                  title=HOSTILE, text=f"Hello\n{HOSTILE}\nBye", priority="normal",
                  status="complete", findings=[],
                  generation=Generation(provider="offline", model="offline", offline=True),
                  usage=Usage(), completed_at=datetime(2026, 11, 21, tzinfo=UTC))


def test_escape_makes_controls_visible_and_keeps_text() -> None:
    assert escape("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert escape("\x9b\u202e\u2066\x00\x7f") == "\\x9b\\u202e\\u2066\\x00\\x7f"
    assert escape("line 1\n\tline 2 — café ✓") == "line 1\n\tline 2 — café ✓"
    assert escape(escape(HOSTILE)) == escape(HOSTILE)


def test_json_lines_escape_what_json_leaves_raw_and_read_back_the_same() -> None:
    line = json_line({"title": HOSTILE})
    assert line.endswith("\n") and line.count("\n") == 1
    assert_inert(line)
    assert orjson.loads(line) == {"title": HOSTILE}


def test_a_result_prints_escaped() -> None:  # results, follow, demo, request
    text = printed(render_result(result()))
    assert_inert(text)
    assert "\\x1b]0;pwned" in text and "\\u202eevil" in text and "Bye" in text
    assert SGR.search(text), "rich's own styling still comes through"


def test_dead_letters_print_escaped() -> None:  # deadletter list / show
    source = RawRecord("intake.tickets", 0, 1, HOSTILE.encode(), HOSTILE.encode(),
                       (("x-note", HOSTILE.encode()),), 1_000)
    moment = datetime(2026, 11, 21, tzinfo=UTC)
    headers = deadletter_headers(source, Failure(SchemaError(HOSTILE), 1, moment, moment),
                                 agent="triage", group="counterpoint.triage")
    letter = DeadLetter.from_record(RawRecord("deadletter", 0, 3, source.key, source.value,
                                              tuple(headers), 1_000))
    for renderable in (render_list([letter]), render_letter(letter)):
        text = printed(renderable)
        assert_inert(text)
        assert "\\x1b[2J" in text


def test_a_trace_prints_escaped() -> None:
    start = datetime(2026, 11, 21, tzinfo=UTC)
    span = SpanRecord(trace_id="1" * 32, span_id="2" * 16, parent_id=None,
                      name=f"process {HOSTILE}", kind="CONSUMER", service_name=HOSTILE,
                      instance_id="h-1", start=start, end=start + timedelta(milliseconds=5),
                      duration_ms=5.0, status="OK",
                      attributes={"counterpoint.request_id": "req-1", "note": HOSTILE})
    assert_inert(printed(render_tree([span])))


def test_brackets_in_data_do_not_stop_a_command() -> None:
    finding = FindingRef(task_id="t", skill="billing", focus="charges", agent="billing",
                         summary="charged [/twice]", facts=[])
    broken = result().model_copy(update={"title": "[/x] refund [/bold]", "source_id": "[/]",
                                         "findings": [finding]})
    text = printed(render_result(broken))  # a panel title and a table cell
    assert "[/x] refund [/bold]" in text and "charged [/twice]" in text


def test_links_from_markup_in_data_are_dropped() -> None:
    table = Table()
    table.add_column("title")
    table.add_row("[link=https://evil.example/approve]click to approve[/link]")
    text = printed(table)
    assert "click to approve" in text and "\x1b]8;" not in text


def test_every_command_prints_through_the_safe_consoles() -> None:
    assert isinstance(cli.console, SafeConsole) and isinstance(cli.err_console, SafeConsole)
    assert approvals_cli.console is cli.console
    for path in INFRA.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                # A Console of its own would bypass the escaping.
                assert node.func.id != "Console", f"{path.name}:{node.lineno} makes a Console"
            if (isinstance(node, ast.Attribute) and node.attr == "write"
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "stdout"):
                line = ast.get_source_segment(path.read_text(), node) or ""
                assert path.name in ("cli.py", "approvals_cli.py", "project_results.py"), \
                    f"{path.name}: {line}"


def test_cli_logs_are_escaped() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "got %s", (HOSTILE,), None)
    line = SafeFormatter("%(message)s").format(record)
    assert_inert(line)
    assert line == "got " + escape(HOSTILE)
