"""Suite-wide: every test runs offline unless it points the SDK at a local server itself.

A developer's own ANTHROPIC_API_KEY must never make the suite call Claude: removed here, before
any fixture builds settings or copies the environment into agent processes.
"""

import os
from typing import Any

import pytest

for _name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
    os.environ.pop(_name, None)


# Under pytest-xdist (`make test`: `-n auto --dist loadfile --no-loadscope-reorder`) each test
# module is one unit of work, so that its broker and agent stack (module fixtures) start once,
# on one worker. Modules named here share a unit and so run one after the other: the two chaos
# runs, each twenty-odd processes under SIGKILL, never compete with each other for the cores.
# (xdist's own `xdist_group` mark does nothing on pytest >= 9.2: it rewrites a private nodeid
# attribute that pytest no longer reads.)
RUN_TOGETHER = {
    "tests/integration/test_chaos.py": "chaos runs",
    "tests/integration/test_relay_chaos.py": "chaos runs",
}


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return RUN_TOGETHER.get(path, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the modules of RUN_TOGETHER in one unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: the units longest first, by their declared pytest-timeout (the only
    estimate a module carries), so that the last ones to finish are short; with
    --no-loadscope-reorder the workers take them in this order. A serial run keeps file order."""
    if not hasattr(config, "workerinput"):
        return
    budget: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        unit = _unit(item.nodeid)
        timeout = item.get_closest_marker("timeout")
        budget[unit] = max(budget.get(unit, 0.0), float(timeout.args[0]) if timeout else 0.0)
        first.setdefault(unit, index)
    # Stable: a unit's tests stay together, in file order.
    items.sort(key=lambda item: (-budget[_unit(item.nodeid)], first[_unit(item.nodeid)]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker per core, except against a broker named by KAFKA_BOOTSTRAP_SERVERS.
    There every module's agents would join the same consumer groups at once and take each
    other's records (a test's own embedded broker, or testcontainers' Kafka per worker, keeps
    them apart), so the tests run one module at a time, as without xdist."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return 0
    return None  # xdist's own count
