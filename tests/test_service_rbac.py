"""The hub's kremote service's Role (templates/service-rbac.yaml) is enough and minimal.

kubesim enforces RBAC; the service's cluster manager runs with a token of a ServiceAccount
bound only to that Role through a cluster's whole life: start (with a ConfigMap template and
an owner notebook pod), logs, extend, adoption by a restarted service, the orphan sweep, and
shutdown. Nothing is refused, and every verb the Role grants is used by a named operation, so
taking any rule out refuses that operation (shown for the NetworkPolicy rule).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from conftest import wait_for
from test_kubernetes import managed, needs_sim

pytestmark = needs_sim
IMAGE = os.environ.get("KREMOTE_TEST_IMAGE")
SERVICE = "jupyter-kremote-service"
SERVICE_USER = f"system:serviceaccount:default:{SERVICE}"


@pytest.fixture
def service_sim(tmp_path, monkeypatch):
    from kubesim import KubeSimThread

    from jupyter_kremote.backends.kube_api import KubeLoop
    from jupyter_kremote.manifests import render_service_rbac

    ks = KubeSimThread(rbac=True, pod_ips="unique").start()
    try:
        for doc in render_service_rbac(namespace="default"):
            ks.call("create", doc)
        token = ks.call("service_account_token", "default", SERVICE)
        monkeypatch.setenv("KREMOTE_KUBECONFIG",
                           ks.write_kubeconfig(tmp_path / "service-kubeconfig", token=token))
        monkeypatch.setattr(KubeLoop, "_instance", None)  # this test's emulator
        yield ks, ks.write_kubeconfig(tmp_path / "admin-kubeconfig")
    finally:
        ks.stop()


def used(ks: Any) -> set[tuple[str, str, str]]:
    return {(e["verb"], e["group"], e["resource"])
            for e in ks.call("access_log", user=SERVICE_USER, allowed=True)}


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(v, g, r) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.asyncio
async def test_the_service_works_with_its_role_and_uses_every_verb(service_sim, tmp_path):
    from jupyter_kremote_server.manager import ClusterManager, Limits
    from jupyter_kremote_server.sweep import Sweep

    from jupyter_kremote.manifests import render_service_rbac

    ks, admin = service_sim
    ks.call("create", {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "kremote-templates", "namespace": "default"},
                       "data": {"team": "metadata:\n  labels:\n    team: ml\n"}})
    ks.call("create", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "jupyter-alice", "namespace": "default",
        "labels": {"hub.jupyter.org/username": "alice"}},
        "spec": {"containers": [{"name": "nb", "image": "jupyterhub/singleuser",
                                 "command": ["sleep", "600"]}]}})

    def limits() -> Limits:
        return Limits(backend="kubernetes", user="alice", default_ttl=600, max_ttl=3600)

    by_operation: dict[str, set[tuple[str, str, str]]] = {}
    seen: set[tuple[str, str, str]] = set()

    def mark(operation: str) -> None:
        now = used(ks)
        by_operation[operation] = now - seen
        seen.update(now)

    first = ClusterManager(limits(), root=str(tmp_path))
    model = await first.ensure("default", "a.ipynb", {
        "cpu": "100m", "mem": "100Mi", "image": IMAGE,
        "templates": ["configmap:kremote-templates/team"]})
    assert model.state == "running"
    mark("start")
    assert "listening on" in (await first.logs(model.id)).text
    mark("logs")
    await first.extend(model.id, 1200)
    mark("extend")
    await first.close(keep=("kubernetes",))  # the service restarts ...
    second = ClusterManager(limits(), root=str(tmp_path))
    assert await second.adopt() == [model.id]  # ... and takes the cluster back
    mark("adopt")
    ks.call("create", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
        "name": "jupyter-kremote-lost-key", "namespace": "default",
        "labels": {"app.kubernetes.io/managed-by": "jupyter-kremote", "kremote/user": "alice",
                   "kremote/cluster": "lost"}}})
    found = await Sweep(second.backend("kubernetes"), user="alice", grace=0).once()
    assert found.secrets == ["jupyter-kremote-lost-key"]
    mark("sweep")
    await second.shutdown_all()
    mark("stop")
    assert await asyncio.to_thread(wait_for, lambda: not managed(admin), 30), managed(admin)

    assert ks.call("access_log", user=SERVICE_USER, allowed=False) == []  # enough
    role = render_service_rbac(namespace="default")[1]
    unused = granted(role) - seen
    assert not unused, f"granted but never used: {sorted(unused)}"  # minimal
    # each rule is what a named operation needs (printed for the docs' table)
    for operation, verbs in by_operation.items():
        print(operation, sorted(verbs))
    assert ("create", "networking.k8s.io", "networkpolicies") in by_operation["start"]
    assert ("get", "", "secrets") in by_operation["adopt"]
    assert ("list", "", "secrets") in by_operation["sweep"]
    assert ("patch", "batch", "jobs") in by_operation["extend"]


@pytest.mark.asyncio
async def test_without_its_network_policy_rule_a_start_fails_in_one_line(service_sim,
                                                                         tmp_path):
    from jupyter_kremote_server.manager import ClusterManager, Limits
    from jupyter_kremote_server.models import StartFailed

    from jupyter_kremote.manifests import render_service_rbac

    _, admin = service_sim
    role = render_service_rbac(namespace="default")[1]
    role["rules"] = [r for r in role["rules"] if "networkpolicies" not in r["resources"]]
    await asyncio.to_thread(_replace_role, admin, role)
    manager = ClusterManager(Limits(backend="kubernetes", user="alice"), root=str(tmp_path))
    with pytest.raises(StartFailed) as info:
        await manager.ensure("default", "a.ipynb", {"cpu": "100m", "mem": "100Mi",
                                                   "image": IMAGE})
    line = str(info.value)
    assert "\n" not in line and "the API refused the NetworkPolicy" in line, line
    assert "networkpolicies" in line and "forbidden" in line, line
    assert await asyncio.to_thread(wait_for, lambda: not managed(admin), 30), managed(admin)


def _replace_role(admin: str, role: dict[str, Any]) -> None:
    import json
    import subprocess

    out = subprocess.run(["kubectl", "--kubeconfig", admin, "replace", "--validate=false",
                          "-f", "-"], input=json.dumps(role), capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr


def test_the_deploy_docs_show_the_role_and_a_policy_as_rendered():
    """docs/deploy-jupyterhub.md's RBAC and NetworkPolicy blocks are the product's own
    renders (test_deploy_docs validates them strictly and applies them to kubesim)."""
    import re
    from pathlib import Path

    import yaml

    from jupyter_kremote.manifests import (
        make_network_policy,
        render_cluster,
        render_service_rbac,
    )
    from jupyter_kremote.spec import PodSpec
    from jupyter_kremote.templates import TemplateResolver

    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy-jupyterhub.md").read_text()
    docs = [d for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
            for d in yaml.safe_load_all(block) if d and "kind" in d]
    names = [(d, d.get("metadata", {}).get("name")) for d in docs]  # Kueue's Configuration
    rbac = [d for d, name in names if name == "jupyter-kremote-service"  # has no metadata
            or (d["kind"] == "ServiceAccount" and name == "jupyter-kremote")]
    assert rbac == render_service_rbac(namespace="jhub", service_account="jupyter-kremote")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    _, job = render_cluster(PodSpec(count=2), cluster_id="train-3f2a1c", user="alice",
                            notebook="train.ipynb", resolver=TemplateResolver(),
                            namespace="jhub", key="00", family="train")
    assert policy == make_network_policy(
        job, owner_selector={"hub.jupyter.org/username": "alice"},
        holder_selector={"app.kubernetes.io/name": "kremote-service"})
