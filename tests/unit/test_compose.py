"""Static checks of the container deployment: docker-compose.yml, Dockerfile, collector config.

No Docker engine runs on the development machines, so these parse the files and check the
properties the deployment relies on: one scalable service per agent of the default set, each
running an agent that exists with a command the CLI takes; the image the compose file builds
installs (its build context staged as the Dockerfile copies it, tests/support/dockerfile.py);
every environment variable it sets is one the code reads; Apache Kafka in KRaft mode; a
collector config that exists. Each check returns a list of problems; the tests assert the real
files have none and that a deliberately broken copy is caught.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from counterpoint.infra.broker import free_port
from counterpoint.infra.cli import build_parser
from counterpoint.infra.settings import MODEL_PREFIX, Settings
from tests.support.dockerfile import InstalledImage, instructions

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
KAFKA_SERVICE = "kafka"
COLLECTOR_SERVICE = "otel-collector"


def default_agents() -> tuple[str, ...]:
    """The agents `counterpoint up` starts with no project file: what compose must run.

    The one place the compose checks learn the agent list: the built-in project's entries."""
    from counterpoint.infra.project import builtin_project

    return tuple(builtin_project().agents)


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


def counterpoint_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image built from this repository's Dockerfile."""
    built = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    images = {svc.get("image") for svc in built.values()} - {None}
    return {name: svc for name, svc in compose["services"].items()
            if name in built or svc.get("image") in images}


def cli_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The image's services that run the Counterpoint CLI (the image's entrypoint); not the
    demo business server, which the image also carries but which is not Counterpoint."""
    return {name: svc for name, svc in counterpoint_services(compose).items()
            if "entrypoint" not in svc}


def build_of(service: dict[str, Any]) -> tuple[Path, Path]:
    """(context folder, Dockerfile) of a service's `build`."""
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def dockerfile_entrypoint() -> list[str]:
    parsed_file = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    entrypoints = [args for keyword, args in parsed_file if keyword == "ENTRYPOINT"]
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


def check_commands(compose: dict[str, Any], agents: tuple[str, ...]) -> list[str]:
    """Every service of the image runs a command the CLI takes; an `agent` one, an agent
    that exists."""
    problems: list[str] = []
    parser = build_parser()
    for name, svc in cli_services(compose).items():
        argv = as_argv(svc.get("command"))
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                parser.parse_args(argv)
        except SystemExit:
            problems.append(f"{name}: `counterpoint {shlex.join(argv)}` is not a command "
                            f"the CLI takes: {err.getvalue().strip().splitlines()[-1:]}")
            continue
        if argv[:1] == ["agent"] and argv[1] not in agents:
            problems.append(f"{name}: runs `agent {argv[1]}`, and there is no such agent "
                            f"(agents: {', '.join(agents)})")
    return problems


def check_environment(compose: dict[str, Any], read: set[str], prefixes: tuple[str, ...],
                      agents: tuple[str, ...]) -> list[str]:
    """Every variable set for the image's services is one the code reads."""
    problems: list[str] = []
    for name, svc in counterpoint_services(compose).items():
        for key in env_of(svc):
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix == MODEL_PREFIX and key[len(prefix):].lower() not in agents:
                problems.append(f"{name}: {key} names no agent (agents: {', '.join(agents)})")
            elif prefix is None and key not in read:
                problems.append(f"{name}: {key} is set, and nothing in Counterpoint reads it")
    return problems


def check_images(compose: dict[str, Any],
                 image: Callable[[Path, Path], InstalledImage]) -> list[str]:
    """Each image the compose file builds installs from the build context it sends."""
    problems: list[str] = []
    builds = {build_of(svc) for name, svc in compose["services"].items() if "build" in svc}
    for context, dockerfile in sorted(builds):
        built = image(context, dockerfile)
        if not built.ok:
            problems.append(f"{dockerfile.relative_to(REPO)} (context {context}) does not "
                            f"install:\n{built.why()}")
    return problems


# What an agent reads at start-up: `counterpoint agent triage` run with every environment
# lookup recorded (os.environ swapped for a recording mapping before anything imports it, so
# `from os import environ` in libraries gets it too), stopping where it needs the broker.
RECORD_READS = """\
import atexit, json, os, sys
from collections.abc import MutableMapping

class Recorder(MutableMapping):
    def __init__(self, real):
        self.real, self.read = real, set()
    def __getitem__(self, key):
        self.read.add(key)
        return self.real[key]
    def __setitem__(self, key, value):
        self.real[key] = value
    def __delitem__(self, key):
        del self.real[key]
    def __iter__(self):
        return iter(self.real)
    def __len__(self):
        return len(self.real)
    def __contains__(self, key):
        self.read.add(key)
        return key in self.real
    def copy(self):
        return dict(self.real)
    # Going through everything (as pydantic-settings does) looks nothing up by name.
    def keys(self):
        return self.real.keys()
    def items(self):
        return self.real.items()
    def values(self):
        return self.real.values()

os.environ = recorder = Recorder(os.environ)
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(recorder.read))))
from counterpoint.infra.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def read_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Environment variables Counterpoint reads: every Settings field's, and whatever an
    agent process (our code and the libraries it runs, OpenTelemetry's exporter included)
    looks up at start-up with the compose file's environment."""
    home = tmp_path_factory.mktemp("reads")
    agent = next(iter(agent_services(load_compose()).values()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COUNTERPOINT_", "OTEL_"))}
    # As compose resolves `${VAR:-default}` on a host that sets none of them.
    env.update({key: re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m[1] or "", value)
                for key, value in env_of(agent).items()})
    # Loopback only, and nothing listens there: the agent stops where it needs the broker.
    env.update({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                "COUNTERPOINT_HOME": str(home), "COUNTERPOINT_MEMORY_DB": str(home / "m.db")})
    out = home / "read.json"
    done = subprocess.run([sys.executable, "-c", RECORD_READS, str(out),
                           *as_argv(agent["command"])], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert out.is_file(), done.stderr[-3000:]
    assert "no Kafka broker" in done.stderr or "KafkaConnectionError" in done.stderr, (
        done.stderr[-3000:])  # it got as far as the broker, so its start-up ran
    return set(json.loads(out.read_text())) | set(Settings.env_names().values())


# -- tests -----------------------------------------------------------------------------------


def test_compose_parses() -> None:
    compose = load_compose()
    assert compose["services"]


def test_every_agent_of_the_default_set_has_a_scalable_service() -> None:
    agents = default_agents()
    assert agents, "no agents in the default set"
    assert check_agents(load_compose(), agents) == []


def test_every_service_runs_a_command_the_cli_takes_and_an_agent_that_exists() -> None:
    assert check_commands(load_compose(), default_agents()) == []


def test_the_image_the_compose_file_builds_installs(
        image: Callable[[Path, Path], InstalledImage]) -> None:
    assert check_images(load_compose(), image) == []


def test_every_environment_variable_set_is_one_the_code_reads(read_names: set[str]) -> None:
    assert {"KAFKA_BOOTSTRAP_SERVERS", "COUNTERPOINT_HOME", "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME"} <= read_names  # the reader works
    assert check_environment(load_compose(), read_names, (MODEL_PREFIX,),
                             default_agents()) == []


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
    users = [args for keyword, args in instructions(DOCKERFILE.read_text(encoding="utf-8"))
             if keyword == "USER"]
    assert users, "Dockerfile has no USER instruction"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}, f"image runs as {users[-1]!r}"


def check_shared_keyring(compose: dict[str, Any]) -> list[str]:
    """Every Counterpoint CLI service mounts one named volume at its keys folder, and the image has
    that folder owned by its user: signers and the executor must share one trust file, or
    each container makes its own development keys and every approval is `untrusted-key`."""
    problems: list[str] = []
    home = next((v for k, v in instructions(DOCKERFILE.read_text(encoding="utf-8"))
                 if k == "ENV" and "COUNTERPOINT_HOME=" in v), "")
    match = re.search(r"COUNTERPOINT_HOME=(\S+)", home)
    default_keys = f"{match.group(1) if match else '/data'}/keys"
    volumes: dict[str, set[str]] = {}
    for name, svc in cli_services(compose).items():
        keys_dir = env_of(svc).get("COUNTERPOINT_KEYS_DIR") or default_keys
        mounted = {str(v).split(":")[0] for v in svc.get("volumes") or []
                   if ":" in str(v) and str(v).split(":")[1] == keys_dir}
        named = {m for m in mounted if m in (compose.get("volumes") or {})}
        if not named:
            problems.append(f"{name}: no named volume at its keys folder {keys_dir}")
        for volume in named:
            volumes.setdefault(volume, set()).add(name)
    if len(volumes) > 1:
        problems.append("services mount different keys volumes: "
                        + "; ".join(f"{v}: {', '.join(sorted(s))}" for v, s in volumes.items()))
    runs = " ".join(v for k, v in instructions(DOCKERFILE.read_text(encoding="utf-8"))
                    if k == "RUN")
    if not re.search(rf"mkdir[^&]*{re.escape(default_keys)}", runs) or \
            not re.search(rf"chown[^&]*{re.escape(default_keys)}", runs):
        problems.append(f"Dockerfile: {default_keys} is not made and given to the image's user, "
                        "so a new volume mounted there is root's")
    return problems


def test_every_service_shares_one_approval_keyring() -> None:
    assert check_shared_keyring(load_compose()) == []


def _mounted(service: dict[str, Any], target: str) -> Path | None:
    """The repository file or folder `service` mounts at `target`."""
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if len(parts) >= 2 and parts[1] == target and parts[0].startswith("."):
            return (COMPOSE_FILE.parent / parts[0]).resolve()
    return None


def check_metrics(compose: dict[str, Any]) -> list[str]:
    """Prometheus scrapes every agent service (and only services that exist) on the port the
    agents serve on, with the shipped alert rules; Grafana is provisioned with a Prometheus
    data source at that service and a dashboard that parses and uses that data source."""
    services = compose["services"]
    prometheus, grafana = services.get("prometheus"), services.get("grafana")
    if prometheus is None or grafana is None:
        return ["no prometheus and grafana services"]
    problems: list[str] = []
    config_file = _mounted(prometheus, "/etc/prometheus/prometheus.yml")
    if config_file is None or not config_file.is_file():
        return ["prometheus mounts no prometheus.yml from the repository"]
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    agents = agent_services(compose)
    ports = {env_of(svc).get("COUNTERPOINT_METRICS_PORT") for svc in agents.values()}
    hosts = {env_of(svc).get("COUNTERPOINT_METRICS_HOST") for svc in agents.values()}
    if len(ports) != 1 or None in ports or hosts != {"0.0.0.0"}:
        problems.append(f"agents do not all serve metrics on one port on every address: "
                        f"ports {ports}, hosts {hosts}")
    scraped: set[str] = set()
    for job in config.get("scrape_configs") or []:
        for sd in job.get("dns_sd_configs") or []:
            if str(sd.get("port")) not in {str(p) for p in ports}:
                problems.append(f"{job.get('job_name')}: scrapes port {sd.get('port')}, the "
                                f"agents serve on {ports}")
            scraped |= set(sd.get("names") or [])
    if missing := set(agents) - scraped:
        problems.append(f"prometheus does not scrape {sorted(missing)}")
    if unknown := scraped - set(services):
        problems.append(f"prometheus scrapes services that do not exist: {sorted(unknown)}")
    rules = _mounted(prometheus, "/etc/prometheus/alerts.yml")
    if rules is None or not rules.is_file() or \
            "/etc/prometheus/alerts.yml" not in (config.get("rule_files") or []):
        problems.append("prometheus does not load the repository's alerts.yml")
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    dashboards = _mounted(grafana, "/var/lib/grafana/dashboards")
    if provisioning is None or dashboards is None:
        return [*problems, "grafana mounts no provisioning or dashboards folder"]
    sources = [d for f in sorted((provisioning / "datasources").glob("*.yml"))
               for d in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]]
    uids = {d["uid"] for d in sources if d.get("type") == "prometheus"
            and d.get("url") == "http://prometheus:9090"}
    if not uids:
        problems.append("grafana has no Prometheus data source at http://prometheus:9090")
    boards = sorted(dashboards.glob("*.json"))
    if not boards:
        problems.append("no dashboard JSON")
    for board in boards:
        used = set(re.findall(r'"uid": "([^"]+)"', board.read_text(encoding="utf-8")))
        json.loads(board.read_text(encoding="utf-8"))
        if used - uids - {"counterpoint"}:
            problems.append(f"{board.name}: uses data sources {sorted(used - uids)}")
    return problems


def test_prometheus_scrapes_every_agent_and_grafana_shows_it() -> None:
    assert check_metrics(load_compose()) == []


# -- the checks can fail ---------------------------------------------------------------------


def test_checks_catch_a_broken_compose(read_names: set[str]) -> None:
    good = load_compose()
    agents = default_agents()

    no_billing = copy.deepcopy(good)
    del no_billing["services"]["billing"]
    assert any("agent billing" in p for p in check_agents(no_billing, agents))
    assert any("scrapes services that do not exist: ['billing']" in p
               for p in check_metrics(no_billing))
    unscraped = copy.deepcopy(good)
    unscraped["services"]["auditor"] = {**good["services"]["billing"],
                                        "command": ["agent", "auditor"]}
    assert any("does not scrape ['auditor']" in p for p in check_metrics(unscraped))

    wrong = copy.deepcopy(good)
    wrong["services"]["billing"]["command"] = ["agent", "biling"]
    wrong["services"]["topics"]["command"] = ["topic"]
    problems = check_commands(wrong, agents)
    assert any("billing: runs `agent biling`" in p for p in problems), problems
    assert any("topics: `counterpoint topic` is not a command" in p for p in problems), problems

    env = copy.deepcopy(good)
    env["services"]["memory"]["environment"] = {**env_of(good["services"]["memory"]),
                                                "COUNTERPOINT_MEMORY_PATH": "/data/m.db",
                                                "COUNTERPOINT_MODEL_BILLINGS": "x",
                                                "COUNTERPOINT_MODEL_BILLING": "x"}
    problems = check_environment(env, read_names, (MODEL_PREFIX,), agents)
    assert problems == ["memory: COUNTERPOINT_MEMORY_PATH is set, and nothing in Counterpoint "
                        "reads it", f"memory: COUNTERPOINT_MODEL_BILLINGS names no agent "
                        f"(agents: {', '.join(agents)})"], problems

    pinned = copy.deepcopy(good)
    pinned["services"]["triage"]["container_name"] = "triage"
    pinned["services"]["triage"]["ports"] = ["8000:8000"]
    problems = check_agents(pinned, agents)
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

    split = copy.deepcopy(good)
    split["services"]["executor"]["volumes"] = []
    split["services"]["approvals"]["volumes"] = ["other-keys:/data/keys"]
    split["volumes"]["other-keys"] = None
    problems = check_shared_keyring(split)
    assert any(p.startswith("executor: no named volume") for p in problems), problems
    assert any("different keys volumes" in p for p in problems), problems


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
