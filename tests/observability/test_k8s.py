"""deploy/k8s: the exporter's and the example worker's manifests, parsed (no cluster, no kubectl),
and the worker's health endpoints run against a real server.

The essentials asserted: the image is the one deploy/Dockerfile builds for the compose stack;
the commands are valid (`distbreaker` CLI options, deploy/worker.py arguments); every port a
probe, a Service or the ServiceMonitor names exists, and the numbers agree with the command;
selectors match the pod labels; the Redis URL comes from a Secret; the Service is named after
the job the alerts watch.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from _obs import wait_for
from test_deploy import check_cli, compose, worker_module

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def documents(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    out = {d["kind"]: d for d in docs}
    assert len(out) == len(docs), "one document per kind"
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d
    return out


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items(), "the selector matches the pods"
    (c,) = spec["template"]["spec"]["containers"]
    assert c["image"] == compose()["services"]["worker-1"]["image"]  # distbreaker-demo:local, deploy/Dockerfile
    assert (ROOT / "deploy" / "Dockerfile").is_file()
    env = {e["name"]: e for e in c.get("env", [])}
    assert "secretKeyRef" in env["DISTBREAKER_URL"]["valueFrom"], "the Redis URL (a password) comes from a Secret"
    return c


def port_of(c: dict[str, Any], name_or_number: Any) -> int:
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if isinstance(name_or_number, int):
        assert name_or_number in ports.values()
        return name_or_number
    return ports[name_or_number]


def test_exporter_deployment_service_and_servicemonitor() -> None:
    """The exporter listens on all addresses on the port its Service, annotations, probes and
    ServiceMonitor name; the Service is the alerts' job."""
    docs = documents("exporter.yaml")
    assert docs.keys() == {"Deployment", "Service", "ServiceMonitor"}
    c = container(docs["Deployment"])
    args = c["command"]
    assert args[0] == "distbreaker"
    check_cli(args[1:])
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--bind") + 1] == "0.0.0.0"
    assert port_of(c, "metrics") == port
    assert c["readinessProbe"]["httpGet"]["path"] == "/metrics"
    assert port_of(c, c["readinessProbe"]["httpGet"]["port"]) == port
    assert port_of(c, c["livenessProbe"]["tcpSocket"]["port"]) == port
    assert docs["Deployment"]["spec"]["replicas"] == 1

    service = docs["Service"]
    assert service["metadata"]["name"] == "distbreaker-exporter"  # job="distbreaker-exporter" in alerts.yml
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (sport,) = service["spec"]["ports"]
    assert port_of(c, sport["targetPort"]) == port and sport["name"] == "metrics"
    notes = service["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) == port
    assert notes["prometheus.io/path"] == "/metrics"

    monitor = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == sport["name"] and endpoint["path"] == "/metrics"


def test_worker_deployment_probes_its_health_server() -> None:
    """The example worker runs deploy/worker.py with --health-port; readiness is /readyz and
    liveness /healthz on that port."""
    docs = documents("worker.yaml")
    c = container(docs["Deployment"])
    args = c["command"]
    assert args[:2] == ["python", "deploy/worker.py"]
    parsed = worker_module().build_parser().parse_args(args[2:])
    assert parsed.health_port == port_of(c, "health")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_of(c, c[probe]["httpGet"]["port"]) == parsed.health_port


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as page:
            return page.status, page.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_worker_readiness_follows_the_redis_connection(redis_url: str) -> None:
    """/readyz is 200 while Redis answers PING and 503 when it does not; /healthz is 200 either way."""
    from distbreaker import connect

    worker = worker_module()
    for url, ready in ((redis_url, 200), ("redis://127.0.0.1:1/0", 503)):
        client = connect(url, timeout=0.5)
        readiness = worker.Readiness(client).start()
        server = worker.serve_health("127.0.0.1", 0, readiness)
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            wait_for("a first PING", lambda: readiness.ok_at is not None or readiness.error != "no PING yet")
            code, body = get(base + "/readyz")
            assert code == ready, body
            assert get(base + "/healthz") == (200, "ok\n")
            assert get(base + "/other")[0] == 404
        finally:
            server.shutdown()
            server.server_close()
            readiness.stop()
            client.close()
