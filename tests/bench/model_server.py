"""The Messages-API stand-in as a process of its own, and a bare SDK client for a baseline.

    python -m tests.bench.model_server serve --delay 1.0 --ready-file F
    python -m tests.bench.model_server client --base-url URL --calls N --concurrency C

`serve` runs tests/support/messages_api.py's stand-in, answering every call after `--delay`
seconds, and writes its base URL to the ready file. It is its own process so that the bench can
leave its CPU out: in production the model is remote. `client` makes N calls through the real
`anthropic` SDK, C at a time, each a forced tool call like an agent's, and prints the CPU
(user+system) it spent per call: what the SDK alone costs, the floor of an agent's model call.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.messages_api import MessagesAPI, Reply, slow

TOOL: dict[str, Any] = {
    "name": "record_triage", "description": "the answer",
    "input_schema": {"type": "object", "title": "TriageOutput",
                     "properties": {"summary": {"type": "string"}}, "required": ["summary"]},
}


def serve(delay_s: float, ready_file: Path) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def reply(body: Any) -> Reply:
        return slow(delay_s)

    with MessagesAPI(replier=reply) as api:
        ready_file.write_text(api.base_url)
        stop.wait()
        print(f"answered {len(api.recorded())} calls", flush=True)
    return 0


async def client(base_url: str, calls: int, concurrency: int) -> int:
    import anthropic

    sdk = anthropic.AsyncAnthropic(api_key="bench", base_url=base_url, max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await sdk.messages.create(  # type: ignore[call-overload]
                model="claude-haiku-4-5", max_tokens=256, tools=[TOOL],
                tool_choice={"type": "tool", "name": "record_triage"},
                messages=[{"role": "user", "content": f"ticket {n}: my invoice is wrong"}])

    await one(-1)  # connection and imports out of the measurement
    started = time.process_time()
    await asyncio.gather(*(one(n) for n in range(calls)))
    print(f"cpu_ms_per_call {(time.process_time() - started) / calls * 1000:.3f}", flush=True)
    await sdk.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.model_server")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--delay", type=float, default=1.0)
    s.add_argument("--ready-file", type=Path, required=True)
    c = sub.add_parser("client")
    c.add_argument("--base-url", required=True)
    c.add_argument("--calls", type=int, default=200)
    c.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)
    if args.mode == "serve":
        return serve(args.delay, args.ready_file)
    return asyncio.run(client(args.base_url, args.calls, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
