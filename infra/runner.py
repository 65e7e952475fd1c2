"""One agent process: settings -> telemetry -> topics -> consume until SIGTERM."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal

from counterpoint.agents import catalog
from counterpoint.agents.context import AgentContext
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.outcomes import OutcomeStore
from counterpoint.agents.tools.business import BusinessStore, default_db_path
from counterpoint.bus.kafka import run_agent
from counterpoint.infra.admin import create_topics
from counterpoint.infra.broker import EmbeddedBroker
from counterpoint.infra.providers import make_provider
from counterpoint.infra.redaction import install_log_redaction, redact
from counterpoint.infra.settings import Settings
from counterpoint.infra.telemetry import default_traces_dir, setup_telemetry

log = logging.getLogger(__name__)


def dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (for a process that seems stuck)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=out)
    log.warning("SIGUSR1: %d asyncio tasks\n%s", len(asyncio.all_tasks()), out.getvalue())


async def run_agent_process(name: str, settings: Settings) -> None:
    install_log_redaction()  # idempotent; covers callers that did not go through cli.main
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    telemetry = setup_telemetry(name, traces_dir=default_traces_dir(settings.home))
    broker: EmbeddedBroker | None = None
    try:
        ctx = AgentContext(
            store=BusinessStore.open(default_db_path(settings.home)),
            provider=make_provider(settings),
            synthesis_deadline=settings.synthesis_deadline,
            models=settings.models(),
            approvals=settings.approval_policy(),
            keys=settings.keyring(),
            prices=PriceTable.configured(settings.prices),
            request_budget_usd=settings.request_budget_usd,
            reuse_window=settings.reuse_window,
            outcomes=OutcomeStore.lazy(settings.memory_path, scrub=redact),
            max_tool_turns=settings.max_tool_turns,
            webhook_targets=settings.webhooks,
            webhook_secret=settings.webhook_secret,
            webhook_timeout_s=settings.webhook_timeout_s,
            webhook_egress=settings.webhook_egress(),
            max_alerts=settings.max_alerts,
        )
        agent = catalog.build(name, ctx)  # fails here, at start-up, on a declaration mismatch
        if settings.embedded:
            # Reuses a running broker; starts one (owned by this process) only if none answers.
            broker = await EmbeddedBroker(settings.broker_host, settings.broker_port).start()
            if not broker.reused:
                log.warning("no broker was running: started an embedded one for this agent "
                            "alone; it stops with the agent (use `counterpoint up` instead)")
        await create_topics(settings.bootstrap_servers)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        delivery = await run_agent(agent, settings.kafka(), stop, settings.retry(),
                                   settings.limits())
        s = delivery.stats
        log.info("%s pid %d stopped: handled %d, emitted %d, dead-lettered %d, retries %d, "
                 "duplicates skipped %d", name, os.getpid(), s.handled, s.emitted,
                 s.deadlettered, s.retries, s.duplicates)
    finally:
        telemetry.shutdown()
        if broker is not None:
            broker.stop()
