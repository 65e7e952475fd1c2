"""The offline provider: deterministic rules instead of a model, and it says so.

It is the default when no `ANTHROPIC_API_KEY` is set, so the demo and the tests run anywhere.
Every answer carries `Generation(provider="offline", offline=True)` and every text it writes
ends with `OFFLINE_NOTE`; nothing it writes may pass for a model's answer. Token counts are
estimated (about four characters per token) and marked `estimated`.

Rules, per task:
- triage.ticket: keyword families pick intents (billing, account, technical); urgency words and
  lockouts raise priority.
- triage.alert: the alert's severity label; critical alerts gather logs, metrics and deploys.
- investigate: given the agent's tools, it calls the ones its skill needs by rule
  (offline_tools.py) through the same tool layer a model uses; the facts those calls return,
  most specific first, become the summary; each skill maps fact patterns to recommended
  actions.
- synthesis.reply / synthesis.runbook: templates over the findings, with tone set by the
  customer's tier and tenure.
- any other task (a user's agent): a schema-valid placeholder of the requested output, every
  text in it saying it is an offline placeholder (agents/llm/placeholder.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from counterpoint.agents.llm import offline_rules, offline_tools
from counterpoint.agents.llm.placeholder import placeholder
from counterpoint.agents.llm.provider import LLMRequest, LLMResponse
from counterpoint.schemas.events import Generation, Usage

T = TypeVar("T", bound=BaseModel)

OFFLINE_MODEL: Final = "offline-rules-v1"
OFFLINE_NOTE: Final = (
    "[Drafted by Counterpoint's offline provider: deterministic rules, no language model.]"
)

Rule = Callable[[Mapping[str, Any]], BaseModel]

RULES: Final[dict[str, Rule]] = {
    "triage.ticket": offline_rules.assess_ticket,
    "triage.alert": offline_rules.assess_alert,
    "investigate": offline_rules.summarize_investigation,
    "synthesis.reply": offline_rules.compose_reply,
    "synthesis.runbook": offline_rules.compose_runbook,
}


log = logging.getLogger(__name__)


class OfflineProvider:
    name = "offline"

    async def generate(self, request: LLMRequest[T], *,
                       model: str = OFFLINE_MODEL) -> LLMResponse[T]:
        rule = RULES.get(request.task)
        context, results = request.context, ""
        if request.tools is not None:
            # Tools by rule, through the same layer (allowlist, validation, spans) as a model's.
            allowed = {spec.name for spec in request.tools.specs()}
            calls = (offline_tools.plan(request.task, context, allowed)
                     if request.tools.max_turns >= 1 else [])
            outcomes = [await request.tools.call(name, args) for name, args in calls]
            context = {**context, "facts": offline_tools.facts_from(outcomes)
                       or offline_tools.unchecked(context)}
            results = "".join(o.content for o in outcomes)
        if rule is None:
            if request.task not in _warned:
                _warned.add(request.task)
                log.warning("offline provider: no rule for task %r, answering with a labelled "
                            "placeholder of %s", request.task, request.output.__name__)
            output = placeholder(request.output, request.task)
        else:
            produced = rule(context)
            # Round-trip through the requested model: the same validation a model's answer gets.
            output = request.output.model_validate(produced.model_dump())
        out_text = output.model_dump_json()
        usage = Usage(
            input_tokens=_estimate_tokens(request.system) + _estimate_tokens(request.content)
            + (_estimate_tokens(results) if results else 0),
            output_tokens=_estimate_tokens(out_text),
            calls=1,
            estimated=True,
        )
        return LLMResponse(output, usage, Generation(provider="offline", model=OFFLINE_MODEL,
                                                     offline=True))


_warned: set[str] = set()


def _estimate_tokens(text: str) -> int:
    # The length with each run of whitespace counted as one character (what re.sub(r"\s+", " ")
    # gives), without building that string: str.split is several times faster than the regex
    # over a request's prompt, and this runs on every call.
    words = text.split()
    length = sum(map(len, words)) + max(0, len(words) - 1)
    if text[:1].isspace():
        length += 1
    if words and text[-1:].isspace():
        length += 1
    return max(1, length // 4)
