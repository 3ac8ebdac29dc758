"""The alert rules and scrape config pass Prometheus's own checker and their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import prometheus_tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = prometheus_tool("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          cwd=PROMETHEUS_DIR)


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", "alerts.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_is_valid() -> None:
    result = _promtool("check", "config", "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_checker_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n"
    )

    result = _promtool("check", "rules", str(broken))

    assert result.returncode != 0
