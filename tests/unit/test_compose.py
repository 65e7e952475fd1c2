"""Static checks of the container deployment: docker-compose.yml, Dockerfile, collector config.

No Docker engine runs on the development machines, so these parse the files and check the
properties the deployment relies on (one scalable service per agent, Apache Kafka in KRaft
mode, a collector config that exists). Each check returns a list of problems; the tests assert
the real files have none and that a deliberately broken copy is caught.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

# Written out on purpose; test_compose_names_every_agent_in_catalog cross-checks the project.
AGENT_NAMES = ("triage", "billing", "account", "infrastructure", "knowledge", "synthesis",
               "approvals", "executor", "memory", "webhooks")
KAFKA_SERVICE = "kafka"
COLLECTOR_SERVICE = "otel-collector"


# -- helpers ---------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    assert isinstance(data.get("services"), dict), "docker-compose.yml has no services mapping"
    return data


def as_argv(value: Any) -> list[str]:
    """A compose command/entrypoint (string or list) as an argv list."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list) as a dict of strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def agent_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services whose command is `agent NAME`, keyed by service name."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if as_argv(svc.get("command"))[:1] == ["agent"]
    }


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def dockerfile_entrypoint() -> list[str]:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    entrypoints = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints, "Dockerfile has no ENTRYPOINT"
    args = entrypoints[-1]  # the last one wins
    try:
        parsed = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"ENTRYPOINT must use the exec (JSON) form, got {args!r}")
    assert isinstance(parsed, list), f"ENTRYPOINT exec form must be a JSON list, got {args!r}"
    return [str(p) for p in parsed]


# -- checks (each returns the problems it found) ---------------------------------------------


def check_agents(compose: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    services = compose["services"]
    agents = agent_services(compose)
    argvs = [as_argv(svc["command"]) for svc in agents.values()]
    commanded = {argv[1] for argv in argvs if len(argv) > 1}
    for name in names:
        if name not in commanded:
            problems.append(f"no service runs `agent {name}`")
        svc = services.get(name)
        if svc is not None and as_argv(svc.get("command")) != ["agent", name]:
            problems.append(f"service {name!r} runs {svc.get('command')!r}, not `agent {name}`")
    for name, svc in agents.items():
        argv = as_argv(svc["command"])
        if len(argv) != 2:
            problems.append(f"{name}: command should be exactly `agent NAME`, got {argv}")
        if "container_name" in svc:
            problems.append(f"{name}: container_name prevents --scale")
        if svc.get("ports"):
            problems.append(f"{name}: fixed host ports prevent --scale")
        if "entrypoint" in svc:
            problems.append(f"{name}: overrides the image's ENTRYPOINT (counterpoint)")
        if "build" not in svc:
            problems.append(f"{name}: not built from the repository's Dockerfile")
    return problems


def check_agent_bootstrap(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    kafka = compose["services"].get(KAFKA_SERVICE)
    if kafka is None:
        return [f"no {KAFKA_SERVICE!r} service"]
    advertised = env_of(kafka).get("KAFKA_ADVERTISED_LISTENERS", "")
    agents = agent_services(compose)
    if not agents:
        problems.append("no agent services at all")
    for name, svc in agents.items():
        bootstrap = env_of(svc).get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            problems.append(f"{name}: KAFKA_BOOTSTRAP_SERVERS not set")
            continue
        for server in bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if host != KAFKA_SERVICE:
                problems.append(f"{name}: bootstrap {server!r} is not the {KAFKA_SERVICE} service")
            elif f"//{host}:{port}" not in advertised:
                problems.append(
                    f"{name}: bootstrap {server!r} is not an advertised listener ({advertised!r})"
                )
        depends = svc.get("depends_on") or {}
        if KAFKA_SERVICE not in depends:
            problems.append(f"{name}: does not depend on {KAFKA_SERVICE}")
    return problems


def check_kraft(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = compose["services"]
    kafka = services.get(KAFKA_SERVICE)
    if kafka is None:
        return [f"no {KAFKA_SERVICE!r} service"]
    if not str(kafka.get("image", "")).startswith("apache/kafka:"):
        problems.append(f"kafka image is {kafka.get('image')!r}, expected apache/kafka")
    env = env_of(kafka)
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    if not {"broker", "controller"} <= roles:
        problems.append(f"KAFKA_PROCESS_ROLES is {roles}, not KRaft broker+controller")
    if not env.get("KAFKA_CONTROLLER_QUORUM_VOTERS"):
        problems.append("KAFKA_CONTROLLER_QUORUM_VOTERS not set")
    if any("ZOOKEEPER" in key for key in env):
        problems.append("kafka is configured with ZooKeeper settings")
    if env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() != "false":
        problems.append("topic auto-creation must be off (topics come from the registry)")
    if "healthcheck" not in kafka:
        problems.append("kafka has no healthcheck")
    for name, svc in services.items():
        if "zookeeper" in name.lower() or "zookeeper" in str(svc.get("image", "")).lower():
            problems.append(f"service {name!r} is a ZooKeeper")
    return problems


def check_collector(compose: dict[str, Any]) -> list[str]:
    collector = compose["services"].get(COLLECTOR_SERVICE)
    if collector is None:
        return [f"no {COLLECTOR_SERVICE!r} service"]
    sources = []
    for volume in collector.get("volumes") or []:
        source = volume.get("source") if isinstance(volume, dict) else volume.split(":", 1)[0]
        if source and source.startswith((".", "/")):
            sources.append(source)
    if not sources:
        return [f"{COLLECTOR_SERVICE} mounts no config file from the repository"]
    problems: list[str] = []
    for source in sources:
        path = (COMPOSE_FILE.parent / source).resolve()
        if not path.is_file():
            problems.append(f"collector config {source} does not exist")
            continue
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            problems.append(f"collector config {source} is not a mapping")
            continue
        protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
        if not {"grpc", "http"} <= set(protocols):
            problems.append(f"{source}: OTLP receiver lacks grpc and/or http")
        exporters = config.get("exporters") or {}
        if (exporters.get("otlp") or {}).get("endpoint") != "jaeger:4317":
            problems.append(f"{source}: otlp exporter does not point at jaeger:4317")
        pipeline = ((config.get("service") or {}).get("pipelines") or {}).get("traces") or {}
        if "otlp" not in (pipeline.get("receivers") or []):
            problems.append(f"{source}: traces pipeline does not receive OTLP")
        if "otlp" not in (pipeline.get("exporters") or []):
            problems.append(f"{source}: traces pipeline does not export to Jaeger")
    return problems


# -- tests -----------------------------------------------------------------------------------


def test_compose_parses() -> None:
    compose = load_compose()
    assert compose["services"]


def test_every_agent_has_a_scalable_service() -> None:
    assert check_agents(load_compose(), AGENT_NAMES) == []


def test_agents_bootstrap_from_the_kafka_service() -> None:
    assert check_agent_bootstrap(load_compose()) == []


def test_kafka_is_kraft_without_zookeeper() -> None:
    assert check_kraft(load_compose()) == []


def test_collector_config_exists_and_parses() -> None:
    assert check_collector(load_compose()) == []


def test_topics_service_runs_before_agents() -> None:
    compose = load_compose()
    topics = compose["services"].get("topics")
    assert topics is not None, "no one-shot `topics` service"
    assert as_argv(topics.get("command")) == ["topics"]
    assert topics.get("depends_on", {}).get(KAFKA_SERVICE, {}).get("condition") == "service_healthy"
    for name, svc in agent_services(compose).items():
        condition = (svc.get("depends_on") or {}).get("topics", {}).get("condition")
        assert condition == "service_completed_successfully", name


def test_dockerfile_entrypoint_is_counterpoint() -> None:
    assert dockerfile_entrypoint() == ["counterpoint"]


def test_dockerfile_runs_as_non_root() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "Dockerfile has no USER instruction"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}, f"image runs as {users[-1]!r}"


def test_compose_names_every_agent_in_catalog() -> None:
    if importlib.util.find_spec("counterpoint.agents.catalog") is None:
        pytest.skip("counterpoint.agents.catalog does not exist yet; nothing to cross-check")
    # The module exists: an import error here is a real failure, not a reason to skip.
    catalog = importlib.import_module("counterpoint.agents.catalog")
    names = tuple(catalog.AGENT_NAMES)
    assert names, "counterpoint.agents.catalog.AGENT_NAMES is empty"
    assert check_agents(load_compose(), names) == []


# -- the checks can fail ---------------------------------------------------------------------


def test_checks_catch_a_broken_compose() -> None:
    good = load_compose()

    no_billing = copy.deepcopy(good)
    del no_billing["services"]["billing"]
    assert any("agent billing" in p for p in check_agents(no_billing, AGENT_NAMES))

    pinned = copy.deepcopy(good)
    pinned["services"]["triage"]["container_name"] = "triage"
    pinned["services"]["triage"]["ports"] = ["8000:8000"]
    problems = check_agents(pinned, AGENT_NAMES)
    assert any("container_name" in p for p in problems)
    assert any("host ports" in p for p in problems)

    local = copy.deepcopy(good)
    local["services"]["synthesis"]["environment"] = {"KAFKA_BOOTSTRAP_SERVERS": "localhost:9092"}
    assert any("synthesis" in p for p in check_agent_bootstrap(local))

    zk = copy.deepcopy(good)
    zk["services"]["zookeeper"] = {"image": "confluentinc/cp-zookeeper:7.6.0"}
    zk["services"][KAFKA_SERVICE]["environment"] = {"KAFKA_PROCESS_ROLES": "broker"}
    assert len(check_kraft(zk)) >= 2

    missing = copy.deepcopy(good)
    missing["services"][COLLECTOR_SERVICE]["volumes"] = ["./deploy/no-such-file.yaml:/etc/c.yaml"]
    assert any("does not exist" in p for p in check_collector(missing))


def test_the_demo_business_is_one_shared_service_every_agent_reaches() -> None:
    compose = load_compose()
    business = compose["services"].get("business")
    assert business is not None, "no demo business service"
    assert as_argv(business.get("entrypoint")) == ["counterpoint-demo-business"]
    argv = as_argv(business.get("command"))
    port = argv[argv.index("--port") + 1]
    assert any(str(v).split(":", 1)[0] == "business-data" for v in business.get("volumes", []))
    for name, svc in agent_services(compose).items():
        assert env_of(svc).get("COUNTERPOINT_DEMO_BUSINESS_URL") == \
            f"http://business:{port}/mcp", name
        assert "business" in (svc.get("depends_on") or {}), name
