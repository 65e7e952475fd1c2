"""A bounded loop-back: a gate that sends work back for another round, at most N times.

    QA = LoopBack(rewrites=1)   # a draft may go back once

    @agent.handles(DRAFTS)
    async def review(event: Incoming[Draft]) -> list[Emit]:
        verdict = ...
        return QA.route(event.data.round, verdict.passed,
                        accept=lambda: [Emit(SENT, ..., key=event.request_id)],
                        again=lambda next_round: [Emit(REWRITES, Rewrite(..., round=next_round),
                                                       key=event.request_id)],
                        give_up=lambda: [Emit(HELD, ..., key=event.request_id)])

The round travels in the events (round 1 is the first attempt), so the bound holds across
processes and restarts: the gate keeps no state. Redelivered work gives the same events (ids
derive from the input), so a crash never costs an extra round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from counterpoint.bus.agent import Emit


@dataclass(frozen=True)
class LoopBack:
    rewrites: int  # how many times work may go back after its first round

    def __post_init__(self) -> None:
        if self.rewrites < 0:
            raise ValueError("rewrites must be 0 or more")

    def may_go_back(self, round_: int) -> bool:
        """Whether work in round `round_` (1 = first) may go back for another."""
        return round_ <= self.rewrites

    def route(self, round_: int, passed: bool, *, accept: Callable[[], Sequence[Emit]],
              again: Callable[[int], Sequence[Emit]],
              give_up: Callable[[], Sequence[Emit]]) -> list[Emit]:
        """Passed: `accept()`. Failed with rounds left: `again(next_round)`. Otherwise
        `give_up()`, so every piece of work ends in accept or give_up."""
        if passed:
            return list(accept())
        if self.may_go_back(round_):
            return list(again(round_ + 1))
        return list(give_up())
