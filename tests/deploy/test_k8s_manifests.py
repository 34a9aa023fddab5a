"""deploy/k8s/ against the Kubernetes API schemas (kubernetes-validate, from the package index) and
against each other: what a schema cannot see (selectors that select nothing, a probe on a port the
container does not open, a DNS name HAProxy cannot resolve) is checked here by reading the files.

The timing (drain notice vs HAProxy's check, grace vs notice + drain) is tests/deploy/test_fleet_manifests.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# 1.27: the oldest release with the native gRPC probe GA (the readiness probe below); and the newest
# schemas the installed kubernetes-validate carries.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def documents() -> list[tuple[str, dict]]:
    return [(f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
            for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict:
    return next(doc for _, doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def pod_spec(deployment: str) -> dict:
    return find("Deployment", deployment)["spec"]["template"]["spec"]


def env_list(container: dict) -> list[dict]:
    return container.get("env", [])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("where,doc", documents(), ids=[where for where, _ in documents()])
def test_every_manifest_passes_the_kubernetes_schema_strictly(where, doc, version):
    """--strict: an unknown or misspelt field fails too (Kubernetes would drop it silently)."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{where} against {version}: {'.'.join(map(str, err.path))}: {err.message}")


def test_the_kustomization_names_only_files_that_exist():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert all((K8S / resource).is_file() for resource in kustomization["resources"])


def test_selectors_select_the_pods_and_services_target_their_ports():
    deployments = [doc for _, doc in documents() if doc["kind"] == "Deployment"]
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for where, doc in documents():
        if doc["kind"] not in ("Service", "PodDisruptionBudget"):
            continue
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        selected = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"{where} selects {len(selected)} Deployments"
        if doc["kind"] == "Service":
            ports = {p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in doc["spec"]["ports"]} <= ports, where
    assert {d["metadata"]["name"] for d in deployments} == {
        doc["metadata"]["name"] for _, doc in documents() if doc["kind"] == "PodDisruptionBudget"}, \
        "every Deployment has a PodDisruptionBudget"


def test_readiness_is_the_native_grpc_health_probe_and_liveness_does_not_read_health():
    """Readiness: grpc.health.v1 on the gRPC port (NOT_SERVING while starting, degraded or
    draining). Liveness must not be /health: it is 503 during a drain, and a liveness failure would
    kill the pod mid-drain, losing its streams' finals."""
    appliance = pod_spec("stt-appliance")["containers"][0]
    grpc_port = next(p["containerPort"] for p in appliance["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe"):
        assert appliance[probe]["grpc"]["port"] == grpc_port == 50051, probe
        assert appliance[probe]["grpc"].get("service", "") == ""  # the server's overall health
    liveness = appliance["livenessProbe"]
    assert "/health" not in str(liveness.get("httpGet", {}).get("path", "")), "liveness would kill a draining pod"


def test_the_ticket_secret_comes_from_a_secret_that_is_not_committed():
    """Every replica reads the same STT_AUTH_SESSION_TICKET_SECRET from one Secret, created by hand
    (appliance.yaml's header, docs/fleet.md): a committed placeholder would be a public signing key
    in every fleet that forgot to replace it. Not optional: without it a pod would boot with a
    random secret and refuse its siblings' tickets, so it must not start at all."""
    assert not [where for where, doc in documents() if doc["kind"] == "Secret"]
    appliance = pod_spec("stt-appliance")["containers"][0]
    ref = next(e for e in env_list(appliance) if e["name"] == "STT_AUTH_SESSION_TICKET_SECRET")["valueFrom"]
    ref = ref["secretKeyRef"]
    assert not ref.get("optional", False)
    header = (K8S / "appliance.yaml").read_text()
    fleet_doc = (K8S.parents[1] / "docs" / "fleet.md").read_text()
    create = f"create secret generic {ref['name']} --from-literal={ref['key']}="
    assert create in header and create in fleet_doc


def test_haproxy_resolves_the_headless_service_by_its_fully_qualified_name():
    """HAProxy's resolvers send the configured name as is: they do not apply resolv.conf's search
    list (checked against Debian's 2.6 with a DNS server logging its queries), so a bare Service
    name would leave every server without an address. The name is built from the pod's own
    namespace ($(VAR) expands only variables listed before it)."""
    nodes = find("Service", "stt-appliance-nodes")
    assert nodes["spec"]["clusterIP"] == "None"  # one A record per ready pod, not one virtual IP
    env = env_list(pod_spec("stt-balancer")["containers"][0])
    names = [e["name"] for e in env]
    fleet_nodes = next(e["value"] for e in env if e["name"] == "STT_FLEET_NODES")
    expected = rf"{nodes['metadata']['name']}\.\$\(POD_NAMESPACE\)\.svc\.[a-z0-9.-]+[a-z]"
    assert re.fullmatch(expected, fleet_nodes), fleet_nodes
    namespace = next(e for e in env if e["name"] == "POD_NAMESPACE")
    assert namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert names.index("POD_NAMESPACE") < names.index("STT_FLEET_NODES")


def test_a_rolling_update_never_runs_below_the_replica_count():
    strategy = find("Deployment", "stt-appliance")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert find("PodDisruptionBudget", "stt-appliance")["spec"]["maxUnavailable"] == 1
