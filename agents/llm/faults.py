"""TEST AID: a provider wrapper that fails a share of calls on purpose.

`FaultyProvider` exists to prove that retriable LLM failures (rate limits, overload, timeouts)
are retried and never lose a request. It is switched on only by
`COUNTERPOINT_LLM_FAULT_RATE` > 0 (see infra/providers.py, which logs a warning when it is) and
by tests; nothing in production should construct it.

It injects nothing into answers: a call either raises one of the retriable provider errors
before reaching the inner provider, or returns the inner provider's response untouched, so
offline answers stay labelled offline.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Final, TypeVar

from pydantic import BaseModel

from counterpoint.agents.llm.errors import Overloaded, ProviderError, ProviderTimeout, RateLimited
from counterpoint.agents.llm.provider import LLMProvider, LLMRequest, LLMResponse

T = TypeVar("T", bound=BaseModel)

FAULT_KINDS: Final[tuple[type[ProviderError], ...]] = (RateLimited, Overloaded, ProviderTimeout)

log = logging.getLogger(__name__)


class FaultyProvider:
    """Wraps `inner`; each call fails with probability `rate` with a random retriable error.

    Deterministic for a given `seed` and call order. Counts every call (`calls`), the calls
    passed through (`passed`) and the faults injected per reason (`injected`, keyed by the
    error's `reason`, e.g. "llm-rate-limited").
    """

    def __init__(self, inner: LLMProvider, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
        self.inner = inner
        self.rate = rate
        self.seed = seed
        self.name = inner.name  # answers are the inner provider's, labelled as it labels them
        self._rng = random.Random(seed)
        self.calls = 0
        self.passed = 0
        self.injected: Counter[str] = Counter()

    @property
    def faults(self) -> int:
        return self.injected.total()

    async def generate(self, request: LLMRequest[T], *, model: str) -> LLMResponse[T]:
        self.calls += 1
        # Draw both numbers on every call so the sequence depends on the seed and call count only.
        roll, pick = self._rng.random(), self._rng.randrange(len(FAULT_KINDS))
        if roll < self.rate:
            kind = FAULT_KINDS[pick]
            self.injected[kind.reason] += 1
            log.info("injected fault %s into %s call %d (fault rate %.2f)", kind.reason,
                     request.task, self.calls, self.rate)
            raise kind(f"injected by FaultyProvider (test aid, fault rate {self.rate}) "
                       f"into a {request.task} call")
        self.passed += 1
        return await self.inner.generate(request, model=model)
