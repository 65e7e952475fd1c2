"""The `mcp` SDK's client without its server half, imported once per tool agent at start.

`import mcp` loads `mcp.client.client`, which imports the SDK's servers (`mcp.server`: the
low-level and the high-level server, their HTTP apps, uvicorn, starlette, auth routes) only to
recognise a `Server` or `MCPServer` instance handed to `Client` for an in-process connection.
A tool agent never does that, and the server half is ~0.1-0.15 s of CPU at every tool agent's
start. So, while `mcp` is first imported, `mcp.server` is a stand-in package: its submodules
load from the real folder (`mcp/__init__.py` needs a few light ones), and the three names the
client imports from it are stand-ins that defer to the real objects once those exist:

- `Server` and `MCPServer`: classes whose isinstance check asks the real class, if its module
  has been imported since (an instance of it cannot exist otherwise);
- `modern_on_request`: imports the real one at its first call.

The stand-in modules are dropped from `sys.modules` right after, with the submodules loaded
under them, so a later `import mcp.server` (a test's in-process server) loads the real package
whole. If anything in this fails (another SDK layout), every `mcp` module loaded so far is
dropped and `mcp` is imported as usual.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from typing import Any

log = logging.getLogger(__name__)

# Where the real objects live: (module, name).
_REAL = {"Server": ("mcp.server.lowlevel.server", "Server"),
         "MCPServer": ("mcp.server.mcpserver.server", "MCPServer")}


class _Deferred(type):
    """A stand-in class: isinstance asks the real class, once its module is loaded."""

    def __instancecheck__(cls, obj: object) -> bool:
        module_name, name = _REAL[cls.__name__]
        module = sys.modules.get(module_name)
        real = getattr(module, name, None) if module is not None else None
        return isinstance(real, type) and isinstance(obj, real)


def _modern_on_request(*args: Any, **kwargs: Any) -> Any:
    from mcp.server.runner import modern_on_request

    return modern_on_request(*args, **kwargs)


def _stand_ins() -> dict[str, types.ModuleType]:
    spec = importlib.util.find_spec("mcp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("no mcp package")
    server = types.ModuleType("mcp.server")
    server.__path__ = [f"{p}/server" for p in spec.submodule_search_locations]
    server.__package__ = "mcp.server"
    deferred = {name: _Deferred(name, (), {}) for name in _REAL}
    server.Server = deferred["Server"]  # type: ignore[attr-defined]
    server.MCPServer = deferred["MCPServer"]  # type: ignore[attr-defined]
    mcpserver = types.ModuleType("mcp.server.mcpserver")
    mcpserver.MCPServer = deferred["MCPServer"]  # type: ignore[attr-defined]
    runner = types.ModuleType("mcp.server.runner")
    runner.modern_on_request = _modern_on_request  # type: ignore[attr-defined]
    return {"mcp.server": server, "mcp.server.mcpserver": mcpserver, "mcp.server.runner": runner}


def import_client() -> None:
    """Import `mcp` (once) without `mcp.server`'s own package."""
    if "mcp" in sys.modules:
        return
    sys.modules.update(_stand_ins())
    try:
        import mcp
        import mcp.client.streamable_http
    except Exception:
        failed = True
        log.debug("the mcp client did not import without its server half; importing it whole",
                  exc_info=True)
    else:
        failed = False
    finally:
        # The stand-ins, and the real submodules loaded under them: a later import of
        # mcp.server loads the real package (and those again) in full.
        for name in [n for n in sys.modules if n == "mcp.server" or n.startswith("mcp.server.")]:
            del sys.modules[name]
    if failed:
        for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
            del sys.modules[name]
        import mcp  # noqa: F401
