"""The private aiokafka hook bus/kafka.py patches is still there and still the only way out.

Agents leave their consumer group by session expiry, not LeaveGroup (bus/kafka.py
`_stay_until_expiry`), by replacing `consumer._coordinator._maybe_leave_group` with its local
half, `reset_generation()`. That is aiokafka's private API, so pyproject.toml pins aiokafka to
the range tested here, and these tests fail loudly, saying what moved, when an aiokafka version
changes it: the hook's name or signature, what it does besides sending LeaveGroup, or a
LeaveGroup sent from anywhere else. tests/integration/test_group_leave.py checks the effect on
the wire against a real broker.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import textwrap
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from packaging.requirements import Requirement
from packaging.version import Version

from counterpoint.bus.kafka import _stay_until_expiry

REPO = Path(__file__).resolve().parents[2]
AIOKAFKA = Path(aiokafka.__file__).parent
REVIEW = ("aiokafka changed the private hook bus/kafka.py `_stay_until_expiry` patches; review "
          "that function before widening the aiokafka pin in pyproject.toml")


def _function(cls: type, name: str) -> ast.AsyncFunctionDef | ast.FunctionDef:
    source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
    return node


def _is_self_call(node: ast.AST, method: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == method and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self")


def test_installed_aiokafka_is_within_the_pinned_range() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = [Requirement(r) for r in pyproject["project"]["dependencies"]
              if Requirement(r).name == "aiokafka"]
    assert any(s.operator == "<" for s in pin.specifier), "aiokafka needs an upper bound"
    assert Version(aiokafka.__version__) in pin.specifier, (aiokafka.__version__, str(pin))


def test_the_hook_and_its_local_half_exist_with_their_signatures() -> None:
    hook = getattr(GroupCoordinator, "_maybe_leave_group", None)
    assert hook is not None, f"{REVIEW}: GroupCoordinator._maybe_leave_group is gone"
    assert inspect.iscoroutinefunction(hook), f"{REVIEW}: _maybe_leave_group is not async"
    assert list(inspect.signature(hook).parameters) == ["self"], REVIEW
    reset = getattr(GroupCoordinator, "reset_generation", None)
    assert reset is not None, f"{REVIEW}: GroupCoordinator.reset_generation is gone"
    assert not inspect.iscoroutinefunction(reset), REVIEW
    assert list(inspect.signature(reset).parameters) == ["self"], REVIEW


def test_the_hook_only_sends_leave_group_and_resets_the_generation() -> None:
    """The replacement keeps only `reset_generation()`: anything else the hook does is lost."""
    body = _function(GroupCoordinator, "_maybe_leave_group").body
    assert len(body) == 2, f"{REVIEW}: _maybe_leave_group has {len(body)} statements, not 2"
    leave, reset = body
    assert isinstance(leave, ast.If), REVIEW
    assert "LeaveGroupRequest" in {n.id for n in ast.walk(leave) if isinstance(n, ast.Name)}, (
        f"{REVIEW}: its conditional no longer sends a LeaveGroupRequest")
    assert isinstance(reset, ast.Expr) and _is_self_call(reset.value, "reset_generation"), (
        f"{REVIEW}: it no longer ends with self.reset_generation()")


def test_leave_group_is_sent_nowhere_else_and_stop_goes_through_the_hook() -> None:
    senders = []
    for path in AIOKAFKA.rglob("*.py"):
        if path.parent.name == "protocol":
            continue  # where the request types are defined
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            calls = [n for n in ast.walk(func) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id == "LeaveGroupRequest"]
            if calls and func.name != "_maybe_leave_group":
                senders.append(f"{path.relative_to(AIOKAFKA)}:{func.name}")
    assert senders == [], f"{REVIEW}: LeaveGroup is also sent by {senders}"
    close = _function(GroupCoordinator, "close")
    assert any(_is_self_call(n, "_maybe_leave_group") for n in ast.walk(close)), (
        f"{REVIEW}: GroupCoordinator.close no longer calls self._maybe_leave_group()")


def _coordinator(sent: list[Any]) -> GroupCoordinator:
    """A GroupCoordinator with just the state the leave path reads; no connection."""
    coordinator: GroupCoordinator = object.__new__(GroupCoordinator)
    coordinator.group_id = "hook-test"
    coordinator.generation = 7
    coordinator.member_id = "member-1"
    coordinator._group_instance_id = None
    coordinator._rejoin_needed_fut = asyncio.get_running_loop().create_future()

    async def send(request: Any) -> None:
        sent.append(request)

    coordinator._send_req = send
    return coordinator


async def test_the_patched_coordinator_resets_without_sending_leave_group(
        caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Any] = []
    original = _coordinator(sent)
    await original._maybe_leave_group()
    assert [type(r).__name__ for r in sent] == ["LeaveGroupRequest"], (
        f"{REVIEW}: the unpatched hook no longer sends LeaveGroup the way this test expects")

    sent.clear()
    patched = _coordinator(sent)
    with caplog.at_level(logging.WARNING, logger="counterpoint.bus.kafka"):
        _stay_until_expiry(SimpleNamespace(_coordinator=patched))  # type: ignore[arg-type]
    assert "cannot turn off LeaveGroup" not in caplog.text, caplog.text
    await patched._maybe_leave_group()
    await patched.maybe_leave_group()  # the public wrapper aiokafka's unsubscribe uses
    assert sent == []
    assert (patched.generation, patched.member_id) == (-1, "")
    assert patched._rejoin_needed_fut.done()  # reset_generation asks for a rejoin, as before


LAG = ("aiokafka moved the partition state bus/kafka.py `_Engine.lag` reads (consumer."
       "_subscription.subscription.assignment); the consumer-lag metric would go silent")


async def test_lag_reads_each_partitions_high_watermark_and_fetch_position() -> None:
    """On a real SubscriptionState: lag = highwater - position per assigned partition, and a
    partition without either (never fetched) is left out rather than guessed."""
    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.structs import TopicPartition

    from counterpoint.bus.kafka import _Engine

    state = SubscriptionState()
    fetched, behind, unknown = (TopicPartition("t", p) for p in range(3))
    state.assign_from_user({fetched, behind, unknown})
    assignment = state.subscription.assignment
    for tp, position, high in ((fetched, 10, 10), (behind, 5, 42)):
        assignment.state_value(tp).seek(position)
        assignment.state_value(tp).highwater = high
    engine = _Engine.__new__(_Engine)  # only what lag() reads
    engine.consumer = SimpleNamespace(_subscription=state)
    engine.agent = SimpleNamespace(name="a")
    assert sorted(engine.lag()) == [("t", 0, 0), ("t", 1, 37)], LAG
