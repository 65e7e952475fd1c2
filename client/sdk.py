"""The Python SDK: what a business system written in Python embeds to use Counterpoint.

    async with Counterpoint() as cp:
        receipt = await cp.publish_ticket({"id": "T-1", "body": "I was charged twice"})
        result = await cp.request(Ticket(id="T-2", body="..."), timeout=60)

Validation, the envelope and the topics are those of `infra.publishing` (the CLI's), so a
ticket the CLI refuses the SDK refuses with the same message, before anything is sent.

Typing of the entry points:
  * `publish_ticket` / `publish_alert` take a model or a plain mapping (JSON-shaped dict);
  * `publish` / `request` take a model (the kind is its type) or a mapping with an explicit
    `kind="ticket" | "alert"`, since a dict alone cannot say what it is meant to be.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import AsyncExitStack, aclosing
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, Producer, tail
from counterpoint.infra.publishing import InputError, Kind, Receipt, send_event, validate
from counterpoint.infra.settings import Settings
from counterpoint.schemas.envelope import Envelope, new_event_id, scoped_id
from counterpoint.schemas.events import AlertmanagerWebhook, Result, SimpleAlert, Ticket
from counterpoint.schemas.identity import request_id_for
from counterpoint.topics.registry import SYNTHESIS_RESULTS

__all__ = ["Counterpoint", "Event", "InputError", "Receipt", "RequestTimeout", "ResultFilter"]

log = logging.getLogger(__name__)

Event = Ticket | AlertmanagerWebhook | SimpleAlert
# Result ids remembered for deduplication; a redelivered result arrives soon after the first,
# so a bounded memory is enough and a long-running iterator does not grow without end.
SEEN_LIMIT = 100_000


class RequestTimeout(TimeoutError):
    """No result for a published request arrived in time; the request itself was sent."""

    def __init__(self, request_id: str, timeout: float) -> None:
        super().__init__(f"no result for request {request_id} within {timeout:g}s")
        self.request_id = request_id
        self.timeout = timeout


class ResultFilter:
    """Turns `synthesis.results` records into Results: each result event once, optionally only
    those of some requests. Pure (no I/O), so it is tested on synthetic records.

    A request's result has one stable event id (ce_id) even when synthesis publishes it again
    after a crash, so the id, not the request, is what is deduplicated.
    """

    def __init__(self, request_ids: Iterable[str] | None = None,
                 limit: int = SEEN_LIMIT) -> None:
        self.request_ids = set(request_ids) if request_ids is not None else None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def accept(self, record: RawRecord) -> tuple[str, Result] | None:
        """(request id, result) for a result not seen before and wanted, else None."""
        try:
            envelope = Envelope.from_headers(record.headers)
        except ValueError:
            return None
        if envelope is None or record.value is None:
            return None  # synthesis always writes an envelope; anything else is not a result
        if self.request_ids is not None and envelope.request_id not in self.request_ids:
            return None  # checked before decoding: most records are someone else's
        if envelope.id in self._seen:
            return None
        try:
            result = SYNTHESIS_RESULTS.decode(record.value)
        except ValidationError:
            log.warning("skipping undecodable result at %s[%d]@%d", record.topic,
                        record.partition, record.offset)
            return None
        self._seen[envelope.id] = None
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return envelope.request_id, result


def _kind_of(event: Event | Mapping[str, Any], kind: Kind | None) -> Kind:
    found: Kind
    if isinstance(event, Ticket):
        found = "ticket"
    elif isinstance(event, AlertmanagerWebhook | SimpleAlert):
        found = "alert"
    elif isinstance(event, Mapping):
        if kind is None:
            raise TypeError("a mapping does not say what it is: pass kind='ticket' or "
                            "kind='alert', or use publish_ticket / publish_alert")
        return kind
    else:
        raise TypeError(f"cannot publish a {type(event).__name__}: expected Ticket, "
                        "AlertmanagerWebhook, SimpleAlert or a mapping")
    if kind is not None and kind != found:
        raise TypeError(f"a {type(event).__name__} is a {found}, not a {kind}")
    return found


def _encode(event: BaseModel | Mapping[str, Any], origin: str) -> bytes:
    """The JSON to publish. For a model, only the fields that were set (extras included), so
    defaults the sender never chose are not written into the record."""
    if isinstance(event, BaseModel):
        return event.model_dump_json(exclude_unset=True).encode()
    try:
        return orjson.dumps(dict(event))
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InputError(f"{origin}: not JSON-serialisable: {exc}") from exc


class Counterpoint:
    """A connection to Counterpoint's topics: one producer shared by every call, opened on first
    use (so invalid input never touches the broker), and one reader of `synthesis.results`
    shared by every pending `request`. Use it as an async context manager, or call `aclose`.
    """

    def __init__(self, bootstrap_servers: str | None = None, *,
                 source: str = "/counterpoint/sdk") -> None:
        settings = Settings()
        config = settings.kafka()  # fetch wait, idempotence etc. as every process has them
        if bootstrap_servers is not None:
            config = dataclasses.replace(config, bootstrap_servers=bootstrap_servers)
        self.config: KafkaConfig = config
        self.source = source
        self.max_alerts = settings.max_alerts
        self._stack = AsyncExitStack()
        self._producer: Producer | None = None
        self._opening = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Counterpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._stack.aclose()
        self._producer = None

    # --- publishing ---------------------------------------------------------------------

    async def publish_ticket(self, ticket: Ticket | Mapping[str, Any]) -> Receipt:
        return await self.publish(ticket, kind="ticket")

    async def publish_alert(
            self, alert: AlertmanagerWebhook | SimpleAlert | Mapping[str, Any]) -> Receipt:
        return await self.publish(alert, kind="alert")

    async def publish(self, event: Event | Mapping[str, Any], *,
                      kind: Kind | None = None) -> Receipt:
        """Validate, then publish; returns once the broker acknowledged the record."""
        resolved = _kind_of(event, kind)
        raw, parsed = self._validated(resolved, event)
        return await self._send(resolved, raw, parsed, new_event_id())

    def _validated(self, kind: Kind, event: Event | Mapping[str, Any]) -> tuple[bytes, Any]:
        origin = f"sdk {kind}"
        raw = _encode(event, origin)
        # Validated again even for a model: one built with model_construct is unchecked.
        return raw, validate(kind, raw, origin, self.max_alerts)

    async def _send(self, kind: Kind, raw: bytes, event: Any, event_id: str) -> Receipt:
        producer = await self._open_producer()
        return await send_event(producer, kind, raw, event, source=self.source,
                                event_id=event_id)

    async def _open_producer(self) -> Producer:
        async with self._opening:  # two first calls at once must not open two producers
            if self._producer is None:
                self._producer = await self._stack.enter_async_context(
                    Producer(self.config, client_id="counterpoint-sdk"))
            return self._producer

    # --- results ------------------------------------------------------------------------

    async def request(self, event: Event | Mapping[str, Any], *, kind: Kind | None = None,
                      timeout: float = 60) -> Result:  # noqa: ASYNC109 (see below)
        """Publish and wait for the request's final result.

        `timeout` bounds the wait after the broker acknowledged the publish; on expiry a
        `RequestTimeout` names the request id (the request still runs; `wait_for` can resume).
        A parameter rather than `asyncio.timeout` around the call, so that the publish is not
        cut short and the error can say which request it was.
        """
        resolved = _kind_of(event, kind)
        raw, parsed = self._validated(resolved, event)
        event_id = new_event_id()
        # As send_event names it: from source + id, or an Alertmanager alert's own.
        request_id = request_id_for(parsed, scoped_id(self.source, event_id))
        # Registered before publishing, and the shared reader reads from the beginning of
        # the topic, so the result cannot slip past between publishing and listening.
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self._ensure_reader()
            await self._send(resolved, raw, parsed, event_id)
            return await self._await(future, request_id, timeout)
        finally:
            self._waiting.pop(request_id, None)

    async def wait_for(self, request_id: str,
                       timeout: float = 60) -> Result:  # noqa: ASYNC109 (as for request)
        """The result of a request published earlier (by anyone), waiting for it if needed."""
        async def first() -> Result:
            async with aclosing(self.results(from_beginning=True,
                                             request_ids={request_id})) as stream:
                async for result in stream:
                    return result
            raise AssertionError("a followed topic does not end")  # pragma: no cover

        task = asyncio.ensure_future(first())
        return await self._await(task, request_id, timeout)

    @staticmethod
    async def _await(future: asyncio.Future[Result], request_id: str,
                     seconds: float) -> Result:
        try:
            return await asyncio.wait_for(future, timeout=seconds)
        except TimeoutError:
            raise RequestTimeout(request_id, seconds) from None

    async def results(self, *, from_beginning: bool = False,
                      request_ids: set[str] | None = None) -> AsyncGenerator[Result]:
        """Follow `synthesis.results`, yielding each result once (by its event id).

        Without `from_beginning`, only results that arrive after the reader has positioned
        itself; `request_ids` keeps only those requests' results. Never ends by itself.
        """
        wanted = ResultFilter(request_ids)
        async with aclosing(tail(self.config, [SYNTHESIS_RESULTS.name],
                                 from_beginning=from_beginning, follow=True,
                                 idle_timeout_s=0.2)) as stream:
            async for record in stream:
                accepted = wanted.accept(record)
                if accepted is not None:
                    yield accepted[1]

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._dispatch(), name="counterpoint-sdk-results")

    async def _dispatch(self) -> None:
        """One reader for every pending `request`: a consumer per request would multiply
        connections and each would have to position itself before its publish."""
        wanted = ResultFilter()  # dedupe only; requests are matched on the header first
        try:
            async with aclosing(tail(self.config, [SYNTHESIS_RESULTS.name],
                                     from_beginning=True, follow=True,
                                     idle_timeout_s=0.2)) as stream:
                async for record in stream:
                    # Header check first, so catching up on history decodes almost nothing.
                    if _request_id(record) not in self._waiting:
                        continue
                    accepted = wanted.accept(record)
                    future = self._waiting.get(accepted[0]) if accepted else None
                    if accepted and future is not None and not future.done():
                        future.set_result(accepted[1])
        except Exception as exc:
            # A broken reader must not leave requests waiting for their whole timeout; the
            # next request starts a new one.
            log.warning("results reader stopped: %s", exc)
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(exc)

def _request_id(record: RawRecord) -> str | None:
    """The ce_requestid header, read without validating the whole envelope."""
    for key, value in record.headers:
        if key == "ce_requestid":
            return value.decode(errors="replace")
    return None
