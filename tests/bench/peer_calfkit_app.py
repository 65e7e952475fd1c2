"""The peer: calfkit 0.13's 3-agent handoff pipeline with a stub model.

Runs in its own virtualenv (tests/bench/peer-requirements.txt), never in Counterpoint's: it
imports calfkit only, and the bench (tests/bench/peer.py) starts it as separate OS processes.

    PY tests/bench/peer_calfkit_app.py worker NAME --bootstrap HOST:PORT
    PY tests/bench/peer_calfkit_app.py drive --bootstrap HOST:PORT --phase 1:30 --phase 64:400

Three agents, each a calfkit `Worker` process of its own: triage hands off to specialist,
specialist hands off to writer, writer answers. Their model is pydantic-ai's FunctionModel
(calfkit vendors pydantic-ai): one model turn per agent, no network, no tokens, so what is
measured is calfkit's own path (its envelopes, agent loop and handoff transport) on the broker.
`drive` keeps CONCURRENCY requests in flight through calfkit's Client (`execute`, as an
application calls it) and prints one JSON line per phase with every request's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from calfkit import Client, ProvisioningConfig
from calfkit._vendor.pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from calfkit._vendor.pydantic_ai.models.function import AgentInfo, FunctionModel
from calfkit.nodes import Agent
from calfkit.peers import Handoff
from calfkit.worker import Worker

CHAIN = ("triage", "specialist", "writer")
PARTITIONS = 4  # as Counterpoint's topics and the relays'
ANSWER = "writer: answered"


def _next(name: str) -> str | None:
    i = CHAIN.index(name)
    return CHAIN[i + 1] if i + 1 < len(CHAIN) else None


def stub_model(name: str) -> FunctionModel:
    """One turn: hand off to the next agent of the chain, or (the last) answer."""
    target = _next(name)

    def respond(messages: list[Any], info: AgentInfo) -> ModelResponse:
        if target is None:
            return ModelResponse(parts=[TextPart(content=ANSWER)])
        return ModelResponse(parts=[ToolCallPart(
            tool_name="handoff_to_agent",
            args={"name": target, "message": f"{name} hands this request to {target}"})])

    return FunctionModel(respond, model_name=f"stub-{name}")


def agent(name: str) -> Agent[Any]:
    target = _next(name)
    return Agent(name, description=f"the {name} step of the bench's handoff chain",
                 system_prompt=f"You are {name}.", model_client=stub_model(name),  # type: ignore[arg-type]
                 peers=[Handoff(target)] if target else None)


def _client(bootstrap: str) -> Client:
    # FastStream logs every message it handles at `log_level`; DEBUG keeps that out of a
    # WARNING-level log, the quiet a production deployment would give it.
    return Client.connect(bootstrap, provisioning=ProvisioningConfig(
        enabled=True, num_partitions=PARTITIONS), log_level=logging.DEBUG)


async def worker(name: str, bootstrap: str) -> None:
    await Worker(_client(bootstrap), nodes=[agent(name)]).run()


async def drive(bootstrap: str, phases: list[tuple[int, int]], warmup_timeout_s: float) -> None:
    async with _client(bootstrap) as client:
        gateway = client.agent(CHAIN[0])
        # The first request also waits for every worker to be reachable (handoff targets are
        # found through calfkit's control plane once their workers advertise themselves).
        started = time.monotonic()
        while True:
            try:
                result = await gateway.execute("warm-up", timeout=30)
                if result.output == ANSWER:
                    break
            except Exception as exc:  # any failure here: try again until the deadline
                print(f"warm-up: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if time.monotonic() - started > warmup_timeout_s:
                raise SystemExit(f"calfkit pipeline gave no answer within {warmup_timeout_s:.0f}s")
        print(json.dumps({"ready": round(time.monotonic() - started, 3)}), flush=True)
        for concurrency, count in phases:
            print(json.dumps(await _closed_loop(gateway, concurrency, count)), flush=True)


async def _closed_loop(gateway: Any, concurrency: int, count: int) -> dict[str, Any]:
    """`concurrency` clients, each sending a request and waiting for its answer in turn."""
    latencies: list[float] = []
    wrong = 0
    todo = iter(range(count))

    async def client() -> None:
        nonlocal wrong
        for i in todo:
            sent = time.perf_counter()
            result = await gateway.execute(f"request {i}", timeout=300)
            latencies.append(time.perf_counter() - sent)
            wrong += result.output != ANSWER

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    return {"concurrency": concurrency, "requests": count,
            "seconds": time.perf_counter() - began, "wrong": wrong, "latencies_s": latencies}


def _phase(text: str) -> tuple[int, int]:
    concurrency, _, count = text.partition(":")
    return int(concurrency), int(count)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("worker", "drive"))
    p.add_argument("name", nargs="?", choices=CHAIN)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--phase", type=_phase, action="append", default=[],
                   help="CONCURRENCY:REQUESTS (repeatable)")
    p.add_argument("--warmup-timeout", type=float, default=120.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.mode == "worker":
        if args.name is None:
            p.error("worker needs an agent name")
        asyncio.run(worker(args.name, args.bootstrap))
    else:
        asyncio.run(drive(args.bootstrap, args.phase, args.warmup_timeout))


if __name__ == "__main__":
    main()
