"""Where each partition really ends.

The embedded broker (Tansu) answers ListOffsets(latest) with the base offset of the last
record batch plus one, not the high watermark: after a batch of 5 records at offsets 1-5 it
says 2. Lag computed from it is short by up to a batch, and a reader stopping there would miss
the rest of the last batch if it read in smaller steps than whole batches. A fetch response
carries the true high watermark, so this asks ListOffsets for a lower bound, fetches from it
(at most the last batch comes back) and takes the fetch's high watermark.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition


async def end_offsets(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition],
                      timeout_s: float = 5.0) -> dict[TopicPartition, int]:
    """The high watermark of each partition. Changes the consumer's assignment and positions:
    use a group-less consumer and seek afterwards."""
    if not partitions:
        return {}
    listed: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    consumer.assign(list(partitions))
    for tp, offset in listed.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    while True:
        known = {tp: consumer.highwater(tp) for tp in partitions}
        if all(hw is not None for hw in known.values()):
            return {tp: max(listed[tp], hw or 0) for tp, hw in known.items()}
        if time.monotonic() >= deadline:
            # No fetch answered in time: the listed offsets are the best known lower bound.
            return {tp: max(listed[tp], hw or 0) for tp, hw in known.items()}
        await consumer.getmany(timeout_ms=100)
