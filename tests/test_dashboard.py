"""The Grafana dashboard (contrib/grafana/dispenser.json) asks only for metrics
docs/metrics.md lists (and the daemon serves: tests/e2e/test_metrics.py), and each of its
queries is PromQL that promtool parses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from dispenser.testing.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = json.loads((ROOT / "contrib" / "grafana" / "dispenser.json").read_text())
DOCUMENTED = set(re.findall(r"^\| `(dispenser_[a-z_]+)` \|",
                            (ROOT / "docs" / "metrics.md").read_text(), re.M))


def queries() -> list[str]:
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))
    walk(DASHBOARD["panels"])
    return found


def test_every_query_uses_documented_metrics() -> None:
    used = set()
    for expr in queries():
        for name in re.findall(r"\bdispenser_[a-z_]+", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used, "the dashboard asks for nothing"
    assert used <= DOCUMENTED, used - DOCUMENTED
    # The questions docs/metrics.md answers are on it.
    for name in ("dispenser_machine_state", "dispenser_held_orders",
                 "dispenser_robot_busy_seconds_total", "dispenser_picks_total",
                 "dispenser_api_request_duration_seconds",
                 "dispenser_journal_commit_duration_seconds", "dispenser_faults_latched"):
        assert name in used, name


def test_the_queries_are_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
