"""A running Counterpoint: the broker (embedded when none is configured), its topics, and
every agent as its own OS process. Used by `counterpoint up` and `counterpoint demo`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from types import TracebackType

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.admin import create_topics
from counterpoint.infra.broker import EmbeddedBroker
from counterpoint.infra.processes import Supervisor
from counterpoint.infra.settings import Settings


def default_scale() -> dict[str, int]:
    return dict.fromkeys(AGENT_NAMES, 1)


class Stack:
    def __init__(self, settings: Settings, scale: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.scale = dict(scale or default_scale())
        self.home = settings.home.resolve()
        self.logs_dir = self.home / "logs"
        self.broker: EmbeddedBroker | None = None
        self.supervisor: Supervisor | None = None
        self.created_topics: list[str] = []

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.bootstrap_servers

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Children must use this broker, not start their own (they ask the broker how to
        # fetch from it, so they need no more than its address).
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap_servers
        env["COUNTERPOINT_HOME"] = str(self.home)
        return env

    async def __aenter__(self) -> Stack:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded:
            self.broker = EmbeddedBroker(self.settings.broker_host, self.settings.broker_port,
                                         log_file=self.logs_dir / "broker.log")
            await self.broker.start()
        try:
            self.created_topics = await create_topics(self.bootstrap_servers)
            self.supervisor = Supervisor(self.logs_dir, env=self.child_env())
            self.supervisor.start(self.scale)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        # Blocking on purpose: this also runs in a cancelled task, where awaiting is unsafe.
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.broker is not None:
            self.broker.stop()

    def joined(self) -> dict[str, bool]:
        assert self.supervisor is not None
        return {p.label: p.joined for p in self.supervisor.processes}

    async def wait_joined(self, timeout_s: float = 60.0,
                          on_tick: Callable[[], object] | None = None,
                          stop: asyncio.Event | None = None) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if stop is not None and stop.is_set():
                return False
            if on_tick is not None:
                on_tick()
            if all(self.joined().values()):
                return True
            await asyncio.sleep(0.25)
        return False
