"""Consumer group timeouts by broker: short on Tansu, whose joins wait half of it; Kafka's
minimum elsewhere; a configured one everywhere."""

from __future__ import annotations

from types import SimpleNamespace

from counterpoint.bus.kafka import (
    KAFKA_SESSION_TIMEOUT_MS,
    TANSU_SESSION_TIMEOUT_MS,
    BrokerInfo,
    KafkaConfig,
    fetch_plan,
)
from counterpoint.infra.settings import Settings


def test_unconfigured_timeouts_follow_the_broker() -> None:
    config = KafkaConfig("unused:9092")
    assert config.group_timeouts(tansu=True) == (TANSU_SESSION_TIMEOUT_MS,
                                                 TANSU_SESSION_TIMEOUT_MS // 2)
    assert config.group_timeouts(tansu=False) == (KAFKA_SESSION_TIMEOUT_MS, 1_000)
    assert KAFKA_SESSION_TIMEOUT_MS >= 6_000  # Kafka's group.min.session.timeout.ms default


def test_a_configured_timeout_holds_on_every_broker() -> None:
    config = KafkaConfig("unused:9092", session_timeout_ms=9_000)
    assert config.group_timeouts(tansu=True) == (9_000, 1_000)
    assert config.group_timeouts(tansu=False) == (9_000, 1_000)
    both = KafkaConfig("unused:9092", session_timeout_ms=4_500, heartbeat_interval_ms=700)
    assert both.group_timeouts(tansu=True) == (4_500, 700)


def test_the_setting_reaches_the_config(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("COUNTERPOINT_SESSION_TIMEOUT_MS", raising=False)
    assert Settings().kafka().session_timeout_ms is None
    monkeypatch.setenv("COUNTERPOINT_SESSION_TIMEOUT_MS", "3000")
    assert Settings().kafka().group_timeouts(tansu=True) == (3_000, 1_000)


def test_tansu_is_told_by_its_cluster_id() -> None:
    assert not BrokerInfo("tansu_cluster", ("127.0.0.1:9092",)).wakes_fetches
    assert BrokerInfo("MkU3OEVBNTcwNTJENDM2Qk", ("kafka:9092",)).wakes_fetches


class _Client:
    """Answers the MetadataRequest fetch_plan sends with this cluster id."""

    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: object) -> object:
        return SimpleNamespace(cluster_id=self.cluster_id, brokers=[(1, "127.0.0.1", 9092)])


async def test_the_fetch_plan_says_whether_the_broker_is_tansu() -> None:
    config = KafkaConfig("127.0.0.1:9092")
    on_tansu = await fetch_plan(config, _Client("tansu_cluster"))  # type: ignore[arg-type]
    on_kafka = await fetch_plan(config, _Client("MkU3OEVBNTcwNTJENDM2Qk"))  # type: ignore[arg-type]
    assert on_tansu.tansu and not on_kafka.tansu
    assert config.group_timeouts(on_tansu.tansu)[0] == TANSU_SESSION_TIMEOUT_MS
    assert config.group_timeouts(on_kafka.tansu)[0] == KAFKA_SESSION_TIMEOUT_MS
