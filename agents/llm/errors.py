"""What an LLM provider raises when it cannot answer.

Every provider (offline, the anthropic one, the fault-injecting test aid) raises these, so the
bus decides retry-or-dead-letter from `retriable` alone and the dead-letter headers carry a
`reason` that names the provider's failure:

    RateLimited      retriable  llm-rate-limited    (may say how long to wait: retry_after)
    Overloaded       retriable  llm-overloaded
    ProviderTimeout  retriable  llm-timeout
    InvalidOutput    final      llm-invalid-output  (the answer did not fit the requested model;
                                                     asking again the same way is not a fix)
"""

from __future__ import annotations

from counterpoint.bus.errors import CounterpointError


class ProviderError(CounterpointError):
    """A provider failed to produce an answer."""

    reason = "llm-error"


class RateLimited(ProviderError):
    """The provider refused the call for now (HTTP 429)."""

    retriable = True
    reason = "llm-rate-limited"

    def __init__(self, message: str = "LLM provider rate limit reached",
                 *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds the provider asked us to wait, when it said (the Retry-After header).
        self.retry_after = retry_after


class Overloaded(ProviderError):
    """The provider is over capacity (HTTP 529 / 503)."""

    retriable = True
    reason = "llm-overloaded"


class ProviderTimeout(ProviderError):
    """No answer within the call's time limit."""

    retriable = True
    reason = "llm-timeout"


class InvalidOutput(ProviderError):
    """An answer that does not validate against the requested output model."""

    retriable = False
    reason = "llm-invalid-output"
