"""What the HTTP gateway keeps between requests: one producer, and an index of request progress.

The producer is opened on first use (so the gateway starts, and answers 503, while the broker
is down) and every publish runs under a deadline, so a dead broker gives 503 rather than a hang.

The index is fed by a group-less reader of triage.decisions, investigation.findings and
synthesis.results (from the beginning, following), so it never takes work away from an agent.
It is in memory: after a restart it is rebuilt by reading those topics again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any, Literal

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.signing import Trust
from counterpoint.bus.admin import broker_reachable
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, Producer, is_kafka_error, tail
from counterpoint.infra.approvals import APPROVAL_TOPICS, ApprovalBook
from counterpoint.infra.progress import WATCHED, Progress
from counterpoint.infra.webhook_status import DELIVERY_TOPICS, delivery_of
from counterpoint.schemas.envelope import Envelope

log = logging.getLogger(__name__)

Status = Literal["accepted", "triaged", "investigating", "complete", "partial", "resolved"]


class BrokerUnavailable(RuntimeError):
    """No broker acknowledged the record within the deadline."""


class Publisher:
    """One producer per gateway process, opened lazily, every send bounded by a deadline."""

    def __init__(self, config: KafkaConfig, timeout_s: float = 5.0) -> None:
        self._config = config
        self._timeout_s = timeout_s
        self._producer: Producer | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> Producer:
        async with self._lock:
            if self._producer is None:
                producer = Producer(self._config, client_id="counterpoint-gateway")
                try:
                    await producer.__aenter__()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await producer.__aexit__(None, None, None)
                    raise
                self._producer = producer
            return self._producer

    async def send(self, topic: str, value: bytes, *, key: bytes | None,
                   headers: Sequence[tuple[str, bytes]]) -> tuple[int, int]:
        where = self._config.bootstrap_servers
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._ensure()
                return await producer.send(topic, value, key=key, headers=headers)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"the broker at {where} did not acknowledge within "
                                    f"{self._timeout_s:g}s") from exc
        except Exception as exc:
            if is_kafka_error(exc) or isinstance(exc, OSError):
                raise BrokerUnavailable(f"the broker at {where} is unavailable: {exc}") from exc
            raise

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.__aexit__(None, None, None), 10)


class RequestIndex:
    """Progress per request id, most recently touched last; the oldest go past `max_tracked`."""

    def __init__(self, max_tracked: int = 100_000, book: ApprovalBook | None = None) -> None:
        self._items: OrderedDict[str, Progress] = OrderedDict()
        self._max = max_tracked
        # Proposed actions, decisions and outcomes, by approval id; without a book given, one
        # that trusts no key, so it lists nothing.
        self.book = book or ApprovalBook(Trust([]), ApprovalPolicy())

    def __len__(self) -> int:
        return len(self._items)

    def _entry(self, request_id: str, label: str) -> Progress:
        progress = self._items.get(request_id)
        if progress is None:
            progress = self._items[request_id] = Progress(request_id, label)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(request_id)
        return progress

    def accepted(self, request_id: str, label: str) -> None:
        self._entry(request_id, label)

    def apply(self, record: RawRecord) -> None:
        try:
            if record.topic in DELIVERY_TOPICS:
                found = delivery_of(record)
                if found is not None:
                    self._entry(found[0], "").delivery = found[1]
                return
            envelope = Envelope.from_headers(record.headers)
            if envelope is None or record.value is None:
                return
            if any(record.topic == t.name for t in APPROVAL_TOPICS):
                self.book.apply(record)
                return
            self._entry(envelope.request_id, envelope.subject or "").apply(record)
        except Exception:  # a record the agents would dead-letter: not ours to judge here
            log.warning("skipped an unreadable record %s[%d]@%d", record.topic,
                        record.partition, record.offset, exc_info=True)

    def get(self, request_id: str) -> Progress | None:
        return self._items.get(request_id)


def status_of(progress: Progress) -> Status:
    if progress.resolution is not None:
        return "resolved"  # closed: its alert resolved (see agents/closure.py)
    if progress.result is not None:
        return progress.result.status
    if progress.findings:
        return "investigating"
    if progress.decision is not None:
        return "triaged"
    return "accepted"


def steps_of(progress: Progress) -> list[dict[str, Any]]:
    """Triage, each planned investigation, synthesis: with `done` saying which have happened."""
    d = progress.decision
    steps: list[dict[str, Any]] = [{
        "step": "triage", "done": d is not None, "agent": "triage" if d else None,
        "summary": (f"{d.category}; priority {d.priority}; {len(d.investigations)} "
                    "investigations planned") if d else None,
    }]
    planned = {inv.task_id: inv for inv in d.investigations} if d else {}
    task_ids = list(planned) + [t for t in progress.findings if t not in planned]
    for task_id in task_ids:
        finding = progress.findings.get(task_id)
        inv = planned.get(task_id)
        source = finding or inv
        assert source is not None
        steps.append({"step": "investigation", "done": finding is not None, "task_id": task_id,
                      "skill": source.skill, "focus": source.focus,
                      "agent": finding.agent if finding else None,
                      "summary": finding.summary if finding else None})
    r = progress.result
    steps.append({"step": "synthesis", "done": r is not None, "agent": "synthesis" if r else None,
                  "summary": f"{r.kind} ({r.status})" if r else None})
    if progress.resolution is not None:
        when = progress.resolution.resolved_at
        steps.append({"step": "resolution", "done": True, "agent": "synthesis",
                      "summary": "alert resolved" + (f" at {when.isoformat()}" if when else "")
                      + "; request closed"})
    return steps


class Tracker:
    """Keeps `index` fed from the broker; reconnects (with backoff) whenever it cannot read."""

    def __init__(self, config: KafkaConfig, index: RequestIndex) -> None:
        self.config = config
        self.index = index
        self.connected = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-progress-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            # Probe first: a reader that fails to start would leave its consumer unclosed.
            if await broker_reachable(self.config.bootstrap_servers, timeout_s=2.0):
                try:
                    topics = [*(t.name for t in (*WATCHED, *APPROVAL_TOPICS)),
                              *DELIVERY_TOPICS]
                    async with aclosing(tail(self.config, topics,
                                             follow=True, idle_timeout_s=0.5)) as stream:
                        self.connected = True
                        backoff = 0.5
                        async for record in stream:
                            self.index.apply(record)
                except Exception as exc:
                    if not (is_kafka_error(exc) or isinstance(exc, OSError)):
                        raise
                    log.warning("progress reader lost the broker: %r; reconnecting", exc)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
