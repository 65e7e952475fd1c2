"""`counterpoint-demo-business`: the demo business's tools over MCP, streamable HTTP or stdio.

    counterpoint-demo-business --db .counterpoint/demo-business.db --port 7300   # HTTP /mcp
    counterpoint-demo-business --db /tmp/demo.db --stdio

The database is created (seeded) on first start; a file at --db that this server did not
create is left alone and the server exits with a message saying so (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from counterpoint.agents.tools.define import tools_in
from counterpoint.agents.tools.serve import mcp_server, serve_http, serve_stdio
from counterpoint_demo import actions, tools
from counterpoint_demo.store import BusinessStore, ForeignFile

DEFAULT_PORT = 7300


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="counterpoint-demo-business",
                                description="The demo business's systems as an MCP server.")
    p.add_argument("--db", type=Path, default=Path(".counterpoint/demo-business.db"),
                   help="the SQLite file (created and seeded if absent)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        store = BusinessStore.open(args.db)
    except ForeignFile as exc:
        print(f"counterpoint-demo-business: {exc}", file=sys.stderr)
        return 2
    server = mcp_server("demo-business", [*tools_in(tools), *tools_in(actions)],
                        {"store": store})
    try:
        if args.stdio:
            asyncio.run(serve_stdio(server))
        else:
            print(f"demo business: http://{args.host}:{args.port}/mcp (database {args.db})",
                  file=sys.stderr, flush=True)
            serve_http(server, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
