"""The shipped Prometheus alert rules, checked by Prometheus' own tool.

`promtool check rules` parses deploy/prometheus/alerts.yml as Prometheus would load it, and
`promtool test rules` runs tests/fixtures/prometheus/alerts_test.yml against it: series for a
stuck partition lag, a dead-letter rate, partial results and a silent agent, each expecting
its alert (with its labels and rendered text) and no alert for the healthy series beside it.
promtool comes with Debian's `prometheus` package, installed when missing (tests/support/debian.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.debian import debian_binary

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "fixtures" / "prometheus" / "alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_binary("prometheus", ("promtool",))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_the_alert_rules_load(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 rules found" in done.stdout


def test_each_alert_fires_on_its_condition_and_not_on_a_healthy_series(promtool: str) -> None:
    done = run(promtool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_is_caught(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 0.05", "> > 0.05"))
    assert run(promtool, "check", "rules", str(broken)).returncode != 0
