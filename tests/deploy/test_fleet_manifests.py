"""The fleet's deployment files agree with each other and with the balancer's timing.

The numbers that make a drain lose nothing live in three places: HAProxy's health check (how soon a
node that fails /health leaves the rotation), the nodes' `STT_SERVER_DRAIN_NOTICE_SEC` (how long a
SIGTERMed node keeps taking calls while failing it), and the stop grace (notice + drain must fit
before the orchestrator's SIGKILL). Schemas are checked by scripts/lint-deploy.sh.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
K8S = REPO / "deploy" / "k8s"
DECODE_TIMEOUT_SEC = yaml.safe_load((REPO / "appliance" / "default_config" / "server.yaml").read_text()
                                    )["server"]["decode_timeout_sec"]


def seconds(text: str) -> float:
    value = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    assert value, text
    return float(value[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 0.001}[value[2]]  # HAProxy: bare = ms


def haproxy_takes_a_failing_node_out_within_sec() -> float:
    default_server = re.search(r"^\s*default-server (.*)$", HAPROXY_CFG, flags=re.M)[1].split()
    option = dict(zip(default_server[::2], default_server[1::2], strict=False))
    # The first failure is seen within `inter`, each further one within `fastinter`.
    return seconds(option["inter"]) + (int(option["fall"]) - 1) * seconds(option.get("fastinter", option["inter"]))


def k8s_documents() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def appliance_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_drain_notice_outlasts_the_balancers_health_check_everywhere():
    out_within = haproxy_takes_a_failing_node_out_within_sec()
    compose = yaml.safe_load((REPO / "compose.fleet.yaml").read_text())
    notices = {"compose.fleet.yaml": float(compose["services"]["stt"]["environment"]["STT_SERVER_DRAIN_NOTICE_SEC"])}
    grace = {"compose.fleet.yaml": seconds(compose["services"]["stt"]["stop_grace_period"])}
    for doc in k8s_documents():
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "stt-appliance":
            pod = doc["spec"]["template"]["spec"]
            notices["k8s"] = float(appliance_env(pod["containers"][0])["STT_SERVER_DRAIN_NOTICE_SEC"])
            grace["k8s"] = pod["terminationGracePeriodSeconds"]
    assert set(notices) == {"compose.fleet.yaml", "k8s"}
    for where, notice in notices.items():
        assert notice >= out_within + 1.0, f"{where}: the node stops taking calls before HAProxy looks away"
        assert grace[where] >= notice + DECODE_TIMEOUT_SEC, f"{where}: SIGKILL could cut the drain short"


def test_the_kustomization_applies_every_manifest_and_the_ports_match_the_balancer():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    check_port = re.search(r"server-template .* port (\d+)", HAPROXY_CFG)[1]
    grpc_port = re.search(r'server-template \S+ \S+ "\$\{STT_FLEET_NODES-\w+\}:(\d+)"', HAPROXY_CFG)[1]
    docs = k8s_documents()
    nodes = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "stt-appliance-nodes")
    assert nodes["spec"]["clusterIP"] == "None"  # DNS returns every pod: HAProxy balances per call
    assert {p["port"] for p in nodes["spec"]["ports"]} == {int(check_port), int(grpc_port)}
    balancer = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "stt-balancer")
    haproxy = balancer["spec"]["template"]["spec"]["containers"][0]
    assert appliance_env(haproxy)["STT_FLEET_NODES"].split(".")[0] == "stt-appliance-nodes"  # its FQDN
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PodDisruptionBudget"}
