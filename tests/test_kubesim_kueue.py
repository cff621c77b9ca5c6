"""kubesim's Kueue, checked with kubectl as an admin would: Workloads for queued Jobs,
admission by priority then FIFO, positions from the visibility API, preemption within a
ClusterQueue, waitForPodsReady with requeue, and the events Kueue writes."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.kubesim import KubeSimThread
from tests.test_kubesim_strict import FAST, KUBECTL, Kubectl, until

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
VIS = "/apis/visibility.kueue.x-k8s.io/v1beta1"


def queues(ns: str, cq: str, cpu: str, preemption: str = "Never") -> list[dict[str, Any]]:
    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor",
         "metadata": {"name": "default-flavor"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue",
         "metadata": {"name": cq},
         "spec": {"namespaceSelector": {}, "preemption": {"withinClusterQueue": preemption},
                  "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                      "name": "default-flavor", "resources": [
                          {"name": "cpu", "nominalQuota": cpu},
                          {"name": "memory", "nominalQuota": "8Gi"}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
         "metadata": {"name": "team", "namespace": ns}, "spec": {"clusterQueue": cq}},
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "WorkloadPriorityClass",
         "metadata": {"name": "high"}, "value": 1000, "description": "urgent"},
    ]


def job(ns: str, name: str, cpu: str = "1", priority: str | None = None,
        image: str = "busybox") -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": "team"}
    if priority:
        labels["kueue.x-k8s.io/priority-class"] = priority
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": image,
                                "readinessProbe": {"exec": {"command": ["true"]},
                                                   "periodSeconds": 1},
                                "resources": {"requests": {"cpu": cpu}}}]}}}}


@pytest.fixture(scope="module")
def kueue(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("kubectl")
    with KubeSimThread(rbac=True, kueue=True, **FAST) as ks:
        yield ks, Kubectl(ks.write_kubeconfig(home / "admin"), home)


def apply(kubectl: Kubectl, *objs: dict[str, Any]) -> None:
    kubectl.ok("apply", "--validate=false", "-f", "-",
               stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def workload(kubectl: Kubectl, ns: str, job_name: str) -> dict[str, Any] | None:
    items = kubectl.json("get", "workloads", "-n", ns)["items"]
    return next((w for w in items if w["metadata"]["ownerReferences"][0]["name"] == job_name),
                None)


def cond(wl: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    return next((c for c in (wl or {}).get("status", {}).get("conditions", [])
                 if c["type"] == ctype), {})


def pending(kubectl: Kubectl, ns: str) -> list[tuple[str, int, int, int]]:
    body = json.loads(kubectl.ok("get", "--raw", f"{VIS}/namespaces/{ns}/localqueues/team/"
                                 "pendingworkloads"))
    assert body["kind"] == "PendingWorkloadsSummary"
    return [(i["metadata"]["ownerReferences"][0]["name"], i["priority"],
             i["positionInClusterQueue"], i["positionInLocalQueue"]) for i in body["items"]]


def test_admission_by_priority_then_fifo_with_positions(kueue: Any) -> None:
    _ks, admin = kueue
    admin.ok("create", "namespace", "fifo")
    apply(admin, *queues("fifo", "fifo-cq", "1"))
    apply(admin, job("fifo", "first"))
    first = until(lambda: cond(workload(admin, "fifo", "first"), "Admitted").get("status")
                  == "True" and workload(admin, "fifo", "first"), what="first admitted")
    assert first["metadata"]["name"].startswith("job-first-")
    assert first["metadata"]["ownerReferences"][0]["controller"] is True
    assert first["spec"]["podSets"][0]["count"] == 1 and first["spec"]["queueName"] == "team"
    assert first["status"]["admission"]["clusterQueue"] == "fifo-cq"
    until(lambda: admin.json("get", "job", "first", "-n", "fifo")["spec"]["suspend"] is False,
          what="first unsuspended")
    for name, prio in (("second", None), ("third", None), ("urgent", "high")):
        apply(admin, job("fifo", name, priority=prio))
        assert admin.json("get", "job", name, "-n", "fifo")["spec"]["suspend"] is True
    until(lambda: len(pending(admin, "fifo")) == 3, what="three pending")
    assert pending(admin, "fifo") == [("urgent", 1000, 0, 0), ("second", 0, 1, 1),
                                      ("third", 0, 2, 2)]
    waiting = cond(workload(admin, "fifo", "second"), "QuotaReserved")
    assert (waiting["status"], waiting["reason"], waiting["message"]) == (
        "False", "Pending", ("couldn't assign flavors to pod set main: insufficient unused "
                             "quota for cpu in flavor default-flavor, 1 more needed"))
    assert 'Warning   Pending' in admin.ok("get", "events", "-n", "fifo")
    admin.ok("delete", "job", "first", "-n", "fifo")  # kubectl: background propagation
    until(lambda: cond(workload(admin, "fifo", "urgent"), "Admitted").get("status") == "True",
          what="the high-priority Workload admitted next")
    assert pending(admin, "fifo") == [("second", 0, 0, 0), ("third", 0, 1, 1)]
    until(lambda: workload(admin, "fifo", "first") is None, what="the Workload collected")
    events = admin.json("get", "events.v1.events.k8s.io", "-n", "fifo")["items"]
    notes = {(e["reason"], e["regarding"]["kind"]): e for e in events}
    assert notes[("CreatedWorkload", "Job")]["note"].startswith("Created Workload: fifo/job-")
    assert notes[("QuotaReserved", "Workload")]["reportingController"] == "kueue-admission"
    assert notes[("Started", "Job")]["note"] == "Admitted by clusterQueue fifo-cq"
    admin.ok("delete", "namespace", "fifo", "--wait=false")


def test_preemption_within_cluster_queue_requeues(kueue: Any) -> None:
    _ks, admin = kueue
    admin.ok("create", "namespace", "pre")
    apply(admin, *queues("pre", "pre-cq", "1", preemption="LowerPriority"))
    apply(admin, job("pre", "low"))
    until(lambda: admin.json("get", "job", "low", "-n", "pre").get("status", {}).get("ready"),
          what="the low-priority Job running")
    apply(admin, job("pre", "high", priority="high"))
    until(lambda: cond(workload(admin, "pre", "high"), "Admitted").get("status") == "True",
          what="the high-priority Workload admitted")
    low = workload(admin, "pre", "low")
    evicted, requeued = cond(low, "Evicted"), cond(low, "Requeued")
    assert (evicted["status"], evicted["reason"]) == ("True", "Preempted")
    high_uid = workload(admin, "pre", "high")["metadata"]["uid"]  # type: ignore[index]
    assert evicted["message"].startswith(f"Preempted to accommodate a workload (UID: {high_uid}"
                                         ", JobUID: ")
    assert "due to prioritization in the ClusterQueue" in evicted["message"]
    assert cond(low, "Preempted")["reason"] == "InClusterQueue"
    assert (requeued["status"], requeued["reason"]) == ("True", "Preempted")
    assert cond(low, "QuotaReserved")["status"] == "False"
    assert admin.json("get", "job", "low", "-n", "pre")["spec"]["suspend"] is True
    assert pending(admin, "pre") == [("low", 0, 0, 0)]
    reasons = {e["reason"] for e in admin.json("get", "events", "-n", "pre")["items"]}
    assert {"Preempted", "EvictedDueToPreempted", "PreemptedWorkload", "Stopped"} <= reasons
    admin.ok("delete", "namespace", "pre", "--wait=false")


def test_pods_ready_timeout_evicts_and_requeues(kueue: Any) -> None:
    ks, admin = kueue
    ks.call("configure", kueue_pods_ready_timeout=1.0, kueue_backoff_base=1.0)
    try:
        admin.ok("create", "namespace", "ready")
        apply(admin, *queues("ready", "ready-cq", "2"))
        apply(admin, job("ready", "stuck", image="unknown/never:1"))
        until(lambda: cond(workload(admin, "ready", "stuck"), "Evicted").get("reason")
              == "PodsReadyTimeout", what="the PodsReady timeout")
        wl = workload(admin, "ready", "stuck")
        # (once admitted again, Kueue keeps it as "Previously: <message>")
        assert cond(wl, "Evicted")["message"].removeprefix("Previously: ") == \
            f"Exceeded the PodsReady timeout ready/{wl['metadata']['name']}"  # type: ignore
        ks.call("configure", kueue_pods_ready_timeout=60.0)  # stays admitted once back

        def readmitted() -> bool:
            wl = workload(admin, "ready", "stuck") or {}
            return wl.get("status", {}).get("requeueState", {}).get("count") == 1 and \
                cond(wl, "Admitted").get("status") == "True"
        until(readmitted, 30, what="requeued after the backoff and admitted again")
    finally:
        ks.call("configure", kueue_pods_ready_timeout=0.0)
        admin.ok("delete", "namespace", "ready", "--wait=false")


def test_visibility_api_needs_its_rbac_rule(kueue: Any, tmp_path: Any) -> None:
    ks, admin = kueue
    admin.ok("create", "namespace", "vis")
    apply(admin, *queues("vis", "vis-cq", "1"))
    admin.ok("create", "serviceaccount", "reader", "-n", "vis")
    token = ks.call("service_account_token", "vis", "reader")
    reader = Kubectl(ks.write_kubeconfig(tmp_path / "reader", "vis", token=token), tmp_path)
    path = f"{VIS}/namespaces/vis/localqueues/team/pendingworkloads"
    assert "forbidden" in reader.fails("get", "--raw", path)
    admin.ok("create", "role", "see", "-n", "vis", "--verb=get",
             "--resource=localqueues.visibility.kueue.x-k8s.io/pendingworkloads")
    admin.ok("create", "rolebinding", "see", "-n", "vis", "--role=see",
             "--serviceaccount=vis:reader")
    assert json.loads(reader.ok("get", "--raw", path))["items"] == []
    assert "not found" in reader.fails("get", "--raw", path.replace("/team/", "/nope/"))
    admin.ok("delete", "namespace", "vis", "--wait=false")


def test_the_deploy_docs_kueue_examples_apply_and_admit(kueue: Any) -> None:
    """docs/deploy-jupyterhub.md's Kueue section: its manager configuration parses with
    waitForPodsReady on, and its queues apply (kubectl) and admit a team's queued Job."""
    import re
    from pathlib import Path

    import yaml

    _ks, admin = kueue
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy-jupyterhub.md").read_text()
    section = text.split("\n## Kueue\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if d]
    config = next(d for d in docs if d["kind"] == "Configuration")
    assert config["waitForPodsReady"]["enable"] is True
    objects = [d for d in docs if d["kind"] != "Configuration"]
    assert {d["kind"] for d in objects} >= {"ClusterQueue", "LocalQueue", "ResourceFlavor",
                                           "WorkloadPriorityClass"}
    admin.ok("apply", "--validate=false", "-f", "-",
             stdin="\n---\n".join(yaml.safe_dump(d) for d in objects))
    assert {"clusterqueue.kueue.x-k8s.io/team-a-gpus", "clusterqueue.kueue.x-k8s.io/team-b-gpus"
            } <= set(admin.ok("get", "clusterqueues", "-o", "name").split())
    assert admin.json("get", "localqueue", "gpus", "-n", "team-a")["spec"] == {
        "clusterQueue": "team-a-gpus"}
    train = job("team-a", "train", priority="urgent")
    train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "gpus"
    train["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": 2}, "requests": {"cpu": "4", "memory": "32Gi"}}
    apply(admin, train)
    wl = until(lambda: (w := workload(admin, "team-a", "train")) and
               cond(w, "Admitted").get("status") == "True" and w, what="admitted")
    assert wl["spec"]["priority"] == 1000 and wl["spec"]["priorityClassName"] == "urgent"
    assert wl["status"]["admission"]["podSetAssignments"][0]["flavors"] == {
        "cpu": "a100", "memory": "a100", "nvidia.com/gpu": "a100"}
    for ns in ("team-a", "team-b"):
        admin.ok("delete", "namespace", ns, "--wait=false")
