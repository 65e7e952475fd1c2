"""The offline provider: deterministic, labelled as offline, never passing for a model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from counterpoint.agents.llm.offline import (
    OFFLINE_MODEL,
    OFFLINE_NOTE,
    OfflineProvider,
)
from counterpoint.agents.llm.offline_rules import OFFLINE_NOTE_TEXT, assess_ticket
from counterpoint.agents.llm.outputs import Composition, TicketAssessment
from counterpoint.agents.llm.provider import LLMRequest
from counterpoint.schemas.events import Fact, Finding, Generation, Subject, Usage

DUAL_INTENT = ("My invoice is wrong and I can't log into my account. I was charged twice this "
               "month and now the login page says my account is locked.")


def _subject(text: str, title: str | None = None) -> Subject:
    return Subject(kind="ticket", source_id="T-1", title=title or text[:80], text=text,
                   customer_id="C-42")


def _triage_request(text: str) -> LLMRequest[TicketAssessment]:
    return LLMRequest(task="triage.ticket", system="You triage tickets.", content=text,
                      output=TicketAssessment, context={"subject": _subject(text)})


def _intents(text: str, title: str | None = None) -> list[str]:
    return list(assess_ticket({"subject": _subject(text, title)}).intents)


async def test_answers_are_labelled_offline() -> None:
    answer = await OfflineProvider().generate(_triage_request(DUAL_INTENT),
                                              model="claude-haiku-4-5")
    assert answer.generation == Generation(provider="offline", model=OFFLINE_MODEL,
                                           offline=True)
    assert isinstance(answer.output, TicketAssessment)
    assert OfflineProvider.name == "offline"


async def test_usage_is_estimated_and_counts_one_call() -> None:
    request = _triage_request(DUAL_INTENT)
    answer = await OfflineProvider().generate(request)
    assert answer.usage.calls == 1
    assert answer.usage.estimated is True
    assert answer.usage.input_tokens >= (len(request.system) + len(request.content)) // 4 - 2
    assert answer.usage.input_tokens > 0
    assert answer.usage.output_tokens > 0


async def test_longer_input_estimates_more_tokens() -> None:
    provider = OfflineProvider()
    short = await provider.generate(_triage_request("Refund please."))
    long = await provider.generate(_triage_request("Refund please. " * 50))
    assert long.usage.input_tokens > short.usage.input_tokens + 100


async def test_same_request_same_answer() -> None:
    provider = OfflineProvider()
    first = await provider.generate(_triage_request(DUAL_INTENT))
    second = await OfflineProvider().generate(_triage_request(DUAL_INTENT))
    assert first.output == second.output
    assert first.usage == second.usage
    assert first.generation == second.generation


class Verse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    lines: list[str] = Field(min_length=2)
    mood: Literal["calm", "stormy"]
    syllables: Annotated[int, Field(ge=5, le=7)]
    draft: bool = True


async def test_a_task_with_no_rule_gets_a_labelled_schema_valid_placeholder() -> None:
    request = LLMRequest(task="poetry", system="s", content="c", output=Verse)
    answer = await OfflineProvider().generate(request)
    assert isinstance(answer.output, Verse)
    assert answer.output.title.startswith("[OFFLINE PLACEHOLDER:") and "'poetry'" in \
        answer.output.title
    assert len(answer.output.lines) >= 2 and all("OFFLINE PLACEHOLDER" in x
                                                 for x in answer.output.lines)
    assert 5 <= answer.output.syllables <= 7 and answer.output.draft is True
    assert answer.generation.offline and answer.usage.estimated
    again = await OfflineProvider().generate(request)
    assert again.output == answer.output  # deterministic


async def test_written_text_carries_the_offline_note() -> None:
    finding = Finding(
        task_id="t1", request_id="r1", skill="billing", focus="charges", agent="billing",
        summary="Invoice INV-2291 was charged twice.",
        facts=[Fact(text="Invoice INV-2291 was charged twice.", source="billing.invoices")],
        recommended_actions=["refund the duplicate payment"],
        generation=Generation(provider="offline", model=OFFLINE_MODEL, offline=True),
        usage=Usage(calls=1),
    )
    context: dict[str, Any] = {"subject": _subject(DUAL_INTENT), "findings": [finding],
                               "missing": [], "customer": None, "priority": "normal"}
    answer = await OfflineProvider().generate(LLMRequest(
        task="synthesis.reply", system="s", content="c", output=Composition, context=context))
    assert answer.output.text.endswith(OFFLINE_NOTE)
    assert "INV-2291" in answer.output.text
    assert [a.action for a in answer.output.proposed_actions] == ["refund"]
    assert OFFLINE_NOTE == OFFLINE_NOTE_TEXT


def test_dual_intent_ticket_has_billing_and_account() -> None:
    assessment = assess_ticket({"subject": _subject(DUAL_INTENT,
                                                    "Invoice wrong and can't log in")})
    assert assessment.intents == ["billing", "account"]
    assert assessment.category == "billing+account"
    assert assessment.priority == "high"  # locked out


def test_account_word_alone_is_not_an_account_intent() -> None:
    assert _intents("my account was charged twice") == ["billing"]


@pytest.mark.parametrize("text, intents", [
    ("I forgot my password and cannot log in", ["account"]),
    ("Please refund my last payment", ["billing"]),
    ("Hello, a question about your company", ["general"]),
])
def test_intent_rules(text: str, intents: list[str]) -> None:
    assert _intents(text) == intents


def test_urgent_words_raise_priority() -> None:
    assessment = assess_ticket({"subject": _subject("Urgent: refund my payment")})
    assert assessment.priority == "urgent"


@pytest.mark.parametrize("text", [
    "Please downgrade my subscription to the pro plan",
    "I cannot download my invoice as a PDF",
])
def test_words_containing_down_are_not_urgent(text: str) -> None:
    # "down" (as in "the site is down") must not match inside "downgrade" or "download".
    assert assess_ticket({"subject": _subject(text)}).priority == "normal"


def test_an_amount_is_not_a_technical_error() -> None:
    # "500" (HTTP 500) must not match inside an amount such as 1500.
    assert _intents("Invoice INV-77 for 1500 USD charged the wrong card") == ["billing"]
