"""The Docker image's install step, reproduced without Docker.

`docker build` sends the build context (its folder minus what `.dockerignore` excludes), the
Dockerfile's COPY lines put parts of it into the image, and `RUN pip install X` installs from
WORKDIR. `stage` does the same into an empty folder standing for the image's `/`, matching
`.dockerignore` with docker's own code (the `docker` SDK), and `install` runs that pip
install offline (no index, no build isolation) into a target folder, so a test installs
exactly what the image would, with no Docker engine.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from docker.utils.build import exclude_paths


class UnsupportedDockerfile(Exception):
    """The Dockerfile uses something this reproduction does not model; extend it, do not skip."""


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continued lines, too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def sendable(context: Path, dockerfile: str = "Dockerfile") -> set[str]:
    """Files `docker build` sends from `context`, as POSIX paths relative to it."""
    ignore = context / ".dockerignore"
    patterns: list[str] = []
    if ignore.is_file():
        # As docker's own client reads it: stripped lines, blank ones and comments dropped.
        patterns = [line.strip() for line in ignore.read_text(encoding="utf-8").splitlines()]
        patterns = [p for p in patterns if p and not p.startswith("#")]
    return {p for p in exclude_paths(str(context), patterns, dockerfile=dockerfile)
            if (context / p).is_file()}


def _copy_args(args: str) -> tuple[list[str], str]:
    tokens = [str(t) for t in json.loads(args)] if args.startswith("[") else shlex.split(args)
    words = []
    for token in tokens:
        if token.startswith("--from"):
            raise UnsupportedDockerfile(f"COPY {args}: copies from another stage or image")
        if not token.startswith("--"):  # --chown, --chmod, --link change no file's content
            words.append(token)
    if len(words) < 2:
        raise UnsupportedDockerfile(f"COPY {args}: expected SOURCE... DEST")
    return words[:-1], words[-1]


def _matches(source: str, files: set[str]) -> dict[str, str]:
    """context file -> its path relative to what `source` names (a file, folder or glob)."""
    pattern = os.path.normpath(source).lstrip("/")
    if pattern == ".":
        return {f: f for f in files}
    out = {}
    for f in files:
        if f == pattern or fnmatch.fnmatchcase(f, pattern):
            out[f] = PurePosixPath(f).name
        elif f.startswith(pattern + "/"):
            out[f] = f[len(pattern) + 1:]  # a folder's contents, not the folder itself
        else:
            for parent in PurePosixPath(f).parents:
                if str(parent) != "." and fnmatch.fnmatchcase(str(parent), pattern):
                    out[f] = str(PurePosixPath(f).relative_to(parent))
                    break
    return out


def stage(context: Path, dockerfile: Path, root: Path) -> Path:
    """Copy what the Dockerfile's COPY lines take from the build context under `root` (the
    image's `/`); return the folder its `RUN pip install` installs from."""
    inside = dockerfile.resolve().is_relative_to(context.resolve())
    files = sendable(context, os.path.relpath(dockerfile, context) if inside else "Dockerfile")
    workdir = PurePosixPath("/")
    stages = 0
    install_from: PurePosixPath | None = None
    for keyword, args in instructions(dockerfile.read_text(encoding="utf-8")):
        if keyword == "FROM":
            stages += 1
            if stages > 1:
                raise UnsupportedDockerfile("more than one stage")
        elif keyword == "WORKDIR":
            workdir = workdir / args  # an absolute WORKDIR replaces the current one
        elif keyword == "ADD":
            raise UnsupportedDockerfile(f"ADD {args}: use COPY")
        elif keyword == "COPY":
            sources, dest = _copy_args(args)
            target = workdir / dest
            into_folder = dest.endswith("/") or len(sources) > 1
            for source in sources:
                found = _matches(source, files)
                if not found:
                    raise FileNotFoundError(f"COPY {args}: {source} is not in the build "
                                            f"context (missing, or excluded by .dockerignore)")
                for path, rel in found.items():
                    single_file = path == os.path.normpath(source) and not into_folder
                    dest_path = target if single_file else target / rel
                    out = root / dest_path.relative_to("/")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / path, out)
        elif keyword == "RUN":
            found_pip = re.search(r"\bpip install\s+(?:-\S+\s+)*(\S+)", args)
            if found_pip is not None:
                install_from = workdir / found_pip[1]
    if install_from is None:
        raise UnsupportedDockerfile("no `RUN pip install SOURCE` line")
    return root / install_from.relative_to("/")


def install(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """`pip install SOURCE` as the image runs it, into `target`, offline: no index, no build
    isolation (the test environment's setuptools builds it), no dependencies (the test
    environment has them)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, env=env, check=False)


@dataclass(frozen=True)
class InstalledImage:
    """What the image's install step left: pip's outcome and the folder it installed into."""

    pip: subprocess.CompletedProcess[str]
    site: Path

    @property
    def ok(self) -> bool:
        return self.pip.returncode == 0

    def why(self) -> str:
        return (self.pip.stdout + self.pip.stderr)[-4000:]


def build_image(context: Path, dockerfile: Path, work: Path) -> InstalledImage:
    """Stage the build context as the Dockerfile copies it and run its pip install."""
    source = stage(context, dockerfile, work / "root")
    return InstalledImage(install(source, work / "site"), work / "site")
