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


# Modules `counterpoint agent NAME` has no use for at start: rich (it only logs), the approval
# commands' views and, with no metrics configured, the metrics SDK.
UNUSED = """
import sys
import counterpoint.infra.cli
import counterpoint.infra.runner
from counterpoint.infra.cli import build_parser
build_parser()
print(" ".join(m for m in ("counterpoint.infra.approvals_cli", "counterpoint.infra.progress",
                           "rich", "opentelemetry.sdk.metrics") if m in sys.modules))
"""


def test_the_agent_command_leaves_the_approval_views_and_the_metrics_sdk_unimported(
        tmp_path: Path) -> None:
    env = {"COUNTERPOINT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", UNUSED], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    assert out.stdout.split() == []


def test_an_mcp_tool_agent_imports_jsonschema_only_when_a_tool_is_first_called(
        tmp_path: Path) -> None:
    probe = ("import sys\nimport counterpoint.agents.tools.mcp_servers\n"
             "print('jsonschema' in sys.modules)\n")
    env = {"COUNTERPOINT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    assert out.stdout.split() == ["False"]
