"""Settings that hold a JSON object, given inline or as the path of a file that holds it
(COUNTERPOINT_ACTION_RISK, COUNTERPOINT_PRICES)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def json_object_setting(name: str, text: str, what: str = "") -> dict[str, Any]:
    """The object `text` holds or names. Raises ValueError naming the setting and the problem;
    `what` says what the object maps (e.g. "of model -> prices")."""
    text = text.strip()
    if not text.startswith(("{", "[")):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{name}: not JSON and not a readable file: {path}: "
                             f"{exc.strerror}") from exc
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{name}: invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected an object {what}, got {type(value).__name__}"
                         .replace("  ", " "))
    return value
