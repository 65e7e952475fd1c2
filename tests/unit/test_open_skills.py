"""Skills are open: a new investigation skill is settings and a project-file entry, with no
edit to the product (a task topic of its own, triage routing to it, synthesis joining it)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from counterpoint.agents import loading
from counterpoint.agents.catalog import build
from counterpoint.agents.context import AgentContext, SettingsError
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.llm.outputs import ticket_assessment
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.triage import TriageSettings
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.assembly import build_project, topics_of
from counterpoint.infra.project import load_project
from counterpoint.infra.settings import Settings
from counterpoint.topics.registry import INTAKE_TICKETS, SYNTHESIS_RESULTS, TRIAGE_DECISIONS

REFUNDS = {"intents": {"refunds": {"skill": "refunds", "focus": "refund requests",
                                   "keywords": ["refund", "money back"]}}}


async def test_a_new_skill_runs_end_to_end_from_settings_alone(store: BusinessStore) -> None:
    ctx = AgentContext(store=store, provider=OfflineProvider())
    triage = loading.build("counterpoint.agents.triage:build",
                           AgentContext(store=store, provider=OfflineProvider(), name="triage",
                                        settings=REFUNDS))
    refunds = loading.build("counterpoint.agents.investigator:build", ctx.named("refunds"))
    assert "investigation.tasks.refunds" in {t.name for t in triage.emits}
    assert [t.name for t in refunds.consumes] == ["investigation.tasks.refunds"]
    bus = MemoryBus()
    for agent in (triage, refunds, build("knowledge", ctx), build("synthesis", ctx)):
        bus.add(agent)
    ticket = {"id": "T-9", "customer_id": "C-42", "body": "I want my money back for May."}
    await bus.publish(INTAKE_TICKETS.name, orjson.dumps(ticket), key=b"T-9")
    await bus.run_until_idle()

    (decision,) = [TRIAGE_DECISIONS.decode(r.value or b"")
                   for r in bus.records(TRIAGE_DECISIONS.name)]
    assert decision.intents == ["refunds"]
    assert [(i.skill, i.focus) for i in decision.investigations] == [
        ("refunds", "refund requests"), ("knowledge", "help articles for refunds")]
    (result,) = [SYNTHESIS_RESULTS.decode(r.value or b"")
                 for r in bus.records(SYNTHESIS_RESULTS.name)]
    assert result.status == "complete"
    assert {(f.skill, f.agent) for f in result.findings} == {("refunds", "refunds"),
                                                            ("knowledge", "knowledge")}


def test_the_model_is_shown_exactly_the_configured_intents() -> None:
    schema = ticket_assessment(["billing", "account", "technical", "refunds"]).model_json_schema()
    assert schema["properties"]["intents"]["items"]["enum"] == [
        "billing", "account", "technical", "refunds", "general"]


def test_bad_triage_settings_name_the_key(store: BusinessStore) -> None:
    bad = {"intents": {"refunds": {"skil": "refunds"}}}
    ctx = AgentContext(store=store, provider=OfflineProvider(), name="triage", settings=bad,
                       where="counterpoint.toml: agents.triage.settings")
    with pytest.raises(loading.LoadError) as info:
        loading.build("counterpoint.agents.triage:build", ctx)
    assert "counterpoint.toml: agents.triage.settings.intents.refunds.skil: unknown setting" in str(
        info.value)
    with pytest.raises(SettingsError, match=r"settings\.colour: unknown setting"):
        AgentContext(provider=OfflineProvider(), name="triage",
                     settings={"colour": 1}).config(TriageSettings)


def test_a_project_adds_a_skill_to_the_built_in_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "counterpoint.toml"
    path.write_text('''
[project]
name = "support"
results = ["synthesis.results"]

[agents.triage]
use = "counterpoint.agents.triage:build"
settings.intents.refunds = { skill = "refunds", focus = "refund requests", keywords = ["refund"] }

[agents.refunds]
use = "counterpoint.agents.investigator:build"

[agents.knowledge]
use = "counterpoint.agents.investigator:build"

[agents.synthesis]
use = "counterpoint.agents.synthesis:build"
''')
    built = build_project(Settings(), load_project(path), OfflineProvider(), Keyring.ephemeral())
    names = {t.name for t in topics_of(b.agent for b in built)}
    assert {"investigation.tasks.refunds", "investigation.tasks.knowledge"} <= names
    assert [b.agent.group_id for b in built] == [
        "support.triage", "support.refunds", "support.knowledge", "support.synthesis"]
