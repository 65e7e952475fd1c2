"""One relay hop as its own OS process.

    python -m tests.bench.worker raw          --bootstrap HOST:PORT --prefix P --hop I
    python -m tests.bench.worker counterpoint --bootstrap HOST:PORT --prefix P --hop I
                                              [--traces-dir DIR] [--metrics]

`raw` is the baseline: plain aiokafka, consume -> orjson.loads -> orjson.dumps -> produce to the
next topic, commit once the broker acked the batch's produces. `counterpoint` is the same hop as a
Counterpoint `Agent` run by `counterpoint.bus.kafka.run_agent` (envelope, header codec, trace
propagation, dead-letter checks, commit after ack). Both log ` assigned ` once they own
partitions, which is how the bench knows they joined. SIGTERM stops either cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from tests.bench.topics import HOPS, relay_agent, relay_topics

log = logging.getLogger("bench.worker")

# The consumer/producer settings run_agent uses (counterpoint.bus.kafka.KafkaConfig); the group
# timeouts depend on the broker (KafkaConfig.group_timeouts), so the bench passes them: this
# module stays light, as it is the baseline's whole import.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
MAX_BATCH = 500


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        self.name = name

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("%s pid %d assigned %d partitions: %s", self.name, os.getpid(), len(names),
                 " ".join(names) or "(none)")


async def raw_hop(bootstrap: str, prefix: str, hop: int, fetch_max_wait_ms: int,
                  stop: asyncio.Event, session_timeout_ms: int = SESSION_TIMEOUT_MS,
                  heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS) -> int:
    topics = relay_topics(prefix)
    source, target = topics[hop].name, topics[hop + 1].name
    name = f"{prefix}.raw-hop{hop}"
    client_id = f"{name}-{os.getpid()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks="all",
                                enable_idempotence=False, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=name, client_id=client_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms, session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        partition_assignment_strategy=(RoundRobinPartitionAssignor,),
    )
    consumer.subscribe([source], listener=_Assigned(name))
    relayed = 0
    await producer.start()
    try:
        await consumer.start()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            if not batch:
                continue
            acks = []
            for records in batch.values():
                for msg in records:
                    body = orjson.loads(msg.value)
                    acks.append(await producer.send(target, orjson.dumps(body), key=msg.key))
            await asyncio.gather(*acks)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
            relayed += len(acks)
    finally:
        await consumer.stop()
        await producer.stop()
    return relayed


async def counterpoint_hop(bootstrap: str, prefix: str, hop: int, fetch_max_wait_ms: int,
                           stop: asyncio.Event) -> int:
    from counterpoint.bus.kafka import KafkaConfig, run_agent

    agent = relay_agent(prefix, hop)
    delivery = await run_agent(agent, KafkaConfig(bootstrap_servers=bootstrap,
                                                  fetch_max_wait_ms=fetch_max_wait_ms), stop)
    if delivery.stats.deadlettered:
        log.error("%s dead-lettered %d records", agent.name,
                  delivery.stats.total("deadlettered"))
    return delivery.stats.total("sent")


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    telemetry = None
    if args.traces_dir:
        from pathlib import Path

        from counterpoint.infra.telemetry import setup_telemetry

        telemetry = setup_telemetry(f"bench-hop{args.hop}", traces_dir=Path(args.traces_dir))
    served = None
    if args.metrics:
        from counterpoint.infra.metrics import setup_metrics

        served = setup_metrics(f"bench-hop{args.hop}", port=0)
    try:
        if args.kind == "raw":
            relayed = await raw_hop(args.bootstrap, args.prefix, args.hop, args.fetch_max_wait_ms,
                                    stop, args.session_timeout_ms, args.heartbeat_interval_ms)
        else:
            relayed = await counterpoint_hop(args.bootstrap, args.prefix, args.hop,
                                             args.fetch_max_wait_ms, stop)
    finally:
        if served is not None:
            served.shutdown()
        if telemetry is not None:
            telemetry.shutdown()
    log.info("%s hop %d pid %d stopped: relayed %d", args.kind, args.hop, os.getpid(), relayed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.worker")
    parser.add_argument("kind", choices=("raw", "counterpoint"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--hop", type=int, required=True, choices=range(HOPS))
    parser.add_argument("--fetch-max-wait-ms", type=int, default=10)
    parser.add_argument("--session-timeout-ms", type=int, default=SESSION_TIMEOUT_MS,
                        help="raw: the consumer group's session timeout")
    parser.add_argument("--heartbeat-interval-ms", type=int, default=HEARTBEAT_INTERVAL_MS,
                        help="raw: the consumer group's heartbeat interval")
    parser.add_argument("--traces-dir", default=None,
                        help="install the OpenTelemetry SDK and write spans here (JSONL)")
    parser.add_argument("--metrics", action="store_true",
                        help="metrics on: a meter provider and /metrics on a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
