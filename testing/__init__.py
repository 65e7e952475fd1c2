"""Test your agents in memory, in a few lines: `from counterpoint.testing import ...`.

    from counterpoint.testing import ScriptedModel, TestPipeline

    async def test_a_lead_gets_an_email() -> None:
        model = ScriptedModel({"sales.research": Research(notes="Acme sells anvils")})
        async with TestPipeline("counterpoint.toml", model=model) as pipeline:
            request = await pipeline.publish("sales.leads", {"id": "L-1", "company": "Acme"})
            (email,) = pipeline.results(request)
            assert "anvils" in email.body
            assert model.calls[0].task == "sales.research"

Your agents run exactly as built in a process (the same factories, settings, declaration
checks and delivery code), on an in-memory bus that encodes real records: CloudEvents headers,
partitions by key, committed offsets per consumer group, dead letters with their reasons,
`restart(agent)` for a crash. A ScriptedModel answers the model calls: per task, an output
instance, a function of the request, or a list used in turn; unscripted tasks get the offline
provider's answers (its rules, or a labelled placeholder). The real broker is for integration
tests; this is for the logic of your agents.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.llm.provider import LLMProvider, LLMRequest, LLMResponse
from counterpoint.agents.signing import Keyring
from counterpoint.bus.agent import DEFAULT_GROUP_PREFIX, Agent
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import raw_envelope
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.assembly import BuiltAgent, build_one, build_project, topics_of
from counterpoint.infra.project import AgentEntry, Project, find_project, load_project
from counterpoint.infra.settings import Settings
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.schemas.events import Generation, Usage
from counterpoint.topics.topic import DEADLETTER_NAME, Topic

__all__ = ["ScriptedModel", "TestPipeline"]

T = TypeVar("T", bound=BaseModel)

Answer = BaseModel | Mapping[str, Any] | Callable[[LLMRequest[Any]], Any] | Sequence[Any]
SCRIPTED = Generation(provider="scripted", model="scripted", offline=True)


@dataclass
class ScriptedModel:
    """A model whose answers a test writes. `answers` maps a task name to the answer: an
    instance (or dict) of the output model, a function of the request returning one, or a list
    answered in turn (the last one repeats). Every request is kept in `calls`."""

    answers: Mapping[str, Answer] = field(default_factory=dict)
    fallback: LLMProvider = field(default_factory=OfflineProvider)
    calls: list[LLMRequest[Any]] = field(default_factory=list)
    name: str = "scripted"
    _turns: dict[str, int] = field(default_factory=dict)

    async def generate(self, request: LLMRequest[T], *, model: str) -> LLMResponse[T]:
        self.calls.append(request)
        if request.task not in self.answers:
            return await self.fallback.generate(request, model=model)
        answer = self.answers[request.task]
        if isinstance(answer, Sequence) and not isinstance(answer, str | bytes):
            turn = self._turns[request.task] = self._turns.get(request.task, -1) + 1
            answer = answer[min(turn, len(answer) - 1)]
        if callable(answer) and not isinstance(answer, BaseModel):
            answer = answer(request)
        data = answer.model_dump() if isinstance(answer, BaseModel) else answer
        # Validated like a model's answer: a script of the wrong shape fails the test here.
        output = request.output.model_validate(data)
        return LLMResponse(output, Usage(calls=1, estimated=True), SCRIPTED)

    def tasks(self) -> list[str]:
        return [c.task for c in self.calls]


class TestPipeline:
    """A project's agents, or the agents you list, on an in-memory bus.

    `project` is a counterpoint.toml path (default: found as the CLI finds it). `agents`
    instead lists import strings or Agent objects to run without a project file (a factory
    runs under its default name, `counterpoint agent MODULE:ATTR`'s); then `results` names the
    topics `results()` reads.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, project: str | Path | None = None, *,
                 agents: Sequence[str | Agent] = (), results: Sequence[str] = (),
                 model: LLMProvider | None = None, settings: Settings | None = None) -> None:
        # Local state (traces, stores) goes to a folder of its own, removed afterwards.
        home = Path(tempfile.mkdtemp(prefix="counterpoint-test-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, home, True)
        self.settings = settings or Settings(home=home)
        self.model = model or OfflineProvider()
        # One set of throwaway approval keys, so what one agent signs the others trust.
        self.keys = Keyring.ephemeral()
        self.bus = MemoryBus()
        if agents:
            self.project = Project(name=DEFAULT_GROUP_PREFIX, agents={}, results=tuple(results))
            built = [BuiltAgent(a.name, AgentEntry(use=f"{__name__}:Agent"), a)
                     if isinstance(a, Agent) else
                     build_one(self.settings, self.project, None, AgentEntry(use=a), self.model,
                               self.keys)
                     for a in agents]
        else:
            self.project = (load_project(Path(project)) if project is not None
                            else find_project(None, self.settings.config))
            built = build_project(self.settings, self.project, self.model, self.keys)
        self.agents: dict[str, BuiltAgent] = {b.name: b for b in built}
        self.topics: dict[str, Topic[Any]] = {
            t.name: t for t in topics_of(b.agent for b in built)}
        for b in built:
            self.bus.add(b.agent)

    async def __aenter__(self) -> TestPipeline:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._cleanup()

    def topic(self, name: str | Topic[Any]) -> Topic[Any]:
        key = name if isinstance(name, str) else name.name
        try:
            return self.topics[key]
        except KeyError:
            raise KeyError(f"no agent here declares topic {key!r}; declared: "
                           f"{', '.join(sorted(self.topics))}") from None

    async def publish(self, topic: str | Topic[Any], data: BaseModel | Mapping[str, Any] | bytes,
                      *, key: str | None = None, raw: bool = False, run: bool = True) -> str:
        """Publish one event as a new request and (unless run=False) let the agents handle
        everything that follows; returns the request id. raw=True sends the JSON with no
        envelope, as a foreign Kafka client would (intake topics only)."""
        target = self.topic(topic)
        if isinstance(data, bytes):
            value = data
        else:
            value = orjson.dumps(data.model_dump(mode="json") if isinstance(data, BaseModel)
                                 else data)
        event_id = new_event_id()
        headers = [] if raw else Envelope(
            id=event_id, source="/counterpoint/testing", type=target.ce_type, time=now(),
            request_id=event_id).to_headers()
        await self.bus.publish(target.name, value, key=(key or event_id).encode(),
                               headers=headers)
        if raw:  # its request id is the one the agents will derive from its place in the log
            record = next(r for r in reversed(self.bus.records(target.name))
                          if r.value == value)
            event_id = raw_envelope(target, record).request_id
        if run:
            await self.run()
        return event_id

    async def run(self, max_rounds: int = 100) -> int:
        """Deliver until every agent is idle; returns how many records were handled."""
        return await self.bus.run_until_idle(max_rounds)

    async def tick(self) -> None:
        """Run every agent's periodic tasks once (deadlines, expiries), then deliver."""
        for built in self.agents.values():
            await self.bus.tick(built.agent)
        await self.run()

    def events(self, topic: str | Topic[Any], request_id: str | None = None) -> list[Any]:
        """The events on `topic` (of one request, if given), decoded, once per event id."""
        target = self.topic(topic)
        seen: dict[str, Any] = {}
        for record in self.bus.records(target.name):
            envelope = Envelope.from_headers(record.headers)
            if envelope is None or record.value is None:
                continue
            if request_id is None or envelope.request_id == request_id:
                seen.setdefault(envelope.id, target.decode(record.value))
        return list(seen.values())

    def results(self, request_id: str | None = None) -> list[Any]:
        """The events on the project's results topics ([project] results)."""
        return [e for name in self.project.results for e in self.events(name, request_id)]

    def deadletters(self) -> list[DeadLetter]:
        return [DeadLetter.from_record(r) for r in self.bus.records(DEADLETTER_NAME)]

    def restart(self, name: str) -> Agent:
        """A crash of `name`'s process: a fresh instance resumes from the committed offsets
        (an Agent object rather than a factory keeps its own state)."""
        old = self.agents[name]
        fresh = old if old.entry.use.startswith(f"{__name__}:") else build_one(
            self.settings, self.project, name if old.name in self.project.agents else None,
            old.entry, self.model, self.keys)
        self.bus.restart(old.agent, fresh.agent)
        self.agents[name] = fresh
        return fresh.agent
