"""An agent process imports only what it uses: every one of them pays for each import at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# What `counterpoint agent NAME` loads before it builds its agent, and the settings it reads.
PROBE = """
import sys
import counterpoint.infra.cli
import counterpoint.infra.runner
from counterpoint.infra.settings import Settings
Settings()
print(" ".join(m for m in ("httpx", "starlette", "anthropic") if m in sys.modules))
"""


def test_settings_and_the_agent_command_import_no_http_client_or_web_framework(
        tmp_path: Path) -> None:
    env = {"COUNTERPOINT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    # httpx: only the webhooks agent posts; starlette: only the gateway; anthropic: on first call.
    assert out.stdout.split() == []
