"""deploy/: the Prometheus alert rules and docker-compose.yml (no Docker engine needed).

The rules are checked by `promtool` (check rules, their unit tests in alerts_test.yml, check
config) when it is installed (Debian: ``apt-get install prometheus``), and always by parsing:
every expression names only metrics the library exports, under the names Prometheus gives
them. The compose file is parsed, and every command it runs must exist: the `distbreaker` CLI
commands and options, and deploy/worker.py's arguments; the worker itself is run for a second.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from _obs import Otel, unique

from distbreaker import _otel

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
COMPOSE = ROOT / "docker-compose.yml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [r for g in load(PROM / "alerts.yml")["groups"] for r in g["rules"]]


def prometheus_name(name: str, unit: str, monotonic_sum: bool) -> str:
    """The OpenTelemetry -> Prometheus name (Collector / SDK exporter): dots to underscores, the
    unit "s" as _seconds (units in braces dropped), _total for monotonic sums."""
    out = name.replace(".", "_")
    if unit == "s":
        out += "_seconds"
    return out + "_total" if monotonic_sum else out


def test_prometheus_names_match_the_instruments(otel: Otel, redis_url: str, prefix: str) -> None:
    """_otel.PROMETHEUS is what Prometheus calls the instruments the library really makes."""
    from opentelemetry.sdk.metrics.export import Sum

    from distbreaker import Breaker, BreakerConfig, connect

    b = Breaker(unique(), connect(redis_url, timeout=1), BreakerConfig(minimum_calls=1), prefix=prefix, listen=False)
    b.call(lambda: None)
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)  # a transition
    dead = Breaker(unique(), connect("redis://127.0.0.1:1/0"), listen=False)
    dead.call(lambda: None)  # a Redis error
    data = otel.reader.get_metrics_data()
    assert data is not None
    found = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == _otel.METER_NAME
            for m in sm.metrics:
                found[m.name] = prometheus_name(m.name, m.unit or "", isinstance(m.data, Sum) and m.data.is_monotonic)
    assert found == _otel.PROMETHEUS
    b.close()
    dead.close()


def metric_names() -> set[str]:
    """Every series name Prometheus gets: the workers' OpenTelemetry metrics (through the
    Collector) and the exporter's."""
    from distbreaker.exporter import SERIES

    exported = set(_otel.PROMETHEUS.values()) | set(SERIES)
    hist = _otel.PROMETHEUS[_otel.REDIS_DURATION]
    return exported | {hist + "_bucket", hist + "_sum", hist + "_count"}


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    """Every rule has an expr, a for, a severity and a summary, and names only exported metrics."""
    exported = metric_names()
    found = rules()
    assert {r["alert"] for r in found} >= {
        "DistbreakerOpenTooLong",
        "DistbreakerFlapping",
        "DistbreakerRedisErrors",
        "DistbreakerFailureRateHigh",
        "DistbreakerRejectionRateHigh",
        "DistbreakerReopening",
        "DistbreakerForcedStateOld",
        "DistbreakerExporterDown",
    }
    used = set()
    for rule in found:
        assert rule["expr"].strip() and re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        names = set(re.findall(r"\bdistbreaker_[a-z_]+", rule["expr"]))
        if rule["alert"] == "DistbreakerExporterDown":  # Prometheus's own `up` of the exporter's job
            assert re.search(r'\bup\{job="distbreaker-exporter"\}', rule["expr"]) and not names, rule
            assert "distbreaker-exporter" in {j["job_name"] for j in load(PROM / "prometheus.yml")["scrape_configs"]}
            continue
        assert names and names <= exported, (rule["alert"], names - exported)
        used |= names
    assert {
        "distbreaker_state",
        "distbreaker_transitions_total",
        "distbreaker_redis_errors_total",
        "distbreaker_breaker_state",
        "distbreaker_breaker_transitions_total",
    } <= used
    tested = {t["alertname"] for case in load(PROM / "alerts_test.yml")["tests"] for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for r in found}, "every alert has a promtool unit test"
    config = load(PROM / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus); the rules are checked by parsing only",
)
def test_alert_rules_pass_promtool() -> None:
    """promtool: the rules are valid, their unit tests pass, and prometheus.yml loads them."""
    for args in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        proc = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


# -- docker-compose.yml --------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    doc = load(COMPOSE)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def worker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_worker", ROOT / "deploy" / "worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_cli(args: list[str]) -> None:
    """`args` (after "distbreaker") parse as global options, a command and its options."""
    from distbreaker_cli.app import cli

    probe = cli.make_context("distbreaker", ["status"], resilient_parsing=True)
    names = set(cli.list_commands(probe))
    at = next((i for i, a in enumerate(args) if a in names), None)
    assert at is not None, f"no distbreaker command in {args} (commands: {sorted(names)})"
    ctx = cli.make_context("distbreaker", args[: at + 1])  # raises on an unknown global option
    command = cli.get_command(ctx, args[at])
    assert command is not None
    command.make_context(args[at], args[at + 1 :], parent=ctx)  # raises on an unknown option or bad value


def test_compose_file_shape() -> None:
    """Redis 7, several workers sharing one breaker and one Redis, a Collector and Prometheus."""
    services = compose()["services"]
    assert str(services["redis"]["image"]).startswith("redis:7")
    workers = {name: argv(s) for name, s in services.items() if "deploy/worker.py" in argv(s)}
    assert len(workers) >= 3
    shared = {(a[a.index("--url") + 1], a[a.index("--service") + 1]) for a in workers.values()}
    assert shared == {("redis://redis:6379/0", "payments")}
    images = {str(s.get("image", "")).split(":")[0] for s in services.values()}
    assert {"otel/opentelemetry-collector-contrib", "prom/prometheus"} <= images
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_every_compose_command_exists() -> None:
    """Each command the compose file runs is a real distbreaker CLI command or worker invocation,
    or the image's own server with a config file that exists here."""
    services = compose()["services"]
    seen = set()
    for name, service in services.items():
        args = argv(service)
        if not args:
            continue
        image = str(service.get("image", ""))
        if args[0] == "distbreaker":
            check_cli(args[1:])
        elif args[0] == "python":
            script = ROOT / args[1]
            assert script.is_file(), f"{name}: {args[1]} does not exist"
            assert args[1] == "deploy/worker.py", f"{name}: unexpected script {args[1]}"
            worker_module().build_parser().parse_args(args[2:])  # SystemExit on a bad argument
        elif image.startswith("redis:"):
            assert args[0] == "redis-server"
        elif image.startswith("otel/"):
            config = ROOT / "deploy" / "otel-collector.yaml"
            assert args == ["--config=/etc/otelcol/config.yaml"] and "prometheus" in load(config)["exporters"]
        elif image.startswith("prom/prometheus"):
            assert "--config.file=/etc/prometheus/prometheus.yml" in args and (PROM / "prometheus.yml").is_file()
        else:
            pytest.fail(f"{name}: a command this test does not know: {args}")
        seen.add(args[0])
    assert {"distbreaker", "python"} <= seen


def test_dockerfile_copies_what_exists() -> None:
    """deploy/Dockerfile's COPY sources are in the repository."""
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_the_compose_worker_runs(otel: Otel, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/worker.py makes calls through the shared breaker for --duration seconds (with an
    in-memory SDK in place of its OTLP exporter)."""
    worker = worker_module()

    class Provider:
        def shutdown(self) -> None:
            pass

    monkeypatch.setattr(worker, "_setup_metrics", lambda endpoint, interval: Provider())
    service = unique("payments")
    worker.main(
        [
            "--url",
            redis_url,
            "--prefix",
            prefix,
            "--service",
            service,
            "--rate",
            "500",
            "--period",
            "1",
            "--duration",
            "1",
        ]
    )
    calls = otel.values(_otel.CALLS, service)
    assert sum(calls.values()) > 20
    assert any(dict(k)["outcome"] == "failure" for k in calls)


def test_worker_help_runs_without_the_sdk_exporters() -> None:
    """The worker's --help needs neither the SDK nor the OTLP exporter (they are imported in main)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "worker.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "--url" in proc.stdout
