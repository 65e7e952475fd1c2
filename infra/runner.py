"""One agent process: settings -> telemetry -> topics -> consume until SIGTERM."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
from contextlib import AsyncExitStack

from counterpoint.agents.budget import metered
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.tools.config import open_toolbox
from counterpoint.bus.kafka import run_agent
from counterpoint.infra.admin import create_topics
from counterpoint.infra.assembly import build_one, resolve, topics_of
from counterpoint.infra.broker import EmbeddedBroker
from counterpoint.infra.metrics import default_targets_dir, setup_metrics
from counterpoint.infra.project import Project
from counterpoint.infra.providers import make_provider
from counterpoint.infra.redaction import install_log_redaction
from counterpoint.infra.settings import Settings
from counterpoint.infra.telemetry import default_traces_dir, setup_telemetry
from counterpoint.infra.tools_setup import tools_config

log = logging.getLogger(__name__)


def dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (for a process that seems stuck)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=out)
    log.warning("SIGUSR1: %d asyncio tasks\n%s", len(asyncio.all_tasks()), out.getvalue())


async def run_agent_process(wanted: str, settings: Settings, project: Project) -> None:
    """Run the agent `wanted` names (a project agent or an import string) until SIGTERM."""
    install_log_redaction()  # idempotent; covers callers that did not go through cli.main
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    name, entry = resolve(project, wanted)
    # Every model call is priced and held to its step's budget.
    provider = metered(make_provider(settings), PriceTable.configured(settings.prices))
    keys = settings.keyring()
    # Fails here, before any tool server is started, on a bad import string, a declaration
    # mismatch or a file of the agent's that Counterpoint did not create (built without tools:
    # declarations only).
    declared = build_one(settings, project, name, entry, provider, keys)
    provider.agent = declared.name  # its metrics name the agent
    telemetry = setup_telemetry(declared.name, traces_dir=default_traces_dir(settings.home))
    metrics = setup_metrics(declared.name, port=settings.metrics_port,
                            host=settings.metrics_host,
                            targets_dir=default_targets_dir(settings.home),
                            instance_id=telemetry.instance_id)
    broker: EmbeddedBroker | None = None
    try:
        async with AsyncExitStack() as tools:
            project.importable()  # a module of Python tools may sit beside the project file
            # The agent's tool servers are connected and its allowlist checked before it
            # consumes anything: a missing server or tool fails here, naming it. Allowlists
            # belong to a project's agents; an import string it does not list has none.
            toolbox = await open_toolbox(tools_config(settings, project), [name] if name else [],
                                         tools, connect_timeout_s=settings.tool_connect_timeout_s)
            agent = build_one(settings, project, name, entry, provider, keys, toolbox).agent
            if settings.embedded:
                # Reuses a running broker; starts one (owned by this process) only if none
                # answers.
                broker = await EmbeddedBroker(settings.broker_host, settings.broker_port).start()
                if not broker.reused:
                    log.warning("no broker was running: started an embedded one for this "
                                "agent alone; it stops with the agent (use `counterpoint up` "
                                "instead)")
            await create_topics(settings.bootstrap_servers, topics_of([agent]))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            delivery = await run_agent(agent, settings.kafka(), stop, settings.retry(),
                                       settings.limits())
            s = delivery.stats
            log.info("%s pid %d stopped: handled %d, emitted %d, dead-lettered %d, retries "
                     "%d, duplicates skipped %d", agent.name, os.getpid(), s.total("handled"),
                     s.total("sent"), s.total("deadlettered"), s.total("retried"),
                     s.total("duplicates"))
    finally:
        metrics.shutdown()
        telemetry.shutdown()
        if broker is not None:
            broker.stop()
