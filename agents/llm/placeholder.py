"""The offline provider's answer to a task it has no rule for: a schema-valid placeholder.

A user's agent asks for its own output model under a task name of its own; with no
ANTHROPIC_API_KEY there is no model to answer and no rule that knows the task. Rather than
fail, the offline provider fills the output model: every text field says it is a placeholder
for that task, every other field gets a valid value (defaults first, then the smallest value
its constraints allow), deterministically. The pipeline runs end to end, and says it is
offline. polyfactory builds the instance, so constraints, unions, literals and nested models
are honoured without a hand-written walker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


def placeholder_text(task: str) -> str:
    return (f"[OFFLINE PLACEHOLDER: Counterpoint's offline provider has no rule for task "
            f"{task!r}; this is not an answer. Set ANTHROPIC_API_KEY for a model's answer.]")


def placeholder(output: type[T], task: str) -> T:
    """A valid `output` whose text fields say it is a placeholder for `task`."""
    # Imported here: it brings in Faker, which no process needs until a task has no rule.
    from polyfactory.factories.pydantic_factory import ModelFactory

    text = placeholder_text(task)

    class Factory(ModelFactory[Any]):
        __model__ = output
        __random_seed__ = 0  # the same placeholder every time
        __use_defaults__ = True
        __allow_none_optionals__ = False
        __check_model__ = False

        @classmethod
        def get_provider_map(cls) -> dict[Any, Callable[[], Any]]:
            return {**super().get_provider_map(), str: lambda: text}

    built = Factory.build()
    return output.model_validate(built.model_dump())
