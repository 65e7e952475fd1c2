"""Text safe to print to a terminal: `escape`, `json_line`, `SafeFormatter` (see
infra/terminal.py). Apart from the rich console there, so a process that only logs (every
agent) does not import rich.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import orjson

# C0 but tab and newline, DEL, C1, and the BiDi marks, embeddings, overrides and isolates.
_UNSAFE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In JSON text, C0 is escaped already; the rest is not.
_UNSAFE_IN_JSON: Final = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def escape(text: str) -> str:
    """`text` with every character that could control a terminal made visible."""
    return _UNSAFE.sub(_visible, text) if _UNSAFE.search(text) else text


def json_line(value: Any) -> str:
    """`value` as one line of JSON, safe to print to a terminal, with its newline."""
    text = orjson.dumps(value).decode()
    return _UNSAFE_IN_JSON.sub(_json_escape, text) + "\n"


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines carry no control characters from the data they quote."""

    def format(self, record: logging.LogRecord) -> str:
        return escape(super().format(record))
