"""The package list is one list, and the Docker image installs from what its Dockerfile copies.

pyproject.toml's `[tool.setuptools] packages` is the only list of packages; the Makefile's
type-check tree and the Dockerfile follow it. The image test stages the build context exactly
as the Dockerfile's COPY lines take it (with .dockerignore applied as docker applies it), runs
the image's `pip install` offline into an empty folder, and imports every module from there,
with this repository out of the way. No Docker engine is needed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from tests.support.dockerfile import InstalledImage, sendable

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# Python package folders of the repository that are not installed.
NOT_INSTALLED = {"tests"}


def listed_packages() -> list[str]:
    packages: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]
    return packages


def folder_of(package: str) -> Path:
    _root, *parts = package.split(".")
    return REPO.joinpath(*parts)


def package_folders() -> set[str]:
    """Every folder of the repository Python would import as a package, as counterpoint.*."""
    found = set()
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] in NOT_INSTALLED:
            continue
        if all((REPO.joinpath(*rel.parts[:i]) / "__init__.py").is_file()
               for i in range(1, len(rel.parts))):
            found.add("counterpoint." + ".".join(rel.parts))
    return found


def installed_modules(site: Path) -> list[str]:
    return sorted(
        ".".join(p.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
        for p in (site / "counterpoint").rglob("*.py"))


def test_the_package_list_is_complete_and_every_entry_exists() -> None:
    listed = listed_packages()
    assert len(listed) == len(set(listed)), "a package is listed twice"
    assert all(folder_of(p).is_dir() for p in listed), [p for p in listed
                                                        if not folder_of(p).is_dir()]
    missing = package_folders() - set(listed)
    assert not missing, (f"package folders not in pyproject.toml's [tool.setuptools] packages "
                         f"(the image would lack them): {sorted(missing)}")
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"counterpoint": "."}


def test_no_other_file_keeps_a_package_list() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    for package in {p.split(".")[1] for p in listed_packages()}:
        assert f"COPY {package}" not in dockerfile, f"the Dockerfile lists {package} itself"
    tree = subprocess.run(["make", "-s", "-n", "typecheck-tree"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    assert sorted({p.split(".")[1] for p in listed_packages()}) == sorted(
        tree.split("for p in ", 1)[1].split(";", 1)[0].split()), tree


def test_the_image_installs_what_its_dockerfile_copies(
        image: Callable[[Path, Path], InstalledImage], tmp_path: Path) -> None:
    built = image(REPO, REPO / "Dockerfile")
    assert built.ok, f"`pip install .` fails in the image's build context:\n{built.why()}"
    for package in listed_packages():
        for module in folder_of(package).glob("*.py"):
            rel = module.relative_to(REPO)
            assert (built.site / "counterpoint" / rel).is_file(), f"{rel} is not installed"
    assert (built.site / "counterpoint" / "infra" / "examples" / "ticket_dual_intent.json"
            ).is_file()
    assert (built.site / "bin" / "counterpoint").is_file(), "no `counterpoint` command"
    # Every module imports from the installed copy alone, and the command line answers.
    script = (
        "import importlib, sys\n"
        "site = sys.argv[1]\n"
        "sys.path.insert(0, site)\n"
        "for name in sys.argv[2:]:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(site), (name, module.__file__)\n"
        "from counterpoint.infra.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    sys.exit(exc.code)\n")
    done = subprocess.run([sys.executable, "-c", script, str(built.site),
                           *installed_modules(built.site)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "usage: counterpoint" in done.stdout


def test_the_check_fails_for_a_dockerfile_that_leaves_a_package_out(
        image: Callable[[Path, Path], InstalledImage], tmp_path: Path) -> None:
    """The Dockerfile as it was: every package folder but client/ copied one by one."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim\n"
        "WORKDIR /tmp/counterpoint-src\n"
        "COPY pyproject.toml README.md ./\n"
        + "".join(f"COPY {p}/ {p}/\n" for p in ("agents", "bus", "infra", "schemas", "topics"))
        + "RUN pip install . \\\n    && rm -rf /tmp/counterpoint-src\n")
    built = image(REPO, dockerfile)
    assert not built.ok
    assert "client" in built.why()


def test_the_build_context_follows_dockerignore() -> None:
    files = sendable(REPO)
    assert "pyproject.toml" in files and "client/sdk.py" in files
    assert not any(f.startswith(("tests/", ".git/", ".venv/")) for f in files)
    assert not any("__pycache__" in f for f in files)
