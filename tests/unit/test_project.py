"""Project files and agents from anywhere: loading, import strings, start-up checks.

Everything here fails before a broker would be touched; the CLI cases call `main` in-process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoint.agents.catalog import AGENT_NAMES, BUILTIN
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.loading import LoadError, default_name, load
from counterpoint.agents.signing import Keyring
from counterpoint.infra import cli
from counterpoint.infra.assembly import build_project, resolve, topics_of
from counterpoint.infra.project import (
    ProjectError,
    builtin_project,
    find_project,
    load_project,
)
from counterpoint.infra.settings import Settings
from counterpoint.topics.registry import ALL_TOPICS

WORDS = Path(__file__).resolve().parents[1] / "support" / "words_project" / "counterpoint.toml"


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    saved = list(sys.path)
    yield
    sys.path[:] = saved
    for name in [m for m in sys.modules if m.startswith(("wordsapp", "userpkg"))]:
        del sys.modules[name]


def _project(tmp_path: Path, text: str, name: str = "counterpoint.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _build(path: Path) -> list[str]:
    built = build_project(Settings(), load_project(path), OfflineProvider(), Keyring.ephemeral())
    return [b.name for b in built]


def _error(path: Path) -> str:
    with pytest.raises(ProjectError) as info:
        _build(path)
    return str(info.value)


def test_the_words_project_loads_and_builds() -> None:
    project = load_project(WORDS)
    built = {b.name: b for b in build_project(Settings(), project, OfflineProvider(),
                                              Keyring.ephemeral())}
    assert list(built) == ["shouter", "counter"]
    assert project.agents["counter"].replicas == 2
    # Consumer groups are PROJECT.AGENT; topics come from the agents' declarations.
    assert built["shouter"].agent.group_id == "words.shouter"
    assert built["counter"].agent.group_id == "words.counter"
    topics = {t.name: t for t in topics_of(b.agent for b in built.values())}
    assert set(topics) == {"words.phrases", "words.shouted", "words.counted"}
    assert topics["words.shouted"].partitions == 2 and topics["words.phrases"].raw_intake


def test_the_builtin_project_is_todays_pipeline() -> None:
    project = builtin_project()
    assert list(project.agents) == list(AGENT_NAMES)
    assert {n: e.use for n, e in project.agents.items()} == BUILTIN
    built = build_project(Settings(), project, OfflineProvider(), Keyring.ephemeral())
    assert [b.agent.group_id for b in built] == [f"counterpoint.{n}" for n in AGENT_NAMES]
    # Its declarations give exactly the topics the built-in pipeline always had.
    assert {t.name for t in topics_of(b.agent for b in built)} == {t.name for t in ALL_TOPICS}


def test_found_by_flag_then_environment_then_working_directory(tmp_path: Path) -> None:
    flag = _project(tmp_path, WORDS.read_text().replace('"words"', '"flag"'), "a.toml")
    env = _project(tmp_path, WORDS.read_text().replace('"words"', '"env"'), "b.toml")
    here = tmp_path / "here"
    here.mkdir()
    _project(here, WORDS.read_text().replace('"words"', '"cwd"'))
    assert find_project(flag, env, cwd=here).name == "flag"
    assert find_project(None, env, cwd=here).name == "env"
    assert find_project(None, None, cwd=here).name == "cwd"
    assert find_project(None, "", cwd=tmp_path).file is None  # none anywhere: built in


@pytest.mark.parametrize(("text", "expected"), [
    ('[project]\nname = "x"\ncolour = "red"\n[agents.a]\nuse = "m:a"\n',
     "project.colour: unknown key (known keys: name, path, results)"),
    ('[project]\nname = "x"\n[agents.a]\nuse = "m:a"\nreplica = 2\n',
     "agents.a.replica: unknown key (known keys: use, replicas, model, settings)"),
    ('[project]\nname = "x"\n[agents.a]\nuse = "m:a"\nreplicas = "two"\n',
     "agents.a.replicas: Input should be a valid integer"),
    ('[project]\nname = "x"\n[agents.a]\nuse = "m:a"\nreplicas = 0\n',
     "agents.a.replicas: Input should be greater than or equal to 1"),
    ('[project]\nname = "x"\n[agents.a]\nuse = "not an import string"\n',
     "agents.a.use: expected an import string MODULE:ATTRIBUTE"),
    ('[project]\nname = "x"\n[agents.a]\nreplicas = 1\n', "agents.a.use: required key missing"),
    ('[project]\nname = "x"\n', "agents: required key missing"),
    ('[agents.a]\nuse = "m:a"\n', "project: required key missing"),
    ('[project]\nname = "x"\n[agents."two words"]\nuse = "m:a"\n', "agent name 'two words'"),
    ('[project]\nname = "x"\n[agents.a]\nuse = "m:a"\n[[samples]]\ntopic = "t"\n',
     "samples.0: give exactly one of value"),
    ('[project]\nname = "x"\npath = ["missing"]\n[agents.a]\nuse = "m:a"\n',
     "project.path.0:"),
    ('[project\nname = "x"\n', "not valid TOML"),
])
def test_a_bad_project_file_names_the_file_the_key_and_the_problem(
        tmp_path: Path, text: str, expected: str) -> None:
    path = _project(tmp_path, text)
    with pytest.raises(ProjectError) as info:
        load_project(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": "), message
    assert expected in message, message


def test_a_missing_project_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="cannot read the project file"):
        find_project(tmp_path / "nope.toml")


USER_MODULE = '''
from pydantic import BaseModel
from counterpoint.kit import Agent, AgentContext, Emit, Incoming, intake, topic

class Note(BaseModel):
    text: str

NOTES = intake("user.notes", Note)
OUT = topic("user.out", Note)
OUT_8 = topic("user.out", Note, partitions=8)

def good(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[OUT])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        return []

    return agent

def other_out(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[OUT_8])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        return []

    return agent

def grouped(ctx: AgentContext) -> Agent:
    agent = good(ctx)
    agent.group = "shared.group"
    return agent

def wrong_type(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[str]) -> list[Emit]:
        return []

    return agent

def broken(ctx: AgentContext) -> Agent:
    raise RuntimeError("no database configured")

def not_an_agent(ctx: AgentContext) -> str:
    return "hello"

fixed = Agent("fixed", emits=[])
NUMBER = 7
'''


def _user(tmp_path: Path, agents: str, extra: str = "") -> Path:
    (tmp_path / "userpkg.py").write_text(USER_MODULE)
    return _project(tmp_path, f'[project]\nname = "u"\n{extra}\n{agents}')


@pytest.mark.parametrize(("agents", "expected"), [
    ('[agents.a]\nuse = "nosuchmodule:a"',
     "agents.a.use: 'nosuchmodule:a': no module named 'nosuchmodule'"),
    ('[agents.a]\nuse = "userpkg:missing"',
     "agents.a.use: 'userpkg:missing': userpkg has no attribute 'missing'"),
    ('[agents.a]\nuse = "userpkg:NUMBER"', "'userpkg:NUMBER' is a int, neither an Agent nor"),
    ('[agents.a]\nuse = "userpkg:broken"',
     "building the agent raised RuntimeError: no database configured"),
    ('[agents.a]\nuse = "userpkg:not_an_agent"', "returned a str, not an Agent"),
    ('[agents.a]\nuse = "userpkg:wrong_type"',
     "on_note takes Incoming[str] but user.notes carries Note"),
    ('[agents.a]\nuse = "userpkg:fixed"',
     "gives an agent named 'fixed', but runs as 'a'"),
    ('[agents.a]\nuse = "userpkg:grouped"\n[agents.b]\nuse = "userpkg:grouped"',
     "agents.b: consumer group 'shared.group' is already claimed by agents.a"),
    ('[agents.a]\nuse = "userpkg:good"\n[agents.b]\nuse = "userpkg:other_out"',
     "topic 'user.out' is declared differently by a (Note, 4 partitions"),
])
def test_an_agent_that_cannot_be_built_stops_start_up(tmp_path: Path, agents: str,
                                                      expected: str) -> None:
    path = _user(tmp_path, agents)
    message = _error(path)
    assert message.startswith(str(path) + ": "), message
    assert expected in message, message


def test_results_and_samples_must_be_topics_the_agents_declare(tmp_path: Path) -> None:
    path = _user(tmp_path, '[agents.a]\nuse = "userpkg:good"', 'results = ["user.nope"]')
    assert "project.results.0: no agent emits 'user.nope' (emitted: user.out)" in _error(path)
    path = _user(tmp_path, '[agents.a]\nuse = "userpkg:good"\n[[samples]]\ntopic = "user.out"\n'
                 'value = {text = "x"}')
    assert "samples.0.topic: 'user.out' is declared but consumed by no agent" in _error(path)
    path = _user(tmp_path, '[agents.a]\nuse = "userpkg:good"', 'results = ["user.out"]')
    assert _build(path) == ["a"]


def test_settings_that_do_not_fit_name_their_key(tmp_path: Path) -> None:
    text = WORDS.read_text().replace('name = "words"', f'name = "words"\npath = ["{WORDS.parent}"]')
    path = _project(tmp_path, text.replace('{ suffix = "!" }', '{ sufix = "!" }'))
    assert "agents.shouter.settings.sufix: unknown setting (known: suffix)" in _error(path)
    path = _project(tmp_path, text.replace('{ suffix = "!" }', '{ suffix = 3 }'))
    assert "agents.shouter.settings.suffix: Input should be a valid string (got 3)" in _error(path)


def test_agent_resolves_a_name_or_an_import_string() -> None:
    project = load_project(WORDS)
    assert resolve(project, "counter")[0] == "counter"
    assert resolve(project, "wordsapp:counter")[0] == "counter"  # the project's entry
    name, entry = resolve(builtin_project(), "counterpoint.agents.synthesis:build")
    assert (name, entry.use) == ("synthesis", "counterpoint.agents.synthesis:build")
    with pytest.raises(ProjectError, match=r"used by several agents \(billing, account"):
        resolve(builtin_project(), "counterpoint.agents.investigator:build")
    name, entry = resolve(builtin_project(), "elsewhere:thing")
    assert name is None and entry.use == "elsewhere:thing"
    with pytest.raises(ProjectError, match="no agent named 'nobody'; choose one of: shouter"):
        resolve(project, "nobody")


def test_import_strings() -> None:
    assert default_name("counterpoint.agents.triage:build") == "triage"
    assert default_name("pkg.mod:writer") == "writer"
    with pytest.raises(LoadError, match="not an import string"):
        load("pkg.mod")
    assert load("counterpoint.agents.triage:build") is not None


def _squash(text: str) -> str:
    return "".join(text.split())


def test_up_with_a_bad_project_exits_2_before_starting_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERPOINT_HOME", str(tmp_path / "home"))
    path = _user(tmp_path, '[agents.a]\nuse = "userpkg:missing"')
    assert cli.main(["up", "--config", str(path)]) == cli.EXIT_USAGE
    err = _squash(capsys.readouterr().err)
    assert _squash(f"{path}: agents.a.use: 'userpkg:missing': userpkg has no attribute") in err
    assert not (tmp_path / "home" / "logs").exists()  # nothing was started
    monkeypatch.setenv("COUNTERPOINT_CONFIG", str(tmp_path / "absent.toml"))
    assert cli.main(["status"]) == cli.EXIT_USAGE
    assert "cannotreadtheprojectfile" in _squash(capsys.readouterr().err)


def test_scale_names_the_projects_agents(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["up", "--config", str(WORDS), "--scale", "triage=2"]) == cli.EXIT_USAGE
    assert _squash("NAME one of shouter, counter") in _squash(capsys.readouterr().err)
