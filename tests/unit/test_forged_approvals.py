"""Forged approval events on the in-memory bus: each is dead-lettered with its reason and runs
nothing, and none of them stops a real decision afterwards.

The pipeline runs for real (offline provider), so the refund waiting for a person is a real,
signed proposal. The forgeries are written straight to the topics, as any Kafka client could.
The integration test (tests/integration/test_approvals.py) does the same over a real broker.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.signing import Keyring, Signer, Trust, TrustedKey
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.agent import Agent
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.approval_keys import (
    GENERATED,
    KeyConfigError,
    ensure_dev_keys,
    load_keyring,
    parse_trust,
)
from counterpoint.infra.approvals import ApprovalBook, make_decision
from counterpoint.infra.demo import example
from counterpoint.schemas.approvals import (
    ApprovalRequested,
    action_id,
)
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.registry import (
    ACTIONS_EXECUTED,
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    APPROVALS_REQUESTED,
    DEADLETTER_NAME,
    INTAKE_TICKETS,
)
from tests.support.forgeries import decision, forgeries, invented_unlock

BASE = Keyring.ephemeral()
ALICE = Signer("alice", Ed25519PrivateKey.generate())  # a person's own key: signs only as alice
STRANGER = Signer("stranger", Ed25519PrivateKey.generate())  # in nobody's trust
KEYS = Keyring(Trust([*BASE.trust.keys.values(),
                      TrustedKey(ALICE.key_id, "alice", ALICE.private.public_key(),
                                 frozenset({"person"}), identity="alice")]), BASE.signers)
DESK = KEYS.signer("approvals")


async def _pipeline(tmp_path: Path, policy: ApprovalPolicy | None = None
                    ) -> tuple[MemoryBus, dict[str, Agent]]:
    ctx = AgentContext(store=BusinessStore.open(tmp_path / "business.db"),
                       provider=OfflineProvider(), keys=KEYS,
                       approvals=policy or ApprovalPolicy())
    bus = MemoryBus()
    agents = {name: build(name, ctx) for name in AGENT_NAMES}
    for agent in agents.values():
        bus.add(agent)
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    return bus, agents


@pytest.fixture
async def world(tmp_path: Path) -> tuple[MemoryBus, ApprovalRequested, Path, Agent]:
    bus, agents = await _pipeline(tmp_path)
    (refund,) = [APPROVALS_REQUESTED.decode(r.value or b"")
                 for r in bus.records(APPROVALS_REQUESTED.name) if b'"refund"' in (r.value or b"")]
    return bus, refund, tmp_path, agents["approvals"]


async def _publish(bus: MemoryBus, value: bytes, request_id: str) -> None:
    env = Envelope(id=new_event_id(), source="/mallory", type=APPROVALS_DECIDED.ce_type,
                   time=now(), request_id=request_id)
    await bus.publish(APPROVALS_DECIDED.name, value, key=request_id.encode(),
                      headers=env.to_headers())
    await bus.run_until_idle()


def _letters(bus: MemoryBus, agent: str) -> list[DeadLetter]:
    return [d for d in map(DeadLetter.from_record, bus.records(DEADLETTER_NAME))
            if d.agent == agent]


def _succeeded(bus: MemoryBus) -> set[str]:
    return {v["action"]["action"] for v in (orjson.loads(r.value or b"")
                                            for r in bus.records(ACTIONS_EXECUTED.name))
            if v["outcome"] == "succeeded"}


def _payment(tmp_path: Path) -> str:
    import sqlite3

    with sqlite3.connect(tmp_path / "business.db") as db:
        return str(db.execute("SELECT status FROM payments WHERE id = 'PAY-88122'")
                   .fetchone()[0])


NAMES = [*forgeries(KEYS, invented_unlock()), "alice's key signing as someone else"]


def _forge(name: str, real: ApprovalRequested) -> tuple[bytes, str]:
    if name in (made := forgeries(KEYS, real)):
        return made[name]
    # A person's own key (the trust binds it to alice) signs only as alice.
    return (ALICE.seal("person", decision(real, decided_by="security-officer@example.com"))
            .model_dump_json().encode(), "identity-mismatch")


@pytest.mark.parametrize("name", NAMES)
async def test_a_forged_decision_is_dead_lettered_with_its_reason_and_runs_nothing(
        world: tuple[MemoryBus, ApprovalRequested, Path, Agent], name: str) -> None:
    bus, refund, tmp_path, _ = world
    value, reason = _forge(name, refund)
    before = _succeeded(bus)
    await _publish(bus, value, orjson.loads(value)["request_id"])
    (letter,) = _letters(bus, "executor")
    assert letter.reason == reason, letter.message
    assert letter.source_topic == APPROVALS_DECIDED.name and letter.record.value == value
    assert _succeeded(bus) == before == {"send_password_reset"}
    assert _payment(tmp_path) == "succeeded"
    # Readers ignore it too: the refund still waits for a person, who can still approve it.
    book = ApprovalBook(KEYS.trust, ApprovalPolicy())
    for topic in (APPROVALS_REQUESTED, APPROVALS_DECIDED, ACTIONS_EXECUTED):
        for record in bus.records(topic.name):
            book.apply(record)
    item = book.actions[refund.approval_id]
    assert item.state == "pending" and book.refused == 1
    real = make_decision(item, "approve", "alice", "", ALICE)
    await _publish(bus, real.model_dump_json().encode(), refund.request_id)
    assert "refund" in _succeeded(bus) and _payment(tmp_path) == "refunded"


async def test_a_forged_request_is_refused_by_the_desk_and_never_expires_or_escalates(
        world: tuple[MemoryBus, ApprovalRequested, Path, Agent]) -> None:
    bus, _, _, desk = world
    forged = invented_unlock().model_copy(update={
        "approval_id": action_id("11111111-0000-0000-0000-000000000000", "unlock_account",
                                 "C-77"), "expires_at": now() - timedelta(seconds=1)})
    for value in (forged.model_dump_json().encode(),
                  STRANGER.seal("proposal", forged).model_dump_json().encode()):
        env = Envelope(id=new_event_id(), source="/mallory", type=APPROVALS_REQUESTED.ce_type,
                       time=now(), request_id=forged.request_id)
        await bus.publish(APPROVALS_REQUESTED.name, value, key=forged.request_id.encode(),
                          headers=env.to_headers())
    await bus.run_until_idle()
    await bus.tick(desk)
    await bus.run_until_idle()
    assert [d.reason for d in _letters(bus, "approvals")] == ["unsigned", "untrusted-key"]
    assert bus.records(APPROVALS_ESCALATED.name) == []


async def test_the_desks_expiry_is_signed_and_the_executor_skips_the_action(
        tmp_path: Path) -> None:
    bus, agents = await _pipeline(tmp_path, ApprovalPolicy(ttl=timedelta(0)))
    await bus.tick(agents["approvals"])
    await bus.run_until_idle()
    expired = [APPROVALS_DECIDED.decode(r.value or b"") for r in bus.records(
        APPROVALS_DECIDED.name)]
    expired = [d for d in expired if d.via == "expiry"]
    assert {d.action.action for d in expired} == {"refund", "unlock_account"}
    assert all(d.signature is not None and d.signature.key_id == DESK.key_id for d in expired)
    outcomes = {v["action"]["action"]: v["outcome"] for v in (
        orjson.loads(r.value or b"") for r in bus.records(ACTIONS_EXECUTED.name))}
    assert outcomes == {"send_password_reset": "succeeded", "refund": "skipped",
                        "unlock_account": "skipped"}
    assert bus.records(DEADLETTER_NAME) == []


# --- keys and trust from files --------------------------------------------------------------


def _mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_development_keys_are_made_once_0600_and_trusted_for_their_roles(
        tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ring = load_keyring(keys_dir)
    assert set(ring.signers) == {"synthesis", "approvals", "gateway", "cli"}
    assert _mode(keys_dir) == 0o700
    assert {_mode(p) for p in keys_dir.glob("*.pem")} == {0o600}
    assert _mode(keys_dir / "trust.json") == 0o600
    trusted = {k.name: k.may_sign for k in ring.trust.keys.values()}
    assert trusted == {"synthesis": {"proposal", "policy"}, "approvals": {"expiry"},
                       "gateway": {"person"}, "cli": {"person"}}
    pem = (keys_dir / "synthesis.pem").read_bytes()
    again = load_keyring(keys_dir)  # a second process: same keys, nothing rewritten
    assert (keys_dir / "synthesis.pem").read_bytes() == pem
    assert again.signer("synthesis").key_id == ring.signer("synthesis").key_id
    # A key removed by hand is made again, and the trust we generated follows it.
    (keys_dir / "cli.pem").unlink()
    third = load_keyring(keys_dir)
    assert third.signer("cli").key_id != ring.signer("cli").key_id
    assert third.signer("cli").key_id in third.trust.keys


def test_a_trust_file_counterpoint_did_not_write_is_never_changed(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    mine = Ed25519PrivateKey.generate()
    signer = Signer("ops", mine)
    from counterpoint.agents.signing import public_b64

    text = orjson.dumps({"keys": [{"name": "ops", "public_key": public_b64(
        mine.public_key()), "may_sign": ["person"], "identity": "ops-lead"}]})
    (keys_dir / "trust.json").write_bytes(text)
    assert ensure_dev_keys(keys_dir, keys_dir / "trust.json") is False
    ring = load_keyring(keys_dir)
    assert (keys_dir / "trust.json").read_bytes() == text
    assert list(keys_dir.glob("*.pem")) == [] and ring.signers == {}
    (key,) = ring.trust.keys.values()
    assert key.key_id == signer.key_id and key.identity == "ops-lead"
    # Named explicitly (COUNTERPOINT_TRUST), an absent file is an error, never made.
    with pytest.raises(KeyConfigError, match="cannot read the trust file"):
        load_keyring(keys_dir, tmp_path / "elsewhere.json")
    assert not (tmp_path / "elsewhere.json").exists()
    assert GENERATED not in text.decode()


@pytest.mark.parametrize(("content", "problem"), [
    (b'{"keys": [{"name": "x", "public_key": "bm90IGEga2V5", "may_sign": ["person"]}]}',
     "keys.0.public_key"),
    (b'{"keys": [{"name": "x", "public_key": "AAAA", "may_sign": ["everything"]}]}',
     "keys.0.may_sign.0"),
    (b'{"keys": "all"}', "keys"),
    (b"not json", "(file)"),
])
def test_a_bad_trust_file_is_an_error_naming_the_file_and_field(
        tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "trust.json"
    path.write_bytes(content)
    with pytest.raises(KeyConfigError) as exc:
        parse_trust(path)
    assert str(path) in str(exc.value) and problem in str(exc.value)
