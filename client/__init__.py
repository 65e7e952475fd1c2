"""The Python SDK a business system embeds: publish tickets and alerts, wait for results."""

from counterpoint.client.sdk import (
    Counterpoint,
    Event,
    InputError,
    Receipt,
    RequestTimeout,
    ResultFilter,
)

__all__ = ["Counterpoint", "Event", "InputError", "Receipt", "RequestTimeout", "ResultFilter"]
