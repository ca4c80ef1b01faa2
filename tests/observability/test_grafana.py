"""deploy/grafana: the dashboard and its provisioning, checked without a Grafana server.

Every query of the dashboard (panels, the template variable, the annotations) names only series
that exist: the exporter's (`distbreaker.exporter.SERIES`, checked against a real scrape in
test_exporter.py) and the workers' OpenTelemetry metrics as Prometheus names them
(`_otel.PROMETHEUS`, checked against the real instruments in test_deploy.py). With promtool
installed, every query is also parsed by Prometheus's own parser (as a recording rule).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy import metric_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "distbreaker.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every PromQL query of the dashboard."""
    found = []
    for p in panels(doc):
        for t in p.get("targets", []):
            found.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for a in doc["annotations"]["list"]:
        if "expr" in a:
            found.append((f"annotation {a['name']!r}", a["expr"]))
    return found


def concrete(expr: str) -> str:
    """The query as Grafana sends it for one choice of the variables."""
    return expr.replace("$__rate_interval", "1m").replace("$service", ".*")


def test_dashboard_loads_and_every_query_names_an_existing_metric() -> None:
    """The JSON loads; each query names at least one metric and only metrics that exist."""
    doc = dashboard()
    assert doc["uid"] == "distbreaker-fleet" and doc["panels"]
    exported = metric_names()
    found = queries(doc)
    assert len(found) >= 15
    for where, expr in found:
        names = set(re.findall(r"\bdistbreaker_[a-z_]+", expr))
        assert names <= exported, (where, names - exported)
        assert names or re.search(r'\bup\{job="distbreaker-exporter"\}', expr), (where, expr)
    used = {n for _, e in found for n in re.findall(r"\bdistbreaker_[a-z_]+", e)}
    assert {
        "distbreaker_breaker_state",
        "distbreaker_breaker_failure_rate",
        "distbreaker_breaker_window_slow_calls",
        "distbreaker_breaker_open_count",
        "distbreaker_breaker_transitions_total",
        "distbreaker_calls_total",
        "distbreaker_bulkhead_in_use",
        "distbreaker_bulkhead_max_concurrent",
    } <= used  # fleet view: state, failure and slow rates, rejections, opens, bulkheads in use vs max


def test_dashboard_has_a_drill_down_and_transition_annotations() -> None:
    """A `service` variable (from the exporter's series) filters the per-breaker row, and the
    transitions are annotations."""
    doc = dashboard()
    (var,) = [v for v in doc["templating"]["list"] if v["name"] == "service"]
    assert "distbreaker_breaker_state" in var["query"]["query"] and var["includeAll"]
    drill = [e for w, e in queries(doc) if '"$service"' in e]
    assert len(drill) >= 5
    (notes,) = [a for a in doc["annotations"]["list"] if a.get("name") == "Transitions"]
    assert "distbreaker_breaker_transitions_total" in notes["expr"] and "{{to}}" in notes["titleFormat"]
    state_maps = [p for p in panels(doc) if p["type"] == "state-timeline"]
    assert state_maps
    for p in state_maps:
        (mapping,) = p["fieldConfig"]["defaults"]["mappings"]
        texts = {int(k): v["text"] for k, v in mapping["options"].items()}
        assert texts == {0: "closed", 1: "half_open", 2: "open", 3: "forced_open", 4: "disabled"}


def test_panels_use_the_provisioned_datasource() -> None:
    """Every panel and query names the datasource uid that provisioning creates; the dashboard
    provider reads the directory docker-compose.yml mounts."""
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    doc = dashboard()
    for p in panels(doc):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == source["uid"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == source["uid"], p["title"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "distbreaker.yml").read_text())["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    grafana = compose["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    exporter = compose["exporter"]["command"]
    assert exporter[exporter.index("exporter") + 1 :] == ["--bind", "0.0.0.0", "--port", "9839"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert {"job_name": "distbreaker-exporter", "static_configs": [{"targets": ["exporter:9839"]}]} in scrape


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus); queries checked by names only",
)
def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    """Prometheus's parser accepts every query (each one as a recording rule)."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)} for i, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
