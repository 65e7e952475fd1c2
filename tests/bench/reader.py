"""A background reader task with its consumer: the shared part of the bench's sinks."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer


class BenchError(RuntimeError):
    """A scenario could not finish (a process died, messages did not arrive in time)."""


class BackgroundReader:
    """Owns a reading task and its consumer; `check` surfaces the task's failure."""

    what = "the reader"

    def __init__(self) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            raise BenchError(f"{self.what} stopped: {exc!r}") from exc

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
