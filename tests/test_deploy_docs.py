"""Every manifest in docs/deploy-jupyterhub.md is valid and goes into a namespace as written.

Each YAML block with a ``kind`` is validated strictly against Kubernetes' schema and created
on kubesim as an admin would (``kubectl create``), in a namespace that enforces PodSecurity
"restricted"; a Deployment's pod template goes through the API server's admission with a dry
run (kubesim serves no Deployments and no Services: those two are schema-checked only). The
values.yaml block's NetworkPolicy egress rules are checked as the NetworkPolicy z2jh makes of
them, and its extraConfig must compile.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

from test_kubernetes import start_sim

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy-jupyterhub.md"
KUBE_VERSION = "1.33.0"
NOT_SERVED = {"Service"}  # kubesim has no Services: schema only


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.DOTALL)


def _manifests() -> list[dict]:
    """Kubernetes' own kinds (Kueue's, under kueue.x-k8s.io, are applied by
    tests/test_kubesim_kueue.py against kubesim's Kueue)."""
    docs = [d for block in _blocks("yaml") for d in yaml.safe_load_all(block) if d]
    return [d for d in docs if "kind" in d and "x-k8s.io" not in d.get("apiVersion", "")]


def _values() -> dict:
    (values,) = [d for block in _blocks("yaml") for d in yaml.safe_load_all(block)
                 if d and "singleuser" in d]
    return values


def test_the_docs_manifests_are_valid_and_apply(tmp_path):
    manifests = _manifests()
    assert {"Deployment", "Service", "Secret", "ServiceAccount", "Role", "RoleBinding",
            "NetworkPolicy"} <= {m["kind"] for m in manifests}
    for doc in manifests:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed")
    sim = start_sim(tmp_path)
    try:
        namespaces = {m["metadata"]["namespace"] for m in manifests if "namespace" in m["metadata"]}
        for ns in namespaces:
            sim.ks.call("create", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        # the RBAC section's ServiceAccount first: the Deployment's pods run as it
        for doc in sorted(manifests, key=lambda m: m["kind"] != "ServiceAccount"):
            if doc["kind"] in NOT_SERVED:
                continue
            dry = doc["kind"] == "Deployment"
            if dry:  # its pods, as the ReplicaSet would create them, through admission
                template = doc["spec"]["template"]
                doc = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {**template["metadata"], "name": "kremote-x",
                                    "namespace": doc["metadata"]["namespace"]},
                       "spec": template["spec"]}
                assert doc["metadata"]["labels"] == doc["metadata"]["labels"] | \
                    _manifests_by_kind("Deployment")["spec"]["selector"]["matchLabels"]
            path = tmp_path / f"{doc['kind']}.json"
            path.write_text(json.dumps(doc))
            out = subprocess.run(
                ["kubectl", "--kubeconfig", sim.admin, "create", "-f", str(path), "-o", "name",
                 "--validate=false",  # checked above, strictly, against the schema
                 *(["--dry-run=server"] if dry else [])],
                capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, (doc["kind"], out.stderr)
    finally:
        sim.ks.stop()


def _manifests_by_kind(kind: str) -> dict:
    (doc,) = [m for m in _manifests() if m["kind"] == kind]
    return doc


def test_the_values_snippet_lets_notebooks_reach_agents_and_service():
    values = _values()
    singleuser = values["singleuser"]
    assert singleuser["networkPolicy"]["egressAllowRules"]["privateIPs"] is False
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "singleuser", "namespace": "jhub"},
              "spec": {"podSelector": {"matchLabels": {"component": "singleuser-server"}},
                       "policyTypes": ["Egress"], "egress": singleuser["networkPolicy"]["egress"]}}
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    peers = [p["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"]
             for p in rule["to"]]
    assert {"app.kubernetes.io/managed-by": "jupyter-kremote"} in peers  # the agents' pods
    assert {"app.kubernetes.io/name": "kremote-service"} in peers
    # the service's labels, the agents' labels and the hub mode URL agree with the manifests
    deployment = _manifests_by_kind("Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"][
        "app.kubernetes.io/name"] == "kremote-service"
    # each cluster's NetworkPolicy admits the service (it pings and stops the agents itself)
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    selector = dict(kv.split("=") for kv in env["KREMOTE_HOLDER_SELECTOR"].split(","))
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    url = singleuser["extraEnv"]["KREMOTE_SERVICE_URL"]
    assert url == singleuser["extraFiles"]["kremote-config"]["data"]["KRemoteApp"]["service_url"]
    assert url.startswith(values["hub"]["services"]["kremote"]["url"] + "/services/kremote/")
    assert "serviceAccountName" not in singleuser  # the users' pods keep no Kubernetes token
    compile(values["hub"]["extraConfig"]["kremote"], "extraConfig", "exec")
    for block in _blocks("python"):
        compile(block, "deploy-jupyterhub.md", "exec")
