"""The Kubernetes API emulator (tests/kubesim) against the real kubernetes_asyncio client and
kubectl: Jobs, pods as local processes, logs, watches, selectors, patches, deletion, failures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

try:
    from tests.kubesim import KubeSim, KubeSimControl, KubeSimThread, NodeSpec
except ImportError:  # tests/ is on sys.path but the repository root is not
    from kubesim import KubeSim, KubeSimControl, KubeSimThread, NodeSpec  # type: ignore

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

REPO = Path(__file__).resolve().parent.parent
NS = "default"
MANAGED = {"app.kubernetes.io/managed-by": "jupyter-kremote"}
FAST: dict[str, Any] = {
    "scheduler_retry": 0.2, "scheduler_retry_max": 0.4, "pull_backoff": 0.2,
    "pull_backoff_max": 0.4, "config_retry": 0.2, "crash_backoff": 0.2,
    "max_grace_seconds": 1.0}


# ---------------------------------------------------------------------------- helpers

async def eventually(fn: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `fn` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def job_manifest(name: str, command: str, *, count: int = 2, deadline: int | None = None,
                 image: str = "python:3.11-slim", env: list[dict[str, Any]] | None = None,
                 backoff: int = 0, suspend: bool | None = None,
                 resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "agent", "image": image,
                                 "command": ["python", "-u", "-c", command], "env": env or []}
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "completionMode": "Indexed", "completions": count, "parallelism": count,
        "backoffLimit": backoff,
        "template": {"metadata": {"labels": {**MANAGED, "kremote/cluster": name}},
                     "spec": {"restartPolicy": "Never", "containers": [container]}}}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if suspend is not None:
        spec["suspend"] = suspend
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {**MANAGED, "kremote/cluster": name}},
            "spec": spec}


def pod_manifest(name: str, command: str, image: str = "python:3.11-slim",
                 **extra: Any) -> dict[str, Any]:
    container = {"name": "agent", "image": image, "command": ["python", "-u", "-c", command],
                 **extra}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": MANAGED},
            "spec": {"restartPolicy": "Never", "containers": [container]}}


SLEEP = "import time; time.sleep(120)"


@pytest_asyncio.fixture
async def sim() -> Any:
    async with KubeSim(**FAST) as s:
        yield s


@pytest_asyncio.fixture
async def api(sim: KubeSim, tmp_path: Path) -> Any:
    """A kubernetes_asyncio ApiClient loaded from the emulator's (https) kubeconfig."""
    path = sim.write_kubeconfig(tmp_path / "kubeconfig")
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
    async with k8s.ApiClient(cfg) as client:
        yield client


async def pods_of(core: k8s.CoreV1Api, job: str) -> list[Any]:
    return (await core.list_namespaced_pod(NS, label_selector=f"job-name={job}")).items


async def events_for(core: k8s.CoreV1Api, name: str) -> list[Any]:
    return (await core.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={name}")).items


async def watch_events(func: Any, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """(type, name) of every event of a kubernetes_asyncio watch until the server ends it."""
    async with k8s_watch.Watch() as w:
        return [(e["type"], e["object"].metadata.name) async for e in w.stream(func, *args,
                                                                               **kwargs)]


async def wait_running(core: k8s.CoreV1Api, name: str) -> Any:
    async def running() -> Any:
        pod = await core.read_namespaced_pod(name, NS)
        return pod if pod.status.phase == "Running" else None
    return await eventually(running, what=f"pod {name} Running")


# ---------------------------------------------------------------------------- Jobs and pods

@pytest.mark.asyncio
async def test_indexed_job_secret_env_watch_logs_selectors_and_background_delete(
        sim: KubeSim, api: Any) -> None:
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    await core.create_namespaced_secret(NS, {
        "metadata": {"name": "cluster-key"}, "type": "Opaque",
        "data": {"KREMOTE_KEY": base64.b64encode(b"s3cr3t").decode()}})
    program = ("import os, time\n"
               "print('key', os.environ['KREMOTE_KEY'], 'index', os.environ['JOB_COMPLETION_INDEX'],"
               " 'home', os.environ['HOME'] == os.getcwd())\n"
               "for i in range(3):\n    time.sleep(0.1); print('tick', i)\n"
               "print('bye'); time.sleep(120)")
    env = [{"name": "KREMOTE_KEY",
            "valueFrom": {"secretKeyRef": {"name": "cluster-key", "key": "KREMOTE_KEY"}}}]
    created = await batch.create_namespaced_job(NS, job_manifest("c1", program, env=env))
    assert created.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": created.metadata.uid}

    running: dict[str, Any] = {}
    async with k8s_watch.Watch() as w:
        async for event in w.stream(
                core.list_namespaced_pod, NS, timeout_seconds=20,
                label_selector="kremote/cluster=c1,app.kubernetes.io/managed-by"):
            pod = event["object"]
            if pod.status.phase == "Running":
                running[pod.metadata.name] = pod
            if len(running) == 2:
                w.stop()
                break
    assert len(running) == 2
    for name, pod in running.items():
        index = pod.metadata.labels["batch.kubernetes.io/job-completion-index"]
        assert re.fullmatch(rf"c1-{index}-[a-z0-9]{{5}}", name)
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == index
        assert pod.metadata.labels["job-name"] == "c1"
        assert pod.metadata.labels["controller-uid"] == created.metadata.uid
        assert pod.metadata.labels["batch.kubernetes.io/controller-uid"] == created.metadata.uid
        assert pod.metadata.owner_references[0].uid == created.metadata.uid
        assert pod.metadata.owner_references[0].kind == "Job"
        assert pod.spec.node_name == "kubesim-node-0" and pod.status.pod_ip == "127.0.0.1"
        cs = pod.status.container_statuses[0]
        assert cs.state.running is not None and cs.ready and cs.restart_count == 0

    by_index = {p.metadata.labels["batch.kubernetes.io/job-completion-index"]: n
                for n, p in running.items()}
    # Follow streams output as it comes, from the start.
    resp = await core.read_namespaced_pod_log(by_index["1"], NS, container="agent",
                                              follow=True, _preload_content=False)
    seen = b""
    async with resp:
        while b"bye" not in seen:
            seen += await asyncio.wait_for(resp.content.readline(), 60)
    assert seen.decode().splitlines() == ["key s3cr3t index 1 home True", "tick 0", "tick 1",
                                          "tick 2", "bye"]
    await eventually(lambda: _log_has(core, by_index["0"], "bye"))
    log0 = await core.read_namespaced_pod_log(by_index["0"], NS)
    assert log0.startswith("key s3cr3t index 0 home True\n")
    assert await core.read_namespaced_pod_log(by_index["0"], NS, tail_lines=2) == \
        "tick 2\nbye\n"
    stamped = await core.read_namespaced_pod_log(by_index["0"], NS, timestamps=True)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z key s3cr3t", stamped)

    # Label and field selectors.
    async def names(**kw: Any) -> set[str]:
        return {p.metadata.name for p in (await core.list_namespaced_pod(NS, **kw)).items}
    assert await names(label_selector="batch.kubernetes.io/job-completion-index=1") == \
        {by_index["1"]}
    assert await names(label_selector="batch.kubernetes.io/job-completion-index!=1") == \
        {by_index["0"]}
    assert await names(label_selector="job-name in (c1,other),kremote/cluster==c1") == \
        set(running)
    assert await names(label_selector="job-name notin (c1)") == set()
    assert await names(label_selector="!job-name") == set()
    assert await names(field_selector=f"metadata.name={by_index['0']}") == {by_index["0"]}
    assert await names(field_selector="status.phase=Running") == set(running)
    assert await names(field_selector="status.phase!=Running") == set()
    assert await names(field_selector="metadata.namespace=default,spec.nodeName=kubesim-node-0"
                       ) == set(running)
    with pytest.raises(ApiException) as bad:
        await core.list_namespaced_pod(NS, field_selector="spec.bogus=1")
    assert bad.value.status == 400 and "field label not supported" in bad.value.body
    reasons = [e.reason for e in await events_for(core, by_index["0"])]
    assert reasons[:5] == ["Scheduled", "Pulling", "Pulled", "Created", "Started"] or \
        {"Scheduled", "Created", "Started"} <= set(reasons)
    job_events = (await core.list_namespaced_event(
        NS, field_selector=f"involvedObject.kind=Job,involvedObject.uid={created.metadata.uid}"
    )).items
    assert sorted(e.message for e in job_events) == sorted(f"Created pod: {n}" for n in running)

    job = await batch.read_namespaced_job_status("c1", NS)
    assert job.status.active == 2 and job.status.ready == 2 and job.status.start_time
    pids = {p["pod"]: p["pid"] for p in sim.processes()}
    assert set(pids) == set(running) and all(pid_alive(p) for p in pids.values())

    await batch.delete_namespaced_job("c1", NS, propagation_policy="Background")
    await eventually(lambda: _empty(pods_of(core, "c1")), what="pods deleted")
    await eventually(lambda: not any(pid_alive(p) for p in pids.values()),
                     what="processes gone")
    with pytest.raises(ApiException) as gone:
        await batch.read_namespaced_job("c1", NS)
    assert gone.value.status == 404 and json.loads(gone.value.body)["reason"] == "NotFound"


async def _empty(coro: Any) -> bool:
    return not await coro


@pytest.mark.asyncio
async def test_follow_ends_with_the_process_and_pod_succeeds(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    program = "import time\nfor i in range(3):\n    print('line', i); time.sleep(0.15)"
    await core.create_namespaced_pod(NS, pod_manifest("short", program))
    await wait_running(core, "short")
    resp = await core.read_namespaced_pod_log("short", NS, follow=True, _preload_content=False)
    async with resp:
        body = await asyncio.wait_for(resp.read(), 60)  # returns only when the stream ends
    assert body.decode().splitlines() == ["line 0", "line 1", "line 2"]

    async def done() -> Any:
        pod = await core.read_namespaced_pod("short", NS)
        return pod if pod.status.phase == "Succeeded" else None
    pod = await eventually(done)
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"


@pytest.mark.asyncio
async def test_patch_deadline_fails_job_with_deadline_exceeded(sim: KubeSim, api: Any) -> None:
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_manifest("ttl", SLEEP, count=1, deadline=600))
    pod = await eventually(lambda: pods_of(core, "ttl"))
    await wait_running(core, pod[0].metadata.name)
    pid = sim.processes()[0]["pid"]
    # Strategic merge (the client's default for dicts), merge patch and JSON patch.
    await batch.patch_namespaced_job("ttl", NS, {"metadata": {"labels": {"extended": "yes"}}})
    await batch.patch_namespaced_job(
        "ttl", NS, {"metadata": {"annotations": {"kremote/ttl": "1"}}},
        _content_type="application/merge-patch+json")
    await batch.patch_namespaced_job(
        "ttl", NS, [{"op": "add", "path": "/metadata/annotations/json-patched", "value": "1"}])
    patched = await batch.patch_namespaced_job("ttl", NS, {"spec": {"activeDeadlineSeconds": 1}})
    assert patched.spec.active_deadline_seconds == 1
    assert patched.metadata.labels["extended"] == "yes"
    assert patched.metadata.annotations == {"kremote/ttl": "1", "json-patched": "1"}

    async def failed() -> Any:
        job = await batch.read_namespaced_job("ttl", NS)
        return job if any(c.type == "Failed" and c.status == "True"
                          for c in job.status.conditions or []) else None
    job = await eventually(failed)
    cond = next(c for c in job.status.conditions if c.type == "Failed")
    assert cond.reason == "DeadlineExceeded"
    assert cond.message == "Job was active longer than specified deadline"
    assert job.status.failed == 1 and not job.status.active
    await eventually(lambda: _empty(pods_of(core, "ttl")), what="pods killed")
    assert not pid_alive(pid)
    events = await events_for(core, "ttl")
    assert any(e.reason == "DeadlineExceeded" and e.type == "Warning" for e in events)


@pytest.mark.asyncio
async def test_suspend_holds_pods_until_resumed(sim: KubeSim, api: Any) -> None:
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_manifest("held", SLEEP, suspend=True))

    async def conditions() -> list[tuple[str, str]]:
        job = await batch.read_namespaced_job("held", NS)
        return [(c.type, c.reason) for c in job.status.conditions or []]

    assert await eventually(conditions, what="the Job's conditions") == [
        ("Suspended", "JobSuspended")]
    assert await pods_of(core, "held") == []  # the controller has seen it: no pod made
    await batch.patch_namespaced_job("held", NS, {"spec": {"suspend": False}})
    pods = await eventually(lambda: pods_of(core, "held"))
    assert len(pods) == 2


@pytest.mark.asyncio
async def test_job_completes_and_orphan_and_foreground_deletion(sim: KubeSim, api: Any) -> None:
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_manifest("quick", "print('done')"))

    async def complete() -> Any:
        job = await batch.read_namespaced_job("quick", NS)
        return job if any(c.type == "Complete" for c in job.status.conditions or []) else None
    job = await eventually(complete)
    assert job.status.succeeded == 2 and job.status.completed_indexes == "0-1"
    assert job.status.completion_time
    # Orphan (the REST default for Jobs): pods stay, without their ownerReference.
    await batch.delete_namespaced_job("quick", NS)
    pods = await pods_of(core, "quick")
    assert len(pods) == 2 and all(not p.metadata.owner_references for p in pods)

    await batch.create_namespaced_job(NS, job_manifest("fg", SLEEP, count=1))
    await eventually(lambda: pods_of(core, "fg"))
    await batch.delete_namespaced_job("fg", NS, propagation_policy="Foreground")
    held = await batch.read_namespaced_job("fg", NS)  # waits for its pods
    assert held.metadata.deletion_timestamp and "foregroundDeletion" in held.metadata.finalizers

    async def job_gone() -> bool:
        try:
            await batch.read_namespaced_job("fg", NS)
        except ApiException as exc:
            return exc.status == 404
        return False
    await eventually(job_gone)
    assert await pods_of(core, "fg") == []


@pytest.mark.asyncio
async def test_garbage_collector_follows_a_pod_owner_in_the_same_namespace_only(
        sim: KubeSim, api: Any) -> None:
    """A Job owned by a pod goes with it; an owner reference to a pod of another namespace,
    or with a stale uid, is dangling (Kubernetes' isDangling), so its dependent goes at once."""
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    owner = await core.create_namespaced_pod(NS, {
        "metadata": {"name": "notebook"},
        "spec": {"containers": [{"name": "nb", "image": "python:3.11-slim",
                                 "command": [sys.executable, "-c", SLEEP]}]}})
    await core.create_namespace({"metadata": {"name": "other"}})

    def owned(name: str, uid: str) -> dict[str, Any]:
        job = job_manifest(name, SLEEP, count=1)
        job["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod",
                                               "name": "notebook", "uid": uid}]
        return job
    await batch.create_namespaced_job(NS, owned("kept", owner.metadata.uid))
    await batch.create_namespaced_job("other", owned("elsewhere", owner.metadata.uid))
    await batch.create_namespaced_job(NS, owned("stale", "not-the-uid"))

    async def names(ns: str) -> set[str]:
        return {j.metadata.name for j in (await batch.list_namespaced_job(ns)).items}
    await eventually(lambda: pods_of(core, "kept"))
    await eventually(lambda: _async_eq(names(NS), {"kept"}), what="stale Job collected")
    await eventually(lambda: _async_eq(names("other"), set()), what="cross-namespace owner")
    await core.delete_namespaced_pod("notebook", NS, grace_period_seconds=0)
    await eventually(lambda: _async_eq(names(NS), set()), what="Job gone with its pod owner")
    await eventually(lambda: _async_eq(pods_of(core, "kept"), []), what="its pods gone too")


async def _async_eq(value: Any, expected: Any) -> bool:
    return (await value) == expected


@pytest.mark.asyncio
async def test_api_errors_are_status_objects(sim: KubeSim, api: Any) -> None:
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    bad = job_manifest("bad", SLEEP)
    del bad["spec"]["template"]["spec"]["containers"][0]["image"]
    with pytest.raises(ApiException) as invalid:
        await batch.create_namespaced_job(NS, bad)
    status = json.loads(invalid.value.body)
    assert invalid.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"] == ('Job.batch "bad" is invalid: '
                                 'spec.template.spec.containers[0].image: Required value')
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as exists:
        await core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
    assert exists.value.status == 409 and json.loads(exists.value.body)["reason"] == \
        "AlreadyExists"
    stale = await core.read_namespaced_config_map("cm", NS)
    await core.patch_namespaced_config_map("cm", NS, {"data": {"a": "2"}})
    with pytest.raises(ApiException) as conflict:
        await core.replace_namespaced_config_map("cm", NS, stale)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == \
        "Conflict"

    sim.inject_error(429, count=1, verb="list", resource="pods", retry_after=3)
    with pytest.raises(ApiException) as throttled:
        await core.list_namespaced_pod(NS)
    body = json.loads(throttled.value.body)
    assert throttled.value.status == 429 and body["reason"] == "TooManyRequests"
    assert body["kind"] == "Status" and body["details"]["retryAfterSeconds"] == 3
    assert throttled.value.headers["Retry-After"] == "3"
    await core.list_namespaced_pod(NS)  # only the next one failed
    sim.inject_error(500, count=2, method="POST", path="/configmaps$")
    for _ in range(2):
        with pytest.raises(ApiException) as internal:
            await core.create_namespaced_config_map(NS, {"metadata": {"name": "x"}})
        assert internal.value.status == 500
        assert json.loads(internal.value.body)["reason"] == "InternalError"
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "x"}})


@pytest.mark.asyncio
async def test_auth_requires_bearer_token(sim: KubeSim) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/api/v1/namespaces/default/pods") as r:
            assert r.status == 401
            assert (await r.json())["reason"] == "Unauthorized"
        async with http.get(f"{sim.url}/api", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with http.get(f"{sim.url}/api",
                            headers={"Authorization": f"Bearer {sim.token}"}) as r:
            assert r.status == 200 and (await r.json())["versions"] == ["v1"]
        async with http.get(f"{sim.url}/healthz") as r:
            assert r.status == 200
        # watch=1 (Go's ParseBool) streams JSON lines; a client that leaves is noticed.
        auth = {"Authorization": f"Bearer {sim.token}"}
        async with http.get(f"{sim.url}/api/v1/namespaces/default/pods?watch=1",
                            headers=auth) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert sim.state()["watches"] == 1
        await eventually(lambda: sim.state()["watches"] == 0, what="watch closed")


# ---------------------------------------------------------------------------- watches

@pytest.mark.asyncio
async def test_watch_resume_timeout_bookmarks_drop_and_410(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "a", "labels": {"w": "1"}}})
    listed = await core.list_namespaced_config_map(NS, label_selector="w")
    rv = listed.metadata.resource_version
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "b", "labels": {"w": "1"}}})
    await core.patch_namespaced_config_map("a", NS, {"data": {"k": "v"}})
    await core.patch_namespaced_config_map("b", NS, {"metadata": {"labels": {"w": None}}})
    await core.delete_namespaced_config_map("a", NS)

    started = time.monotonic()
    seen = await watch_events(core.list_namespaced_config_map, NS, label_selector="w",
                              resource_version=rv, timeout_seconds=1)
    assert 0.9 < time.monotonic() - started < 5  # the server closed the stream on time
    # b leaving the selector is a DELETED for this watch.
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b"), ("DELETED", "a")]

    # No resourceVersion: synthetic ADDED for what exists.
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "c", "labels": {"w": "1"}}})
    initial = await watch_events(core.list_namespaced_config_map, NS, label_selector="w",
                                 timeout_seconds=1)
    assert initial == [("ADDED", "c")]

    # Bookmarks, and a dropped connection ends the stream.
    sim.configure(bookmark_interval=0.1)
    resp = await core.list_namespaced_config_map(NS, watch=True, allow_watch_bookmarks=True,
                                                 resource_version=rv, timeout_seconds=30,
                                                 _preload_content=False)
    async with resp:
        kinds = []
        while "BOOKMARK" not in kinds:
            kinds.append(json.loads(await asyncio.wait_for(resp.content.readline(), 60))["type"])
        assert sim.drop_watches() >= 1
        rest = await asyncio.wait_for(resp.content.read(), 60)
    assert all(json.loads(line)["type"] in ("BOOKMARK", "ADDED", "MODIFIED", "DELETED")
               for line in rest.splitlines())

    # Compaction: the old resourceVersion is gone (410 as a watch ERROR event).
    sim.compact()
    with pytest.raises(ApiException) as expired:
        await watch_events(core.list_namespaced_config_map, NS, resource_version=rv,
                           timeout_seconds=2)
    assert expired.value.status == 410 and "too old resource version" in expired.value.reason


@pytest.mark.asyncio
async def test_paginated_list_and_stale_continue_410(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    for i in range(5):
        await core.create_namespaced_config_map(NS, {"metadata": {"name": f"cm{i}"}})
    first = await core.list_namespaced_config_map(NS, limit=2)
    assert [c.metadata.name for c in first.items] == ["cm0", "cm1"]
    assert first.metadata.remaining_item_count == 3
    second = await core.list_namespaced_config_map(NS, limit=2, _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["cm2", "cm3"]
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "later"}})
    sim.compact()  # the list's resourceVersion is now older than the compacted window
    with pytest.raises(ApiException) as expired:
        await core.list_namespaced_config_map(NS, limit=2, _continue=second.metadata._continue)
    assert expired.value.status == 410 and json.loads(expired.value.body)["reason"] == "Expired"


# ---------------------------------------------------------------------------- failures

@pytest.mark.asyncio
async def test_unknown_and_invalid_images(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await core.create_namespaced_pod(NS, pod_manifest("nope", SLEEP, image="unknown/agent:1"))

    async def backoff() -> Any:
        pod = await core.read_namespaced_pod("nope", NS)
        waiting = pod.status.container_statuses and pod.status.container_statuses[0].state.waiting
        return waiting if waiting and waiting.reason == "ImagePullBackOff" else None
    waiting = await eventually(backoff)
    assert waiting.message == 'Back-off pulling image "unknown/agent:1"'
    events = await events_for(core, "nope")
    failed = [e.message for e in events if e.reason == "Failed" and e.type == "Warning"]
    assert any(m.startswith('Failed to pull image "unknown/agent:1": ') and
               m.endswith("not found") for m in failed)
    assert "Error: ErrImagePull" in failed and "Error: ImagePullBackOff" in failed
    assert any(e.reason == "BackOff" for e in events)
    with pytest.raises(ApiException) as early:
        await core.read_namespaced_pod_log("nope", NS)
    assert early.value.status == 400
    assert json.loads(early.value.body)["message"] == \
        'container "agent" in pod "nope" is waiting to start: image can\'t be pulled'
    # The image becomes known: the next pull succeeds.
    sim.set_unknown_images(prefixes=[])
    await wait_running(core, "nope")

    await core.create_namespaced_pod(NS, pod_manifest("badref", SLEEP, image="Not A/Valid:Image"))

    async def invalid() -> Any:
        pod = await core.read_namespaced_pod("badref", NS)
        waiting = pod.status.container_statuses and pod.status.container_statuses[0].state.waiting
        return waiting if waiting and waiting.reason == "InvalidImageName" else None
    assert "invalid reference format" in (await eventually(invalid)).message


@pytest.mark.asyncio
async def test_logs_before_start_and_missing_secret(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "t"}}}]
    await core.create_namespaced_pod(NS, pod_manifest(
        "cfg", "import os; print(os.environ['TOKEN'], os.environ['FROM_CM']); "
               "import time; time.sleep(60)", env=env,
        envFrom=[{"configMapRef": {"name": "settings"}}]))

    async def config_error() -> Any:
        pod = await core.read_namespaced_pod("cfg", NS)
        waiting = pod.status.container_statuses and pod.status.container_statuses[0].state.waiting
        return waiting if waiting and waiting.reason == "CreateContainerConfigError" else None
    assert (await eventually(config_error)).message == 'configmap "settings" not found'
    with pytest.raises(ApiException) as early:
        await core.read_namespaced_pod_log("cfg", NS, container="agent")
    assert early.value.status == 400 and json.loads(early.value.body)["message"] == \
        'container "agent" in pod "cfg" is waiting to start: CreateContainerConfigError'
    assert any(e.message == 'Error: configmap "settings" not found'
               for e in await events_for(core, "cfg"))
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "settings"},
                                                 "data": {"FROM_CM": "cm-value"}})
    await core.create_namespaced_secret(NS, {"metadata": {"name": "later"},
                                             "stringData": {"t": "tok"}})
    await wait_running(core, "cfg")
    await eventually(lambda: _log_has(core, "cfg", "tok cm-value"))

    sim.configure(pull_delay=5.0)  # ContainerCreating while the image "pulls"
    await core.create_namespaced_pod(NS, pod_manifest("slow", SLEEP, image="python:3.12"))
    await eventually(lambda: _scheduled(core, "slow"))
    with pytest.raises(ApiException) as creating:
        await core.read_namespaced_pod_log("slow", NS)
    assert creating.value.status == 400 and json.loads(creating.value.body)["message"] == \
        'container "agent" in pod "slow" is waiting to start: ContainerCreating'


async def _log_has(core: k8s.CoreV1Api, pod: str, text: str) -> bool:
    return text in await core.read_namespaced_pod_log(pod, NS)


async def _scheduled(core: k8s.CoreV1Api, pod: str) -> bool:
    return bool((await core.read_namespaced_pod(pod, NS)).spec.node_name)


@pytest.mark.asyncio
async def test_unschedulable_gpu_then_node_grows(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await core.create_namespaced_pod(NS, pod_manifest(
        "gpu", SLEEP, resources={"limits": {"nvidia.com/gpu": 1, "memory": "1Gi"}}))

    async def failed_scheduling() -> Any:
        events = [e for e in await events_for(core, "gpu") if e.reason == "FailedScheduling"]
        return events[0] if events and events[0].series and events[0].series.count >= 2 \
            else None
    event = await eventually(failed_scheduling)
    # written through events.k8s.io/v1, as the scheduler does: core/v1 shows eventTime and
    # series, no count or first/lastTimestamp
    assert event.type == "Warning" and event.reporting_component == "default-scheduler"
    assert event.event_time and event.last_timestamp is None and event.count is None
    assert event.message.startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    pod = await core.read_namespaced_pod("gpu", NS)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    cond = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert pod.spec.containers[0].resources.requests == {"nvidia.com/gpu": "1", "memory": "1Gi"}
    sim.set_node(gpus=1)
    await wait_running(core, "gpu")


@pytest.mark.asyncio
async def test_oom_kill_fails_job_with_backoff_limit(sim: KubeSim, api: Any) -> None:
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_manifest("oom", SLEEP, count=1))
    pod = (await eventually(lambda: pods_of(core, "oom")))[0]
    await wait_running(core, pod.metadata.name)
    pid = sim.oom_kill(NS, pod.metadata.name)

    async def terminated() -> Any:
        p = await core.read_namespaced_pod(pod.metadata.name, NS)
        return p if p.status.phase == "Failed" else None
    p = await eventually(terminated)
    term = p.status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("OOMKilled", 137) and not pid_alive(pid)

    async def job_failed() -> Any:
        job = await batch.read_namespaced_job("oom", NS)
        return next((c for c in job.status.conditions or [] if c.type == "Failed"), None)
    cond = await eventually(job_failed)
    assert cond.reason == "BackoffLimitExceeded"
    node_events = (await core.list_namespaced_event(
        NS, field_selector="involvedObject.kind=Node,reason=OOMKilling")).items
    assert node_events and f"Killed process {pid}" in node_events[0].message


@pytest.mark.asyncio
async def test_eviction(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    await core.create_namespaced_pod(NS, pod_manifest("victim", SLEEP))
    await wait_running(core, "victim")
    pid = sim.processes()[0]["pid"]
    sim.evict(NS, "victim", "The node was low on resource: memory.")

    async def evicted() -> Any:
        pod = await core.read_namespaced_pod("victim", NS)
        return pod if pod.status.phase == "Failed" else None
    pod = await eventually(evicted)
    assert pod.status.reason == "Evicted"
    assert pod.status.message == "The node was low on resource: memory."
    assert any(c.type == "DisruptionTarget" for c in pod.status.conditions)
    assert any(e.reason == "Evicted" and e.type == "Warning" for e in await events_for(core,
                                                                                       "victim"))
    await eventually(lambda: not pid_alive(pid), what="evicted process gone")


@pytest.mark.asyncio
async def test_crash_loop_back_off_and_previous_logs(sim: KubeSim, api: Any) -> None:
    core = k8s.CoreV1Api(api)
    pod = pod_manifest("crashy", "import sys; print('boom'); sys.exit(3)")
    pod["spec"]["restartPolicy"] = "Always"
    await core.create_namespaced_pod(NS, pod)

    async def looping() -> Any:
        p = await core.read_namespaced_pod("crashy", NS)
        cs = p.status.container_statuses and p.status.container_statuses[0]
        return cs if cs and cs.restart_count >= 2 else None
    cs = await eventually(looping)
    assert cs.last_state.terminated.exit_code == 3
    assert cs.last_state.terminated.reason == "Error"
    assert (await core.read_namespaced_pod("crashy", NS)).status.phase == "Running"
    assert await core.read_namespaced_pod_log("crashy", NS, previous=True) == "boom\n"
    assert any(e.reason == "BackOff" and "Back-off restarting failed container agent" in e.message
               for e in await events_for(core, "crashy"))


@pytest.mark.asyncio
async def test_unique_pod_ips_and_tcp_readiness_probe(tmp_path: Path) -> None:
    """Two pods listen on the same port, each on its own IP; Ready follows the probe."""
    with socket.socket() as probe:  # a port nobody on this machine listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ("import os, socket, time\n"
              "time.sleep(0.5)\n"
              f"s = socket.socket(); s.bind((os.environ['POD_IP'], {port})); s.listen()\n"
              "print('listening', os.environ['POD_IP'], flush=True)\n"
              "time.sleep(120)")
    async with KubeSim(pod_ips="unique", **FAST) as sim:
        path = sim.write_kubeconfig(tmp_path / "kc")
        cfg = k8s.Configuration()
        await k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
        async with k8s.ApiClient(cfg) as client:
            core = k8s.CoreV1Api(client)
            for name in ("p1", "p2"):
                await core.create_namespaced_pod(NS, pod_manifest(
                    name, server, ports=[{"name": "agent", "containerPort": port}],
                    env=[{"name": "POD_IP",
                          "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    readinessProbe={"tcpSocket": {"port": "agent"}, "periodSeconds": 1}))
            first = await wait_running(core, "p1")
            assert first.status.container_statuses[0].ready is False  # not listening yet

            async def ready(name: str) -> Any:
                p = await core.read_namespaced_pod(name, NS)
                return p if any(c.type == "Ready" and c.status == "True"
                                for c in p.status.conditions) else None
            p1 = await eventually(lambda: ready("p1"))
            p2 = await eventually(lambda: ready("p2"))
            assert p1.status.pod_ip != p2.status.pod_ip
            assert all(p.status.pod_ip.startswith("127.") for p in (p1, p2))
            for p in (p1, p2):
                log = await core.read_namespaced_pod_log(p.metadata.name, NS)
                assert log == f"listening {p.status.pod_ip}\n"


# ---------------------------------------------------------------------------- lifecycle

SPAWNER = ("import subprocess, sys, time\n"
           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
           "print('pids', child.pid, flush=True)\n"
           "time.sleep(300)")


@pytest.mark.asyncio
async def test_stop_kills_every_pod_process(tmp_path: Path) -> None:
    sim = await KubeSim(**FAST).start()
    try:
        path = sim.write_kubeconfig(tmp_path / "kc", tls=False)  # plain http works too
        cfg = k8s.Configuration()
        await k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
        async with k8s.ApiClient(cfg) as client:
            core = k8s.CoreV1Api(client)
            await core.create_namespaced_pod(NS, pod_manifest("spawner", SPAWNER))
            await wait_running(core, "spawner")
            log = await eventually(lambda: _log_pids(core))
        leader = sim.processes()[0]["pid"]
        child = int(log.split()[1])
        workdir = sim.pod_workdir(NS, "spawner")
        assert pid_alive(leader) and pid_alive(child) and os.path.isdir(workdir or "")
    finally:
        await sim.stop()
    assert not pid_alive(leader) and not pid_alive(child)
    assert not os.path.exists(workdir or "")


async def _log_pids(core: k8s.CoreV1Api) -> str:
    text = await core.read_namespaced_pod_log("spawner", NS)
    return text if text.startswith("pids ") else ""


def test_thread_helper_and_http_knobs(tmp_path: Path) -> None:
    with KubeSimThread(nodes=[NodeSpec("n1", cpu="1"), NodeSpec("n2", gpus=2)]) as ks:
        ctl = KubeSimControl(ks.url, ks.token)
        ctl.add_unknown_image(image="private/agent:9")
        ks.call(lambda sim: sim.add_node("n3", gpus=1))
        state = ctl.state()
        assert sorted(state["objects"]["nodes"]) == ["/n1", "/n2", "/n3"]
        assert ks.call("processes") == []
        ctl.inject_error(code=503, count=1, verb="get")
        req = urllib.request.Request(f"{ks.url}/version",
                                     headers={"Authorization": f"Bearer {ks.token}"})
        with pytest.raises(urllib.error.HTTPError) as unavailable:
            urllib.request.urlopen(req, timeout=10)
        assert unavailable.value.code == 503
        unavailable.value.close()
        with urllib.request.urlopen(req, timeout=10) as ok:
            assert json.loads(ok.read())["gitVersion"]
        assert "private/agent:9" in ks.sim.config.unknown_images  # type: ignore[union-attr]


def test_standalone_process(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "tests.kubesim", "--port", "0",
                             "--kubeconfig", str(kubeconfig), "--gpus", "1", "--rbac",
                             "--pod-ips", "ipv6"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        ctl = KubeSimControl.from_kubeconfig(kubeconfig)
        assert ctl.state()["objects"]["namespaces"]
        assert ctl.compact() > 0
        # --rbac: a ServiceAccount token with no Role bound may do nothing
        token = ctl.service_account_token(namespace="default", name="default")
        request = urllib.request.Request(f"{url}/api/v1/namespaces/default/secrets",
                                         headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read())["message"] == (
            'secrets is forbidden: User "system:serviceaccount:default:default" cannot list '
            'resource "secrets" in API group "" in the namespace "default"')
        refused.value.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- kubectl

def _kubectls() -> list[str]:
    found = [p for p in ["/usr/bin/kubectl", os.environ.get("KUBESIM_KUBECTL", "")]
             if p and os.path.exists(p)]
    return found or ["/usr/bin/kubectl"]


@pytest.mark.parametrize("kubectl", _kubectls())
def test_kubectl_get_logs_delete(kubectl: str, tmp_path: Path) -> None:
    if not os.path.exists(kubectl):
        pytest.skip(f"{kubectl} is not installed")
    with KubeSimThread(**FAST) as ks:
        kc = ks.write_kubeconfig(tmp_path / "kubeconfig")
        env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": kc}

        def run(*args: str) -> str:
            out = subprocess.run([kubectl, "--kubeconfig", kc, *args], env=env, check=False,
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return out.stdout

        manifest = tmp_path / "job.yaml"
        manifest.write_text(json.dumps(job_manifest(
            "kc", "print('hello from', __import__('os').environ['JOB_COMPLETION_INDEX']);"
                  "import time; time.sleep(120)")))
        run("create", "--validate=false", "-f", str(manifest))
        deadline = time.monotonic() + 15
        while True:
            table = run("get", "jobs,pods", "-l", "app.kubernetes.io/managed-by=jupyter-kremote")
            pods = re.findall(r"pod/(kc-\d-\w{5})\s+1/1\s+Running", table)
            if len(pods) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "job.batch/kc" in table and len(pods) == 2, table
        assert re.search(r"job\.batch/kc\s+(Running\s+)?0/2", table), table
        index = {p: p.split("-")[1] for p in pods}
        for pod in pods:
            deadline = time.monotonic() + 10
            while "hello" not in (out := run("logs", pod)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert out == f"hello from {index[pod]}\n"
        assert "Started container agent" in run("get", "events")
        pids = [p["pid"] for p in ks.call("processes")]
        assert len(pids) == 2
        assert 'job.batch "kc" deleted' in run("delete", "job", "kc")
        deadline = time.monotonic() + 10
        while run("get", "pods", "-o", "name").strip() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run("get", "jobs,pods", "-o", "name").strip() == ""
        assert not any(pid_alive(p) for p in pids)



@pytest.mark.asyncio
async def test_failed_start_leaves_no_folder() -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("kubesim-*"))
    with pytest.raises(OSError, match="203.0.113.1"):
        await KubeSim(host="203.0.113.1").start()  # not an address of this machine
    assert set(Path(tempfile.gettempdir()).glob("kubesim-*")) == before
