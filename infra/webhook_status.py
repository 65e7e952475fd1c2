"""What became of a request's webhook delivery, read back from the topics.

Delivered: a `WebhookDelivery` on `webhooks.deliveries`. Failed: the result dead-lettered by
the webhooks agent (its original headers kept, so the request id is there), with the last
error and the number of attempts. The latest word wins: a dead letter redriven and then
delivered shows as delivered.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Final, Literal

from pydantic import BaseModel

from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, tail
from counterpoint.schemas.envelope import Envelope
from counterpoint.topics.registry import DEADLETTER_NAME, WEBHOOK_DELIVERIES

WEBHOOKS_AGENT: Final = "webhooks"
DELIVERY_TOPICS: Final = (WEBHOOK_DELIVERIES.name, DEADLETTER_NAME)


class DeliveryInfo(BaseModel):
    state: Literal["delivered", "failed"]
    attempts: int
    result_id: str | None = None
    url: str | None = None
    status_code: int | None = None
    reason: str | None = None
    error: str | None = None


def delivery_of(record: RawRecord) -> tuple[str, DeliveryInfo] | None:
    """(request id, what happened) for a delivery record, None for anything else."""
    if record.value is None:
        return None
    if record.topic == WEBHOOK_DELIVERIES.name:
        d = WEBHOOK_DELIVERIES.decode(record.value)
        return d.request_id, DeliveryInfo(state="delivered", attempts=d.attempts,
                                          result_id=d.result_id, url=d.url,
                                          status_code=d.status_code)
    if record.topic == DEADLETTER_NAME:
        letter = DeadLetter.from_record(record)
        if letter.agent != WEBHOOKS_AGENT:
            return None  # checked first: other letters' headers may be anything
        envelope = Envelope.from_headers(record.headers)
        if envelope is None:
            return None
        return envelope.request_id, DeliveryInfo(state="failed", attempts=letter.attempts,
                                                 result_id=envelope.id, reason=letter.reason,
                                                 error=letter.message)
    return None


async def failed_deliveries(config: KafkaConfig) -> dict[str, DeliveryInfo]:
    """Request id -> its failed delivery, for requests whose latest delivery word is failure.

    Reads `webhooks.deliveries` and `deadletter` to their ends without a consumer group.
    """
    latest: dict[str, tuple[int, DeliveryInfo]] = {}
    async with aclosing(tail(config, list(DELIVERY_TOPICS), idle_timeout_s=0.5)) as stream:
        async for record in stream:
            try:
                found = delivery_of(record)
            except ValueError:
                continue
            if found is not None:
                rid, info = found
                if rid not in latest or latest[rid][0] <= record.timestamp_ms:
                    latest[rid] = (record.timestamp_ms, info)
    return {rid: info for rid, (_, info) in latest.items() if info.state == "failed"}
