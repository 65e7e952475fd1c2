"""Debian tools the integration tests drive (Alertmanager, Prometheus), installed on demand.

A tool that is missing is installed with apt-get when the tests run as root; without root or
apt, or when the install fails, the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest


def _installed(names: Sequence[str]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def debian_binary(package: str, names: Sequence[str]) -> str:
    """The first of `names` on PATH, installing Debian's `package` when none is."""
    found = _installed(names)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip(f"{package} is not installed and installing it needs root")
    if shutil.which("apt-get") is None:
        pytest.skip(f"{package} is not installed and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:  # a stale package list is the usual reason
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    found = _installed(names)
    if found is None:
        pytest.skip(f"could not install {package} with apt-get: "
                    + (done.stderr or done.stdout)[-500:])
    return found
