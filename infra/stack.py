"""A running Counterpoint project: the broker (embedded when none is configured), the topics
its agents declare, the demo business server when an agent to start uses the built-in tools,
and every agent as its own OS process. Used by `counterpoint up` and `counterpoint demo`; the
project's agents are built and checked before anything starts."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.private_files import private_dir
from counterpoint.agents.signing import Keyring
from counterpoint.infra import demo_business
from counterpoint.infra.admin import create_topics
from counterpoint.infra.assembly import BuiltAgent, build_project, topics_of
from counterpoint.infra.broker import EmbeddedBroker
from counterpoint.infra.processes import Supervisor
from counterpoint.infra.project import Project, builtin_project
from counterpoint.infra.settings import Settings
from counterpoint.infra.tools_setup import demo_business_address, tools_config

log = logging.getLogger(__name__)


def default_scale(project: Project) -> dict[str, int]:
    return {name: entry.replicas for name, entry in project.agents.items()}


class Stack:
    def __init__(self, settings: Settings, scale: Mapping[str, int] | None = None,
                 project: Project | None = None) -> None:
        self.settings = settings
        self.project = project or builtin_project()
        # Built here, so a bad project stops before the broker or any process starts; the
        # provider only has to exist (each process makes its own).
        self.agents: list[BuiltAgent] = build_project(settings, self.project, OfflineProvider(),
                                                      Keyring.ephemeral())
        self.scale = dict(scale or default_scale(self.project))
        # An allowlist naming a source nobody configured stops here too (ToolConfigError).
        self.tools = tools_config(settings, self.project)
        self.tools.sources_for(list(self.scale))
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
        private_dir(self.logs_dir)
        self.settings.keyring()  # makes the development approval keys once, or fails here
        self.supervisor = Supervisor(self.logs_dir, env=self.child_env(),
                                     config=self.project.file)
        self.supervisor.prepare()  # the agents' imports, while the broker starts
        if self.settings.embedded:
            self.broker = EmbeddedBroker(self.settings.broker_host, self.settings.broker_port,
                                         log_file=self.logs_dir / "broker.log")
            try:
                await self.broker.start()
            except BaseException:
                self.supervisor.stop()  # only the fork server runs yet
                raise
        try:
            self.created_topics = await create_topics(
                self.bootstrap_servers, topics_of(b.agent for b in self.agents))
            address = demo_business_address(self.settings, self.tools, self.scale)
            if address is not None:
                # Blocking, like the agents' spawn: it takes well under a second.
                demo_business.start(self.supervisor, *address, self.home)
            self.supervisor.start(self.scale)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        # Blocking on purpose: this also runs in a cancelled task, where awaiting is unsafe.
        # Agents first (they commit to the broker), then the broker; both bounded.
        started = time.monotonic()
        parts, killed = [], False
        if self.supervisor is not None:
            report = self.supervisor.stop()
            parts.append(report.summary())
            killed = bool(report.killed)
        if self.broker is not None:
            outcome = self.broker.stop()
            if outcome is not None:
                parts.append(f"embedded broker {outcome}")
                killed = killed or outcome == "killed"
        if parts:
            log.log(logging.WARNING if killed else logging.INFO, "stopped in %.1f s: %s",
                    time.monotonic() - started, "; ".join(parts))

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
