"""deploy/k8s: every overlay renders with kubectl's kustomize and validates strictly against the Kubernetes API
schemas of 1.30 and 1.32 (kubernetes-validate, offline); and the invariants that break quietly hold."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bench.serve import free_port
from server.app import END_SECONDS
from server.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "k8s" / "overlays").iterdir())
VERSIONS = ("1.30.0", "1.32.0")

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


def rendered(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_there_are_a_dev_and_a_production_overlay() -> None:
    assert {"dev", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_strictly(overlay: str, version: str) -> None:
    for doc in rendered(overlay):
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = one(rendered("dev"), "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pods_grace_covers_the_pause_and_the_drain(overlay: str) -> None:
    pod = one(rendered(overlay), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(env(container)["WAVENET_GRACE"])
    assert pod["terminationGracePeriodSeconds"] >= pause + drain + END_SECONDS + 2  # and a margin to exit


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_containers_grpc_port_and_the_image_is_composes(overlay: str) -> None:
    docs = rendered(overlay)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port
    service = one(docs, "Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: clients balance over the pods themselves
    compose = (ROOT / "docker-compose.yml").read_text()
    assert re.search(rf"image: \$\{{WAVENET_IMAGE:-{re.escape(container['image'])}\}}", compose)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_autoscaler_reads_gauges_the_server_exports() -> None:
    docs = rendered("production")
    hpa = one(docs, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "wavenet_stream_utilisation"
    rule = (ROOT / "docs" / "deploy.md").read_text()  # prometheus-adapter's rule makes it from two gauges
    query = rule.split("wavenet_stream_utilisation", 1)[1].split("```", 2)[1].split("metricsQuery", 1)[1]
    gauges = set(re.findall(r"wavenet_\w+", query))
    metrics = Metrics()
    port = free_port()
    metrics.capacity.labels("default").set(6)
    metrics.active.labels("default").set(2)
    metrics.serve(port, "127.0.0.1")
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    exported = set(re.findall(r"^(wavenet_\w+?)(?:_total)?\{", scraped, flags=re.M))
    assert gauges and gauges <= exported, (gauges, exported)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300  # cautious down
