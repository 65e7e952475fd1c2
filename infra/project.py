"""The project file, `counterpoint.toml`: which agents to run, their settings, and samples.

    [project]
    name = "sales_outreach"          # consumer groups are PROJECT.AGENT
    path = ["."]                     # folders `use` imports from, relative to this file
    results = ["sales.outreach"]     # topics whose events are the pipeline's final results

    [agents.researcher]
    use = "outreach:researcher"      # an Agent, or a factory (AgentContext) -> Agent
    replicas = 2                     # processes `counterpoint up` starts
    model = "claude-haiku-4-5"       # COUNTERPOINT_MODEL_RESEARCHER still overrides it
    settings = { depth = 2 }         # the factory's ctx.settings

    [[samples]]                      # what `counterpoint demo` publishes
    topic = "sales.leads"
    file = "samples/acme.json"       # or value = { ... }

It is found at `--config FILE`, else `$COUNTERPOINT_CONFIG`, else `./counterpoint.toml`. With
none, the built-in project runs: the ticket and alert pipeline (agents/catalog.py), under the
names and consumer groups it always had. Any mistake in the file stops the command before
anything starts, with the file, the key and the problem (`ProjectError`).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from counterpoint.agents.catalog import BUILTIN
from counterpoint.agents.loading import IMPORT_STRING
from counterpoint.bus.agent import DEFAULT_GROUP_PREFIX, NAME_PATTERN
from counterpoint.topics.registry import SYNTHESIS_RESULTS

FILE_NAME: Final = "counterpoint.toml"
BUILTIN_ORIGIN: Final = "the built-in project"


class ProjectError(ValueError):
    """A project file that cannot be used: the message names the file, the key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSection(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN.pattern)]
    path: list[str] = Field(default_factory=lambda: ["."])
    results: list[str] = Field(default_factory=list)


class AgentEntry(_Strict):
    use: Annotated[str, Field(pattern=IMPORT_STRING.pattern)]
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    model: Annotated[str, Field(min_length=1)] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class Sample(_Strict):
    topic: Annotated[str, Field(min_length=1)]
    value: dict[str, Any] | None = None
    file: str | None = None
    key: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Sample:
        if (self.value is None) == (self.file is None):
            raise ValueError("give exactly one of value (an inline table) or file (a JSON "
                             "file, relative to the project file)")
        return self


class ProjectFile(_Strict):
    project: ProjectSection
    agents: Annotated[dict[str, AgentEntry], Field(min_length=1)]
    samples: list[Sample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _agent_names(self) -> ProjectFile:
        for name in self.agents:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"agent name {name!r}: use a letter, then letters, digits, "
                                 "., _ or - (it names a consumer group, processes and logs)")
        return self


@dataclass(frozen=True)
class Project:
    """A loaded project: the file it came from (None: built in) and what it declares."""

    name: str
    agents: Mapping[str, AgentEntry]
    results: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()
    file: Path | None = None
    paths: tuple[Path, ...] = ()
    group_prefix: str = field(default=DEFAULT_GROUP_PREFIX)

    @property
    def origin(self) -> str:
        return str(self.file) if self.file is not None else BUILTIN_ORIGIN

    def where(self, *keys: str) -> str:
        """`FILE: agents.researcher.use`, for messages."""
        return f"{self.origin}: {'.'.join(keys)}"

    @property
    def folder(self) -> Path:
        return self.file.parent if self.file is not None else Path.cwd()

    def importable(self) -> None:
        """Put the project's folders (and the working directory) on the import path."""
        for folder in (*self.paths, Path.cwd()):
            text = str(folder)
            if text not in sys.path:
                sys.path.insert(0, text)

    def sample_bytes(self, sample: Sample, index: int) -> bytes:
        import orjson

        if sample.value is not None:
            return orjson.dumps(sample.value)
        assert sample.file is not None
        path = self.folder / sample.file
        try:
            raw = path.read_bytes()
            orjson.loads(raw)
        except OSError as exc:
            raise ProjectError(f"{self.where('samples', str(index), 'file')}: cannot read "
                               f"{path}: {exc.strerror}") from exc
        except orjson.JSONDecodeError as exc:
            raise ProjectError(f"{self.where('samples', str(index), 'file')}: {path} is not "
                               f"JSON: {exc}") from exc
        return raw


def builtin_project() -> Project:
    """Today's pipeline, as if from a file: every built-in agent once."""
    return Project(name=DEFAULT_GROUP_PREFIX,
                   agents={name: AgentEntry(use=spec) for name, spec in BUILTIN.items()},
                   results=(SYNTHESIS_RESULTS.name,))


def find_project(explicit: str | Path | None, env_value: str | Path | None = None,
                 cwd: Path | None = None) -> Project:
    """--config, else COUNTERPOINT_CONFIG, else ./counterpoint.toml, else the built-in one."""
    for given in (explicit, env_value):
        if given is not None and str(given).strip():
            return load_project(Path(given))
    here = (cwd or Path.cwd()) / FILE_NAME
    if here.is_file():
        return load_project(here)
    return builtin_project()


def load_project(path: Path) -> Project:
    path = path.expanduser().absolute()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read the project file: "
                           f"{exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProjectError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path}: not valid TOML: {exc}") from exc
    try:
        parsed = ProjectFile.model_validate(data)
    except ValidationError as exc:
        raise ProjectError("\n".join(_describe(path, e) for e in exc.errors())) from exc
    folder = path.parent
    paths = tuple((folder / p).resolve() for p in parsed.project.path)
    for i, p in enumerate(paths):
        if not p.is_dir():
            raise ProjectError(f"{path}: project.path.{i}: {p} is not a folder")
    return Project(name=parsed.project.name, agents=parsed.agents,
                   results=tuple(parsed.project.results), samples=tuple(parsed.samples),
                   file=path, paths=paths, group_prefix=parsed.project.name)


_KNOWN: Final[Mapping[str, type[BaseModel]]] = {
    "": ProjectFile, "project": ProjectSection, "agents.*": AgentEntry, "samples.*": Sample}


def _describe(path: Path, error: Any) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(file)"
    if error["type"] == "extra_forbidden":
        parent = ".".join("*" if i >= 1 and loc[0] in ("agents", "samples") and i == 1 else part
                          for i, part in enumerate(loc[:-1]))
        known = _KNOWN.get(parent)
        allowed = f" (known keys: {', '.join(known.model_fields)})" if known else ""
        return f"{path}: {key}: unknown key{allowed}"
    problem = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "string_pattern_mismatch" and loc[-1] == "use":
        problem = "expected an import string MODULE:ATTRIBUTE, e.g. 'mypackage.agents:writer'"
    elif error["type"] == "missing":
        problem = "required key missing"
    got = error.get("input")
    shown = "" if error["type"] in ("missing", "extra_forbidden") or isinstance(
        got, dict | list) else f" (got {got!r})"
    return f"{path}: {key}: {problem}{shown}"
