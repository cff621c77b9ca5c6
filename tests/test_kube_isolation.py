"""Isolation by construction on Kubernetes, through a real kernel against kubesim (RBAC on):
each cluster's NetworkPolicy, the Job owned by the owner's notebook pod, the CURVE client
allowlist of the agents.

kubesim stores NetworkPolicies but cannot enforce them (its pods are local processes): these
tests check what the API holds and what goes with what, as kubectl shows it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import wait_for
from kube_kernels import kube_kernel, running_sim
from test_kubernetes import IMAGE_FLAG, managed, needs_sim

pytestmark = [needs_sim, pytest.mark.skipif(not os.path.exists("/usr/bin/kubectl"),
                                            reason="kubectl is not installed")]
USER = "alice"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp("isolation"), pod_ips="unique") as started:
        yield started


def kubectl(sim, *args: str, admin: bool = True) -> str:
    out = subprocess.run(["kubectl", "--kubeconfig", sim.admin if admin else sim.kubeconfig,
                          *args], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def get_json(sim, *args: str) -> dict:
    return json.loads(kubectl(sim, "get", *args, "-o", "json"))


def notebook_pod(sim, name: str) -> dict:
    """alice's notebook server pod as z2jh labels it (a process that sleeps, in kubesim)."""
    sim.ks.call("create", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {
            "hub.jupyter.org/username": USER, "component": "singleuser-server"}},
        "spec": {"containers": [{"name": "notebook", "image": "jupyterhub/singleuser",
                                 "command": ["sleep", "600"]}]}})
    return get_json(sim, "pod", name)


@pytest.fixture
def kernel(sim, notebook_dir):
    # alice's notebook pods (processes that sleep) outlive the kernel: not counted
    with kube_kernel(sim, notebook_dir, processes=False, JUPYTERHUB_USER=USER) as k:
        yield k


def selects(match: dict, labels: dict) -> bool:
    return match.items() <= labels.items()


def test_network_policy_admits_owner_and_peers_and_goes_with_the_job(kernel, sim):
    nb = notebook_pod(sim, "jupyter-alice")
    res = kernel.run(f"%%remote -n 2{IMAGE_FLAG}\nprint('up')")
    assert res.status == "ok", res.outputs
    (job,) = get_json(sim, "jobs", "-l", "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
    (pol,) = get_json(sim, "networkpolicies")["items"]
    pods = get_json(sim, "pods", "-l", "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
    assert pol["metadata"]["name"] == job["metadata"]["name"]
    assert pol["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    assert len(pods) == 2 and all(selects(pol["spec"]["podSelector"]["matchLabels"],
                                          p["metadata"]["labels"]) for p in pods)
    owner_from, peers_from = (f["podSelector"]["matchLabels"]
                              for f in pol["spec"]["ingress"][0]["from"])
    assert selects(owner_from, nb["metadata"]["labels"])  # the notebook pod is admitted
    assert all(selects(peers_from, p["metadata"]["labels"]) for p in pods)  # and the ranks
    assert not selects(peers_from, nb["metadata"]["labels"])
    kubectl(sim, "delete", "job", job["metadata"]["name"], "--cascade=background")
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)
    kubectl(sim, "delete", "pod", "jupyter-alice", "--grace-period=0", "--force")


def test_deleting_the_notebook_pod_ends_the_cluster(kernel, sim):
    """The Job is owned by the owner's notebook pod: Kubernetes' garbage collector ends the
    cluster even with nobody left to shut it down."""
    nb = notebook_pod(sim, "jupyter-alice-2")
    kernel.run("import os; os.environ['KREMOTE_OWNER_POD'] = 'jupyter-alice-2'")
    res = kernel.run(f"%%remote{IMAGE_FLAG}\nx = 1")
    assert res.status == "ok", res.outputs
    (job,) = get_json(sim, "jobs", "-l", "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "jupyter-alice-2",
        "uid": nb["metadata"]["uid"], "controller": False, "blockOwnerDeletion": False}]
    assert sorted(m.split("/")[0] for m in managed(sim.admin)) == [
        "job", "networkpolicy", "pod", "secret"]
    kubectl(sim, "delete", "pod", "jupyter-alice-2", "--wait=false")
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)
    assert wait_for(lambda: not sim.ks.call("processes"), 60), sim.ks.call("processes")
    res = kernel.run("%%remote\nprint(x)")
    assert res.status == "error" and "ended" in res.stderr + res.traceback_text, res.outputs


def test_in_a_pod_the_owner_is_the_pod_named_by_hostname(kernel, sim):
    """A server in a pod (KUBERNETES_SERVICE_HOST set) with no KREMOTE_OWNER_POD names its
    own pod, HOSTNAME (z2jh's jupyter-<user>), as the owner: found even where the owner
    selector matches two of the user's pods (and so names none)."""
    nb = notebook_pod(sim, "jupyter-alice-3")
    notebook_pod(sim, "jupyter-alice-old")  # alice's labels too: the selector is ambiguous
    try:
        kernel.run("import os; os.environ.pop('KREMOTE_OWNER_POD', None)\n"
                   "os.environ.update(KUBERNETES_SERVICE_HOST='10.96.0.1', "
                   "HOSTNAME='jupyter-alice-3')")
        res = kernel.run(f"%%remote{IMAGE_FLAG}\nx = 1")
        assert res.status == "ok", res.outputs
        (job,) = get_json(sim, "jobs", "-l",
                          "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
        assert [(o["kind"], o["name"], o["uid"]) for o in job["metadata"]["ownerReferences"]] \
            == [("Pod", "jupyter-alice-3", nb["metadata"]["uid"])]
    finally:
        kernel.run("%remote shutdown --all", timeout=60)
        for name in ("jupyter-alice-3", "jupyter-alice-old"):
            kubectl(sim, "delete", "pod", name, "--grace-period=0", "--force")


def test_agents_admit_only_the_owners_client_key(kernel, sim):
    """Another client with the endpoint, the server key and even the HMAC key, but a client
    key of its own, completes no handshake: nothing runs, and it gets a one-line error."""
    res = kernel.run(f"%%remote{IMAGE_FLAG}\nx = 1")
    assert res.status == "ok", res.outputs
    (job,) = get_json(sim, "jobs", "-l", "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    # the owner's public key, only (Z85's "$" escaped as "$$" from the kubelet's expansion)
    assert len(env["KREMOTE_CURVE_CLIENTS"]["value"].replace("$$", "$")) == 40
    assert "KREMOTE_CURVE_CLIENT_SECRET" not in env  # the owner's secret never reaches a pod
    (secret,) = get_json(sim, "secrets", "-l",
                         "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
    assert "KREMOTE_CURVE_CLIENT_SECRET" in secret["data"]
    res = kernel.run(
        "import dataclasses\n"
        "from jupyter_kremote.client import ClusterClient\n"
        "magics = get_ipython().magics_manager.registry['RemoteMagics']\n"
        "handle = magics.session.clusters['default'].handle\n"
        "other = [dataclasses.replace(e, curve_secretkey=None) for e in handle.endpoints]\n"
        "intruder = ClusterClient(handle.key, other, lambda rank: None)\n"
        "try:\n"
        "    intruder.request('execute', {'code': 'x = 99'}, timeout=20)\n"
        "finally:\n"
        "    intruder.close()\n")
    assert res.status == "error" and res.reply["ename"] == "AccessRefused", res.outputs
    line = (res.stderr + res.traceback_text).strip().splitlines()[-1]
    assert "rank 0 at tcp://" in line and "refused this client's CURVE key" in line, line
    res = kernel.run("%%remote\nprint(x)")
    assert res.stdout == "1\n", res.outputs  # the owner's cells still run; nothing else did
    assert "refused a client whose CURVE key" in kernel.run("%remote logs").text


def orphan_secret(sim, name: str, user: str) -> None:
    sim.ks.call("create", {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "default", "labels": {
            "app.kubernetes.io/managed-by": "jupyter-kremote", "kremote/user": user,
            "kremote/cluster": name}},
        "data": {"KREMOTE_KEY": "MDA="}})


@pytest.mark.asyncio
async def test_orphan_sweep_removes_what_no_owner_reference_covers(kernel, sim, monkeypatch,
                                                                   tmp_path):
    """A Secret left without its Job goes (the user's own only, for a single-user server);
    the hub's service, which knows its users and the clusters it holds, also ends a Job it
    no longer holds, and with it the Job's pods, Secret and NetworkPolicy."""
    import asyncio

    from jupyter_kremote_server.manager import ClusterManager, Limits
    from jupyter_kremote_server.sweep import Sweep, find_orphans

    from jupyter_kremote.backends.kube_api import KubeLoop

    res = await asyncio.to_thread(kernel.run, f"%%remote{IMAGE_FLAG}\nx = 1")
    assert res.status == "ok", res.outputs
    orphan_secret(sim, "jupyter-kremote-gone-key", USER)
    orphan_secret(sim, "jupyter-kremote-bobs-key", "bob")
    (job,) = get_json(sim, "jobs", "-l", "app.kubernetes.io/managed-by=jupyter-kremote")["items"]
    (live_secret,) = [s for s in get_json(sim, "secrets", "-l", "kremote/user=alice")["items"]
                      if s["metadata"]["name"] != "jupyter-kremote-gone-key"]
    # a start in progress (its Secret made, its Job not yet) is left alone for the grace
    assert find_orphans([], [live_secret], now=_created(live_secret) + 1, grace=120).secrets \
        == []
    monkeypatch.setenv("KREMOTE_KUBECONFIG", sim.kubeconfig)
    monkeypatch.setattr(KubeLoop, "_instance", None)  # this module's emulator
    backend = ClusterManager(Limits(backend="kubernetes", user=USER),
                             root=str(tmp_path)).backend("kubernetes")

    found = await Sweep(backend, user=USER, grace=0).once()
    assert (found.jobs, found.secrets) == ([], ["jupyter-kremote-gone-key"])
    names = {s["metadata"]["name"] for s in get_json(sim, "secrets")["items"]}
    assert {"jupyter-kremote-bobs-key", live_secret["metadata"]["name"]} <= names
    assert "jupyter-kremote-gone-key" not in names

    async def users() -> set[str]:
        return {USER}  # bob is gone from the hub
    # the service after a restart: what it adopted is held, so it stays
    service = ClusterManager(Limits(backend="kubernetes", user=USER), root=str(tmp_path))
    assert len(await service.adopt()) == 1
    assert service.held_jobs() == {job["metadata"]["name"]}
    found = await Sweep(backend, grace=0, held=service.held_jobs, users=users).once()
    assert (found.jobs, found.secrets) == ([], ["jupyter-kremote-bobs-key"])
    # ... and once it no longer holds the cluster, the Job goes, with all it owns
    await service.close(keep=("kubernetes",))
    found = await Sweep(backend, grace=0, held=service.held_jobs, users=users).once()
    assert found.jobs == [job["metadata"]["name"]]
    assert await asyncio.to_thread(wait_for, lambda: not managed(sim.admin), 30)
    assert await asyncio.to_thread(wait_for, lambda: not sim.ks.call("processes"), 30)
    res = await asyncio.to_thread(kernel.run, "%%remote\nprint(x)")
    assert res.status == "error" and "ended" in res.stderr + res.traceback_text, res.outputs


def _created(obj: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(
        obj["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
