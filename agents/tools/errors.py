"""What can go wrong with tools, classified the way the bus reads errors (bus/errors.py)."""

from __future__ import annotations

from counterpoint.bus.errors import CounterpointError, TransientError


class ToolConfigError(CounterpointError):
    """Tool configuration that cannot work: an unknown source or tool on an allowlist, a
    server that does not start, a secret whose environment variable is unset. Raised at
    start-up; the message names the source, the tool and the problem."""

    reason = "tool-config"


class ToolUnavailable(TransientError):
    """A tool's server could not be reached or died during the call; it is reconnected (a
    stdio server restarted) on the next call, so the bus retries the event."""

    reason = "tool-unavailable"


class ToolTimeout(TransientError):
    """A tool call took longer than its timeout; retried by the bus within its bounds."""

    reason = "tool-timeout"


class InvalidInput(ValueError):
    """Arguments that do not fit a tool's schema; the message says where, without echoing
    the input."""
