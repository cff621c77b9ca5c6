"""How a cluster on Kubernetes fails, read as a user needs it, against kubesim's strict API:
refused pods (PodSecurity, ResourceQuota, a missing service account) fail the start at once
with the API's message; disruptions say what disrupted the pod; a pod deleted while the watch
was stalled is noticed; a transient image-pull error within its grace is no failure."""

from __future__ import annotations

import subprocess
import threading

import pytest
from conftest import wait_for
from test_kubernetes import REAL, kkernel, managed, sim  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(bool(REAL), reason="needs the emulator's fault knobs")


@pytest.fixture(autouse=True)
def short_watches(monkeypatch):
    """Watches of a few seconds, so that a stalled one is given up on within the test."""
    monkeypatch.setenv("KREMOTE_WATCH_TIMEOUT", "4")


def kubectl(admin: str, *args: str) -> str:
    out = subprocess.run(["kubectl", "--kubeconfig", admin, *args], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def pods(admin: str) -> list[str]:
    return [p.split("/", 1)[1] for p in managed(admin) if p.startswith("pod/")]


@pytest.mark.parametrize("setup, template, expected", [
    (["label", "ns", "default", "pod-security.kubernetes.io/enforce=restricted"],
     "          securityContext:\n            privileged: true\n",
     ['violates PodSecurity "restricted:latest"', "privileged"]),
    (["create", "quota", "no-pods", "--hard=pods=0"], "",
     ["exceeded quota: no-pods", "pods=0"]),
    ([], None, ['serviceaccount "nobody" not found']),
], ids=["podsecurity", "quota", "service-account"])
def test_refused_pods_fail_the_start_with_the_api_message(kkernel, sim, setup, template,  # noqa: F811
                                                          expected):
    if setup:
        kubectl(sim.admin, *setup)
    if template is None:
        body = "spec:\n  template:\n    spec:\n      serviceAccountName: nobody\n"
    else:
        body = ("spec:\n  template:\n    spec:\n      containers:\n        - name: agent\n"
                + template) if template else "{}\n"
    (kkernel.cwd / "t.yaml").write_text(body)
    res = kkernel.run("%%remote -t t.yaml --connect-timeout 90\nran = 1", timeout=120)
    assert res.status == "error" and res.error["ename"] == "ClusterStartError", res.outputs
    assert "Kubernetes refused to create the pods" in res.error["evalue"], res.error["evalue"]
    for text in expected:
        assert text in res.error["evalue"], res.error["evalue"]
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)


def test_a_refused_job_fails_the_start_in_one_line_and_leaves_no_secret(kkernel, sim):  # noqa: F811
    sim.ks.call("inject_error", code=403, verb="create", resource="jobs",
                message="jobs.batch is forbidden: admission webhook said no")
    res = kkernel.run("%%remote --connect-timeout 60\nran = 1", timeout=90)
    assert res.status == "error" and res.error["ename"] == "ClusterStartError", res.outputs
    assert "the API refused the Job: jobs.batch is forbidden: admission webhook said no" in \
        res.error["evalue"], res.error["evalue"]
    assert wait_for(lambda: not kubectl(sim.admin, "get", "secrets", "-l",
                                        "app.kubernetes.io/managed-by=jupyter-kremote",
                                        "-o", "name").strip(), 60)
    assert kkernel.run("%%remote\nprint('ran')").stdout.strip() == "ran"


def test_the_base_pod_runs_in_a_restricted_namespace(kkernel, sim):  # noqa: F811
    kubectl(sim.admin, "label", "ns", "default", "pod-security.kubernetes.io/enforce=restricted")
    res = kkernel.run("%%remote\nprint('ran')")
    assert res.status == "ok", res.outputs
    assert "ran" in res.stdout


@pytest.mark.parametrize("how, expected", [
    ("preempt", "was preempted by the scheduler"),
    ("taint", "was evicted from its node by a NoExecute taint"),
    ("drain", "was evicted through the Eviction API"),
])
def test_disruptions_say_what_disrupted_the_pod(kkernel, sim, how, expected):  # noqa: F811
    assert kkernel.run("%%remote\nx = 1").status == "ok"
    (pod,) = pods(sim.admin)
    if how == "preempt":
        sim.ks.call("preempt", "default", pod, "default/urgent")
    elif how == "taint":
        sim.ks.call("taint_node", "kubesim-node-0", "example.com/maintenance")
    else:
        kubectl(sim.admin, "drain", "kubesim-node-0", "--ignore-daemonsets",
                "--delete-emptydir-data", "--force", "--timeout=60s")
    assert wait_for(lambda: expected in kkernel.run("%remote status").text, 60), \
        kkernel.run("%remote status").text
    res = kkernel.run("%%remote\nprint(x)")
    assert res.error["ename"] == "ClusterEnded" and expected in res.error["evalue"], res.error
    assert "exited with code" not in res.error["evalue"]


def test_pod_deleted_while_the_watch_stalled_fails_the_cell(kkernel, sim):  # noqa: F811
    """The watch connection stalls (open, silent); the pod is deleted and history compacted.
    The client's read timeout ends the stalled watch, the 410 re-list replaces the cache, and
    a cell without --timeout fails instead of waiting for ever."""
    assert kkernel.run("%%remote\nx = 1").status == "ok"
    (pod,) = pods(sim.admin)
    assert sim.ks.call("stall_watches", "pods") >= 1
    kubectl(sim.admin, "delete", "pod", pod, "--wait=false")

    def gone() -> bool:
        return subprocess.run(["kubectl", "--kubeconfig", sim.admin, "get", "pod", pod],
                              capture_output=True, timeout=30, check=False).returncode != 0

    assert wait_for(gone, 60)  # its agent ended with it
    sim.ks.call("compact")
    res = kkernel.run("%%remote\nprint(x)", timeout=90)
    assert res.status == "error", res.outputs
    assert res.error["ename"] in ("AgentDied", "ClusterEnded"), res.error
    assert f"its pod {pod} was deleted" in res.error["evalue"], res.error["evalue"]


def test_a_transient_image_pull_error_within_the_grace_is_no_failure(kkernel, sim):  # noqa: F811
    sim.ks.call("set_unknown_images", prefixes=["unknown/", "flaky/"])
    kkernel.kc.execute("%%remote --image flaky/agent:1 --connect-timeout 90\nprint('up')")

    def pulling_failed() -> bool:
        out = kubectl(sim.admin, "get", "pods", "-l", "app.kubernetes.io/managed-by="
                      "jupyter-kremote", "-o", "jsonpath={..waiting.reason}")
        return "ErrImagePull" in out or "ImagePullBackOff" in out

    assert wait_for(pulling_failed, 60)
    sim.ks.call("set_unknown_images", prefixes=["unknown/"])  # the registry is back
    reply = kkernel.kc.get_shell_msg(timeout=90)["content"]
    assert reply["status"] == "ok", reply


def test_a_persisting_image_pull_error_fails_after_its_grace(kkernel, sim):  # noqa: F811
    res = kkernel.run("%%remote --image unknown/agent:1 --connect-timeout 90\nran = 1",
                      timeout=120)
    assert res.error["ename"] == "ClusterStartError", res.outputs
    assert "ErrImagePull" in res.error["evalue"] or "ImagePullBackOff" in res.error["evalue"]
    assert "KREMOTE_IMAGE_PULL_GRACE=10s" in res.error["evalue"], res.error["evalue"]
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)


def test_watch_state_is_read_safely_while_the_loop_thread_writes():
    """by_rank() and events read from kernel threads while the watch thread inserts."""
    from jupyter_kremote.backends.kube_state import INDEX_LABEL, ClusterState

    state = ClusterState("jupyter-kremote-x")
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            state.on_pod("ADDED", {"metadata": {"name": f"p{i}", "labels": {INDEX_LABEL: "0"},
                                                "creationTimestamp": f"{i:08d}"}})
            state.on_event("ADDED", {"metadata": {"uid": str(i % 200)},
                                     "involvedObject": {"name": "jupyter-kremote-x"}})
            if i >= 200:
                state.on_pod("DELETED", {"metadata": {"name": f"p{i - 200}"}})
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(3000):
            try:
                state.by_rank()
                state.recent_events(3)
            except RuntimeError as exc:  # "dictionary changed size during iteration"
                errors.append(exc)
                break
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
