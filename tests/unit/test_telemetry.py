"""Telemetry setup, exercised in real child processes.

The OTel SDK lets a process install its global tracer provider only once, and the point is one
trace across processes, so every scenario runs `setup_telemetry` in its own subprocess.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from counterpoint.infra.telemetry import default_traces_dir
from counterpoint.infra.tracetree import (
    SpanRecord,
    load_spans,
    render_tree,
    spans_for_request,
    to_json_lines,
)

# A stand-in agent process: continues the trace in argv[3] (if any), emits a consumer span
# tagged with the request id, a child, optionally a failing child, and prints the traceparent
# it would put on its outgoing event.
AGENT = r"""
import json, sys, time
from pathlib import Path
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from counterpoint.infra.telemetry import setup_telemetry

service, traces_dir, traceparent, request_id, fail = sys.argv[1:6]
tel = setup_telemetry(service, traces_dir=Path(traces_dir))
tracer = trace.get_tracer("test-agent")
parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
with tracer.start_as_current_span(
    f"process {service}", context=parent, kind=SpanKind.CONSUMER,
    attributes={"counterpoint.request_id": request_id, "tags": ("a", "b")},
) as span:
    span.add_event("received", {"messaging.kafka.offset": 7})
    with tracer.start_as_current_span(f"think {service}"):
        time.sleep(0.02)
    if fail == "fail":
        with tracer.start_as_current_span("call tool") as bad:
            bad.set_status(Status(StatusCode.ERROR, "boom"))
    carrier = {}
    propagate.inject(carrier)
tel.shutdown()
tel.shutdown()  # a second call (atexit after SIGTERM) must be harmless
print(json.dumps({"carrier": carrier, "file": str(tel.traces_file),
                  "service": tel.service_name, "instance": tel.instance_id}))
"""


RECORD_KEYS = (
    *("trace_id", "span_id", "parent_id", "name", "kind", "service.name", "service.instance.id"),
    *("start", "end", "duration_ms", "status", "attributes", "events"),
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


def run_agent(
    service: str,
    traces_dir: Path,
    *,
    traceparent: str = "",
    request_id: str = "req-1",
    fail: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            AGENT,
            service,
            str(traces_dir),
            traceparent,
            request_id,
            "fail" if fail else "ok",
        ],
        env=env if env is not None else _clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture
def two_process_trace(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    traces = default_traces_dir(tmp_path)
    first, _ = run_agent("triage", traces)
    second, _ = run_agent(
        "synthesis", traces, traceparent=first["carrier"]["traceparent"], fail=True
    )
    run_agent("triage", traces, request_id="req-other")  # an unrelated request
    return traces, first, second


def test_default_traces_dir_is_under_home(tmp_path: Path) -> None:
    assert default_traces_dir(tmp_path) == tmp_path / "traces"


def test_one_trace_spans_both_processes(
    two_process_trace: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    traces, first, second = two_process_trace
    assert first["instance"] != second["instance"]
    files = {p.name for p in traces.glob("*.jsonl")}
    assert len(files) == 3  # one file per process
    assert {Path(first["file"]).name, Path(second["file"]).name} <= files

    spans = spans_for_request(load_spans(traces), "req-1")
    assert len({s.trace_id for s in spans}) == 1
    assert {s.service_name for s in spans} == {"triage", "synthesis"}
    assert len(spans) == 5  # 2 in triage, 3 in synthesis; none of req-other
    by_name = {s.name: s for s in spans}

    # The carrier the first process printed names its consumer span as the parent.
    sent_parent = first["carrier"]["traceparent"].split("-")[2]
    assert by_name["process triage"].span_id == sent_parent
    assert by_name["process triage"].parent_id is None
    assert by_name["process synthesis"].parent_id == sent_parent
    assert by_name["think synthesis"].parent_id == by_name["process synthesis"].span_id
    assert by_name["think triage"].parent_id == sent_parent
    # Spans without the request id attribute still belong to the request through their trace.
    assert "counterpoint.request_id" not in by_name["think synthesis"].attributes


def test_records_follow_the_contract_shape(
    two_process_trace: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    _, _, second = two_process_trace
    lines = Path(second["file"]).read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]
    assert len(records) == 3
    assert all(tuple(r) == RECORD_KEYS for r in records)
    consumer = next(r for r in records if r["name"] == "process synthesis")
    assert consumer["kind"] == "CONSUMER"
    assert consumer["service.name"] == "synthesis"
    assert consumer["service.instance.id"] == second["instance"]
    assert len(consumer["trace_id"]) == 32 and len(consumer["span_id"]) == 16
    assert consumer["attributes"] == {"counterpoint.request_id": "req-1", "tags": ["a", "b"]}
    assert consumer["events"][0]["name"] == "received"
    assert consumer["events"][0]["attributes"] == {"messaging.kafka.offset": 7}
    assert consumer["start"].endswith("Z") and len(consumer["start"]) == 27
    assert consumer["duration_ms"] >= 20
    assert {r["status"] for r in records} == {"UNSET", "ERROR"}

    # Parsing and re-serialising gives back the same records.
    spans = [SpanRecord.from_dict(r) for r in records]
    assert [orjson.loads(x) for x in to_json_lines(spans).splitlines()] == records


def test_render_tree_shows_both_processes(
    two_process_trace: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    traces, _, _ = two_process_trace
    spans = spans_for_request(load_spans(traces), "req-1")
    console = Console(record=True, width=120, color_system=None)
    console.print(render_tree(spans))
    text = console.export_text()
    assert f"trace {spans[0].trace_id}" in text
    assert "5 spans  2 processes" in text
    assert "triage[" in text and "synthesis[" in text
    assert "ms" in text and "█" in text
    assert "ERROR" in text
    lines = text.splitlines()
    # Cross-process nesting: synthesis's consumer span sits under triage's consumer span.
    triage_row = next(i for i, x in enumerate(lines) if "process triage" in x)
    synth_row = next(i for i, x in enumerate(lines) if "process synthesis" in x)
    indent = lines[synth_row].index("process") - lines[triage_row].index("process")
    assert synth_row > triage_row and indent == 4


def test_otel_service_name_overrides(tmp_path: Path) -> None:
    out, _ = run_agent("triage", tmp_path, env=_clean_env(OTEL_SERVICE_NAME="billing-eu"))
    assert out["service"] == "billing-eu"
    [span] = [s for s in load_spans(tmp_path) if s.parent_id is None]
    assert span.service_name == "billing-eu"
    assert Path(out["file"]).name.startswith("billing-eu-")


def test_unwritable_traces_dir_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "traces"
    blocker.write_text("a file where the folder should be")
    _, stderr = run_agent("triage", blocker)  # exits 0: run_agent asserts it
    assert "could not write" in stderr


class _Collector(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.paths = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_otlp_endpoint_switches_to_otlp_http(tmp_path: Path, collector: str) -> None:
    out, stderr = run_agent(
        "triage", tmp_path / "traces", env=_clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector)
    )
    assert out["file"] == "None"
    assert "/v1/traces" in _Collector.paths, stderr
    assert not (tmp_path / "traces").exists()
