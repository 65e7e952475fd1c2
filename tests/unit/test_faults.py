"""Provider errors, the fault-injecting test aid, and retries of LLM faults on the in-memory bus."""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.llm.errors import (
    InvalidOutput,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from counterpoint.agents.llm.faults import FaultyProvider
from counterpoint.agents.llm.offline import OFFLINE_MODEL, OfflineProvider
from counterpoint.agents.llm.outputs import TicketAssessment
from counterpoint.agents.llm.provider import LLMRequest, LLMResponse
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.delivery import Delivery, RetryPolicy
from counterpoint.bus.errors import CounterpointError, is_retriable, reason_of
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.providers import make_provider
from counterpoint.infra.settings import Settings
from counterpoint.schemas.events import Generation, Subject
from counterpoint.topics.registry import DEADLETTER_NAME, INTAKE_TICKETS, SYNTHESIS_RESULTS
from counterpoint_demo.store import BusinessStore
from tests.support.demo_business import demo_context

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
TICKET_RAW = (EXAMPLES / "ticket_dual_intent.json").read_bytes()
RETRIABLE_REASONS = {"llm-rate-limited", "llm-overloaded", "llm-timeout"}


def _request(text: str = "My invoice is wrong and I can't log in.") -> LLMRequest[TicketAssessment]:
    subject = Subject(kind="ticket", source_id="T-1", title=text[:80], text=text,
                      customer_id="C-42")
    return LLMRequest(task="triage.ticket", system="You triage tickets.", content=text,
                      output=TicketAssessment, context={"subject": subject})


class Echo:
    """A trivial inner provider: counts calls, returns the offline answer."""

    name = "echo"

    def __init__(self) -> None:
        self.calls = 0
        self._offline = OfflineProvider()

    async def generate(self, request: LLMRequest[Any], *, model: str) -> LLMResponse[Any]:
        self.calls += 1
        return await self._offline.generate(request, model=model)


async def _outcomes(provider: FaultyProvider, n: int) -> list[str]:
    """'ok' or the error's reason, per call."""
    out = []
    request = _request()
    for _ in range(n):
        try:
            await provider.generate(request, model="m")
            out.append("ok")
        except ProviderError as exc:
            out.append(exc.reason)
    return out


# --- the error classification -----------------------------------------------------------------


@pytest.mark.parametrize(("error", "reason"), [
    (RateLimited(), "llm-rate-limited"),
    (Overloaded("busy"), "llm-overloaded"),
    (ProviderTimeout("slow"), "llm-timeout"),
])
def test_transient_provider_errors_are_retriable_with_their_reason(
        error: ProviderError, reason: str) -> None:
    assert isinstance(error, CounterpointError)
    assert is_retriable(error)
    assert reason_of(error) == reason


def test_invalid_output_is_final() -> None:
    error = InvalidOutput("summary: field required")
    assert isinstance(error, ProviderError)
    assert not is_retriable(error)
    assert reason_of(error) == "llm-invalid-output"


def test_rate_limited_carries_retry_after() -> None:
    assert RateLimited().retry_after is None
    assert RateLimited("429", retry_after=2.5).retry_after == 2.5


# --- FaultyProvider ---------------------------------------------------------------------------


async def test_fault_rate_is_honoured_and_every_kind_appears() -> None:
    inner = Echo()
    provider = FaultyProvider(inner, 0.3, seed=7)
    n = 3000

    outcomes = Counter(await _outcomes(provider, n))

    faults = n - outcomes["ok"]
    assert 0.27 * n <= faults <= 0.33 * n, outcomes
    assert set(outcomes) == {"ok"} | RETRIABLE_REASONS
    for reason in RETRIABLE_REASONS:  # about a third each
        assert outcomes[reason] > faults / 5, outcomes
    assert provider.calls == n
    assert provider.injected == Counter({r: outcomes[r] for r in RETRIABLE_REASONS})
    assert provider.faults == faults
    assert provider.passed == inner.calls == outcomes["ok"]


async def test_seeded_faults_are_deterministic() -> None:
    first = await _outcomes(FaultyProvider(Echo(), 0.3, seed=42), 200)
    again = await _outcomes(FaultyProvider(Echo(), 0.3, seed=42), 200)
    other = await _outcomes(FaultyProvider(Echo(), 0.3, seed=43), 200)
    assert first == again
    assert first != other


async def test_injected_errors_are_retriable() -> None:
    provider = FaultyProvider(Echo(), 1.0, seed=1)
    for _ in range(30):
        with pytest.raises(ProviderError) as caught:
            await provider.generate(_request(), model="m")
        assert is_retriable(caught.value)
        assert caught.value.reason in RETRIABLE_REASONS
        assert "FaultyProvider" in str(caught.value)


async def test_rate_zero_never_fails() -> None:
    provider = FaultyProvider(Echo(), 0.0, seed=3)
    assert set(await _outcomes(provider, 500)) == {"ok"}
    assert provider.faults == 0


async def test_passed_calls_are_the_inner_providers_answers_labelled_offline() -> None:
    provider = FaultyProvider(OfflineProvider(), 0.5, seed=5)
    request = _request()
    expected = await OfflineProvider().generate(request, model="m")
    answers = []
    for _ in range(20):
        with suppress(ProviderError):
            answers.append(await provider.generate(request, model="m"))
    assert answers
    assert provider.name == "offline"
    for answer in answers:
        assert answer.output == expected.output
        assert answer.generation == Generation(provider="offline", model=OFFLINE_MODEL,
                                               offline=True)


def test_rate_outside_zero_to_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultyProvider(Echo(), 1.5)


# --- make_provider ----------------------------------------------------------------------------


def test_no_fault_rate_gives_the_plain_offline_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COUNTERPOINT_LLM_FAULT_RATE", raising=False)
    assert isinstance(make_provider(Settings()), OfflineProvider)


def test_fault_rate_wraps_the_provider_and_warns(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("COUNTERPOINT_LLM_FAULT_RATE", "0.25")
    monkeypatch.setenv("COUNTERPOINT_LLM_FAULT_SEED", "11")
    with caplog.at_level(logging.WARNING, logger="counterpoint.infra.providers"):
        provider = make_provider(Settings())
    assert isinstance(provider, FaultyProvider)
    assert isinstance(provider.inner, OfflineProvider)
    assert (provider.rate, provider.seed) == (0.25, 11)
    assert "FAULT INJECTION ON" in caplog.text


def test_bad_fault_seed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERPOINT_LLM_FAULT_RATE", "0.25")
    monkeypatch.setenv("COUNTERPOINT_LLM_FAULT_SEED", "abc")
    with pytest.raises(ValidationError, match="llm_fault_seed"):
        Settings()


# --- retries on the in-memory bus ---------------------------------------------------------------


def _faulty_bus(store: BusinessStore, rate: float, seed: int,
                retry: RetryPolicy) -> tuple[MemoryBus, FaultyProvider, list[Delivery]]:
    provider = FaultyProvider(OfflineProvider(), rate, seed=seed)
    ctx = demo_context(store, provider=provider)
    bus = MemoryBus()
    deliveries = []
    for name in AGENT_NAMES:
        delivery = bus.add(build(name, ctx))
        delivery.retry = retry  # MemoryBus.add uses the default policy
        deliveries.append(delivery)
    return bus, provider, deliveries


# Generous: at a 0.3 fault rate, 20 failures in a row has odds of about 3e-11.
GENEROUS = RetryPolicy(max_attempts=20, base_delay_s=0.0005, max_delay_s=0.002)


@pytest.mark.parametrize("seed", range(8))
async def test_dual_intent_ticket_completes_despite_llm_faults(store: BusinessStore,
                                                              seed: int) -> None:
    bus, provider, deliveries = _faulty_bus(store, 0.3, seed, GENEROUS)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")

    await bus.run_until_idle()

    assert bus.records(DEADLETTER_NAME) == []
    results = [SYNTHESIS_RESULTS.decode(r.value or b"")
               for r in bus.records(SYNTHESIS_RESULTS.name)]
    assert len(results) == 1, (provider.injected, results)
    (result,) = results
    assert result.status == "complete"
    assert result.generation.offline
    # Five answered calls: triage, billing, account, knowledge, synthesis; faults on top.
    assert provider.passed == 5
    retries = sum(d.stats.total("retried") for d in deliveries)
    assert retries == provider.faults
    assert result.usage.calls == 5


async def test_retries_happen_and_are_counted(store: BusinessStore) -> None:
    # A rate high enough that the five calls of one ticket certainly meet some faults.
    bus, provider, deliveries = _faulty_bus(store, 0.6, 2024, GENEROUS)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")

    await bus.run_until_idle()

    assert len(bus.records(SYNTHESIS_RESULTS.name)) == 1
    retries = sum(d.stats.total("retried") for d in deliveries)
    assert retries == provider.faults > 0


async def test_the_retry_bound_dead_letters_with_the_llm_reason(store: BusinessStore) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.0005, max_delay_s=0.002)
    bus, provider, deliveries = _faulty_bus(store, 1.0, 9, policy)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")

    await bus.run_until_idle()

    (record,) = bus.records(DEADLETTER_NAME)
    dead = DeadLetter.from_record(record)
    assert dead.reason in RETRIABLE_REASONS
    assert dead.agent == "triage"
    assert dead.attempts == 3
    assert record.value == TICKET_RAW
    assert provider.calls == 3
    assert sum(d.stats.total("retried") for d in deliveries) == 2
    assert bus.records(SYNTHESIS_RESULTS.name) == []

