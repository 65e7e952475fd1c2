"""What model calls cost: a price table per model, and estimates made before a call.

Prices are USD per million tokens: input, output, and the cache-read and cache-write parts of
the input. Defaults cover the two default Claude models and the offline provider (free);
`COUNTERPOINT_PRICES` overrides or adds models, as JSON or as the path of a JSON file:

    {"claude-haiku-4-5": {"input": 1, "output": 5, "cache_read": 0.1, "cache_write": 1.25}}

A model the table does not name is priced by the longest table name it starts with (so a
dated snapshot such as `claude-haiku-4-5-20251001` costs what `claude-haiku-4-5` costs), and
failing that at the table's highest price: a budget must never take an unknown model for free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from counterpoint.agents.json_setting import json_object_setting
from counterpoint.agents.llm.offline import OFFLINE_MODEL
from counterpoint.agents.llm.provider import LLMRequest
from counterpoint.agents.llm.tooluse import json_schema
from counterpoint.schemas.events import Usage

MILLION: Final = 1_000_000
# Prompt size is estimated at this many characters per token; real tokenisers average about
# four for English, so three errs on the expensive side.
CHARS_PER_TOKEN: Final = 3


class Price(BaseModel):
    """USD per million tokens for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)  # unset: a tenth of `input`
    cache_write: float | None = Field(default=None, ge=0)  # unset: 1.25 times `input`

    @property
    def read(self) -> float:
        return self.input * 0.1 if self.cache_read is None else self.cache_read

    @property
    def write(self) -> float:
        return self.input * 1.25 if self.cache_write is None else self.cache_write


DEFAULT_PRICES: Final[Mapping[str, Price]] = {
    "claude-haiku-4-5": Price(input=1.0, output=5.0, cache_read=0.10, cache_write=1.25),
    "claude-sonnet-4-6": Price(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    OFFLINE_MODEL: Price(input=0.0, output=0.0, cache_read=0.0, cache_write=0.0),
}


class PriceConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, Price]

    @classmethod
    def default(cls) -> PriceTable:
        return cls(dict(DEFAULT_PRICES))

    @classmethod
    def configured(cls, setting: str | None) -> PriceTable:
        """The defaults overlaid with `COUNTERPOINT_PRICES` (JSON, or a JSON file's path)."""
        if setting is None or not setting.strip():
            return cls.default()
        try:
            raw = json_object_setting("COUNTERPOINT_PRICES", setting, "of model -> prices")
        except ValueError as exc:
            raise PriceConfigError(str(exc)) from exc
        prices = dict(DEFAULT_PRICES)
        for model, value in raw.items():
            try:
                prices[str(model)] = Price.model_validate(value)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                                     for e in exc.errors(include_url=False))
                raise PriceConfigError(f"COUNTERPOINT_PRICES[{model!r}]: {problems}") from exc
        return cls(prices)

    def price(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        if prefixes:
            return self.prices[max(prefixes, key=len)]
        return Price(input=max(p.input for p in self.prices.values()),
                     output=max(p.output for p in self.prices.values()),
                     cache_read=max(p.read for p in self.prices.values()),
                     cache_write=max(p.write for p in self.prices.values()))

    def cost(self, usage: Usage, model: str) -> float:
        """USD for `usage` answered by `model`."""
        p = self.price(model)
        uncached = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
        return (uncached * p.input + usage.cache_read_tokens * p.read
                + usage.cache_write_tokens * p.write + usage.output_tokens * p.output) / MILLION

    def estimate(self, request: LLMRequest[Any], model: str) -> float:
        """The most one call of `request` to `model` should cost: its prompt, the output
        schema and the context at the estimated size, and `max_tokens` of output."""
        p = self.price(model)
        return (estimate_input_tokens(request) * p.input + request.max_tokens * p.output) / MILLION


def estimate_input_tokens(request: LLMRequest[Any]) -> int:
    context = json.dumps(to_jsonable_python(dict(request.context), fallback=str),
                         ensure_ascii=False, separators=(",", ":"))
    schema = json.dumps(json_schema(request.output), separators=(",", ":"))
    chars = len(request.system) + len(request.content) + len(context) + len(schema)
    return math.ceil(chars / CHARS_PER_TOKEN)
