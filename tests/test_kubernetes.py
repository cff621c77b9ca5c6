"""%%remote on the Kubernetes backend, through a real kernel, against the kubesim emulator.

With ``KREMOTE_TEST_KUBECONFIG`` set the same tests run against that cluster instead
(those that need the emulator's fault knobs are skipped); ``KREMOTE_TEST_IMAGE`` then
names an image that has jupyter-kremote installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest
from conftest import wait_for
from kube_kernels import (  # noqa: F401 - PRODUCT_USER, start_sim: for other modules
    MANAGED,
    PRODUCT_USER,
    Sim,
    kube_kernel,
    managed,
    running_sim,
    start_sim,
)

REAL = os.environ.get("KREMOTE_TEST_KUBECONFIG")
IMAGE_FLAG = f" --image {os.environ['KREMOTE_TEST_IMAGE']}" if os.environ.get(
    "KREMOTE_TEST_IMAGE") else ""
needs_sim = pytest.mark.skipif(bool(REAL), reason="needs the emulator's fault knobs")


@pytest.fixture
def sim(tmp_path):
    """kubesim with RBAC on; the product's kubeconfig holds a ServiceAccount token bound only
    to the Role it ships (templates/rbac.yaml), which proves that Role is enough."""
    if REAL:
        yield Sim(REAL, None, REAL)
        return
    with running_sim(tmp_path, pod_ips="unique") as started:
        yield started


@pytest.fixture
def kkernel(sim, notebook_dir):
    with kube_kernel(sim, notebook_dir) as k:
        yield k


def test_cells_files_variables_and_ranks_on_pods(kkernel, sim):
    (kkernel.cwd / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    res = kkernel.run(f"%%remote -n 2 --cpu 200m --mem 200Mi{IMAGE_FLAG}\n"
                      "import os, helpers\n"
                      "print('rank', os.environ['KREMOTE_RANK'], helpers.double(21))\n"
                      "print(*[os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'MASTER_PORT')])\n"
                      "import socket\n"
                      "print('master is rank 0:', socket.gethostbyname(os.environ['MASTER_ADDR'])"
                      " == os.environ['KREMOTE_HOST'] if os.environ['RANK'] == '0' else '-')")
    assert res.status == "ok", res.outputs
    assert "[rank 0] rank 0 42\n" in res.stdout and "[rank 1] rank 1 42\n" in res.stdout
    assert "[rank 0] 0 2 29500\n" in res.stdout and "[rank 1] 1 2 29500\n" in res.stdout
    assert "[rank 0] master is rank 0: True\n" in res.stdout
    assert "rank 0: Running" in res.text  # start-up progress was shown
    assert kkernel.run("v = [1, 2]\n%remote push v").status == "ok"
    kkernel.run("%%remote\nw = v * int(os.environ['KREMOTE_RANK'])")
    res = kkernel.run("%remote pull w\nprint(w)")
    assert res.stdout == "[[], [1, 2]]\n"
    status = kkernel.run("%remote status").text
    assert "[kubernetes] 2 agent(s)" in status and "jupyter-kremote-default-" in status
    assert sorted(n.split("/")[0] for n in managed(sim.admin)) == [
        "job", "networkpolicy", "pod", "pod", "secret"]
    job, owners = secret_owners(sim.admin)
    assert {"kind": "Job", "name": job.metadata.name, "uid": job.metadata.uid} in owners


def secret_owners(kubeconfig: str):
    """(the Job, the ownerReferences of the cluster's Secret as dicts)."""
    async def go():
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            (job,) = (await client.BatchV1Api(api).list_job_for_all_namespaces(
                label_selector=MANAGED)).items
            (secret,) = (await client.CoreV1Api(api).list_secret_for_all_namespaces(
                label_selector=MANAGED)).items
            return job, [{"kind": o.kind, "name": o.name, "uid": o.uid}
                         for o in secret.metadata.owner_references or []]

    return asyncio.run(go())


def test_interrupt_and_extend_on_pods(kkernel, sim):
    assert kkernel.run(f"%%remote --ttl 60s{IMAGE_FLAG}\nkept = 1").status == "ok"
    kkernel.start_long_cell()
    kkernel.km.interrupt_kernel()
    reply = kkernel.kc.get_shell_msg(timeout=10)["content"]  # the cell would sleep 60 s
    assert reply["ename"] == "KeyboardInterrupt"
    assert kkernel.run("%%remote\nprint(kept)").stdout == "1\n"
    assert kkernel.run("%remote extend 1h").status == "ok"
    deadline = job_deadline(sim.admin)
    assert 3600 < deadline <= 3600 + 120


def job_deadline(kubeconfig: str) -> int:
    async def go() -> int:
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            jobs = await client.BatchV1Api(api).list_job_for_all_namespaces(
                label_selector=MANAGED)
            return jobs.items[0].spec.active_deadline_seconds

    return asyncio.run(go())


def _start_fails(kkernel, line: str, expected: list[str], within: float):
    """The start fails with ``expected`` (a cause only the fast path names), the cell
    answering within a deadline of ``within`` plus slack for a loaded machine."""
    res = kkernel.run(line + "\nran = 1", timeout=within + 30)
    assert res.status == "error"
    assert res.error["ename"] in ("ClusterStartError", "ClusterEnded"), res.error
    for text in expected:
        assert text in res.error["evalue"], res.error["evalue"]
    return res


@pytest.mark.parametrize("image, reason", [
    ("unknown/no-such-image:1", "the image could not be pulled"),  # after the pull grace
    ("Bad/Image:x", "InvalidImageName: the image name is not valid"),
])
def test_bad_image_fails_fast_and_leaves_nothing(kkernel, sim, image, reason):
    _start_fails(kkernel, f"%%remote --image {image} --connect-timeout 60",
                 [reason, "last events:"], 40)
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)


def test_unschedulable_gpu_request_names_the_scheduler_message(kkernel, sim):
    _start_fails(kkernel, f"%%remote --gpu 4 --connect-timeout 3{IMAGE_FLAG}",
                 ["no node can run it", "Insufficient nvidia.com/gpu",
                  "--connect-timeout 3s"], 3 + 5)
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)


def test_missing_secret_is_create_container_config_error(kkernel, sim):
    (kkernel.cwd / "needs-secret.yaml").write_text(
        "spec:\n  template:\n    spec:\n      containers:\n        - name: agent\n"
        "          envFrom:\n            - secretRef:\n                name: not-there\n")
    _start_fails(kkernel, f"%%remote -t needs-secret.yaml --connect-timeout 30{IMAGE_FLAG}",
                 ["CreateContainerConfigError", "a Secret or ConfigMap it needs is missing"],
                 15)


def _crash_template(kkernel) -> None:
    (kkernel.cwd / "crash.yaml").write_text(
        "spec:\n  template:\n    spec:\n      containers:\n        - name: agent\n"
        "          command: [python, -c, \"print('cannot start: bad config'); exit(3)\"]\n")


def test_agent_crash_before_registering_shows_log_tail(kkernel, sim):
    _crash_template(kkernel)
    _start_fails(kkernel, "%%remote -t crash.yaml --connect-timeout 30",
                 ["exited with code 3", "cannot start: bad config"], 15)


@needs_sim
def test_agent_crash_reported_while_the_pod_watch_lags(kkernel, sim):
    """The Job's BackoffLimitExceeded arrives before the pod's terminated state (the pod watch
    is stalled): the message still names the exit code and the log tail, read from the API."""
    _crash_template(kkernel)
    sim.ks.call("stall_watches", resource="pods", future=True)
    try:
        _start_fails(kkernel, "%%remote -t crash.yaml --connect-timeout 30",
                     ["exited with code 3", "cannot start: bad config"], 15)
    finally:
        sim.ks.call("resume_watches")


@needs_sim
def test_oom_killed_agent_fails_the_cell_and_next_cell_says_so(kkernel, sim):
    assert kkernel.run("%%remote\nx = 1").status == "ok"
    kkernel.start_long_cell()
    pod = [p for p in managed(sim.admin) if p.startswith("pod/")][0].split("/")[1]
    sim[1].call("oom_kill", "default", pod)
    reply = kkernel.kc.get_shell_msg(timeout=45)["content"]  # the cell would sleep 60 s
    assert reply["ename"] == "AgentDied"
    assert "OOMKilled" in reply["evalue"] and "--mem" in reply["evalue"]
    res = kkernel.run("%%remote\nprint(x)")
    assert res.error["ename"] == "ClusterEnded" and "OOMKilled" in res.error["evalue"]
    assert "OOMKilling" in kkernel.run("%remote events").stdout or \
        "OOMKilled" in kkernel.run("%remote status").text


@needs_sim
def test_oom_kill_reported_while_the_pod_watch_lags(kkernel, sim):
    """The Job's BackoffLimitExceeded reaches the kernel before the OOM-killed pod's state
    (the pod watch is stalled): the cell still says OOMKilled, read from the API."""
    assert kkernel.run("%%remote\nx = 1").status == "ok"
    kkernel.start_long_cell()
    pod = next(p for p in managed(sim.admin) if p.startswith("pod/")).split("/")[1]
    sim.ks.call("stall_watches", resource="pods", future=True)
    try:
        sim.ks.call("oom_kill", "default", pod)
        reply = kkernel.kc.get_shell_msg(timeout=45)["content"]  # the cell would sleep 60 s
    finally:
        sim.ks.call("resume_watches")
    assert reply["ename"] == "AgentDied"
    assert "OOMKilled" in reply["evalue"] and "--mem" in reply["evalue"], reply["evalue"]


@needs_sim
def test_evicted_pod_ends_the_cluster(kkernel, sim):
    assert kkernel.run("%%remote\nx = 1").status == "ok"
    pod = [p for p in managed(sim.admin) if p.startswith("pod/")][0].split("/")[1]
    sim[1].call("evict", "default", pod, "The node was low on resource: memory.")
    assert wait_for(lambda: "evicted" in kkernel.run("%remote status").text, 60)
    res = kkernel.run("%%remote\nprint(x)")
    assert res.error["ename"] == "ClusterEnded" and "was evicted" in res.error["evalue"]


def test_ttl_deadline_ends_the_cluster(kkernel, sim):
    assert kkernel.run(f"%%remote --ttl 3s{IMAGE_FLAG}\nx = 1").status == "ok"
    assert wait_for(lambda: "TTL ran out" in kkernel.run("%remote status").text, 60)
    res = kkernel.run("%%remote\nprint(x)")
    assert res.error["ename"] == "ClusterEnded"
    assert "TTL ran out" in res.error["evalue"]


def test_logs_follow_on_pods(kkernel, sim):
    assert kkernel.run(f"%%remote --ttl 4s{IMAGE_FLAG}\nimport os\nos.system('echo pod-line')"
                       ).status == "ok"
    res = kkernel.run("%remote logs --follow", timeout=60)  # it ends with the pod
    assert res.status == "ok" and "pod-line" in res.stdout


def test_events_logs_and_render(kkernel, sim):
    assert kkernel.run(f"%%remote{IMAGE_FLAG}\nprint('hello')").status == "ok"
    events = kkernel.run("%remote events").stdout
    assert "Scheduled" in events and "Started" in events
    assert "listening on" in kkernel.run("%remote logs --rank 0").stdout
    res = kkernel.run("%remote render -t gpu --gpu 1 --mem 8Gi -n 2 -e HOME")
    assert res.status == "ok", res.outputs
    assert "kind: Job" in res.stdout and "nvidia.com/gpu: 1" in res.stdout
    assert "completions: 2" in res.stdout and "HOME: <redacted>" in res.stdout
    assert os.environ["HOME"] not in res.stdout.replace("HOME: <redacted>", "")
    bad = kkernel.run("%remote render --mem 4G1")
    assert bad.reply["ename"] == "UsageError" and "--mem 4G1: not a Kubernetes quantity" in \
        bad.stderr


@pytest.mark.skipif(not shutil.which("kubectl"), reason="Debian's kubectl is not installed")
def test_kubectl_sees_the_cluster(kkernel, sim):
    assert kkernel.run(f"%%remote -n 2{IMAGE_FLAG}\nprint('from the agent')").status == "ok"
    out = subprocess.run(["kubectl", "--kubeconfig", sim[0], "get", "jobs,pods", "-l",
                          MANAGED], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pods = [line for line in out.stdout.splitlines() if line.startswith("pod/")]
    assert len(pods) == 2 and all("Running" in line for line in pods), out.stdout
    assert "job.batch/jupyter-kremote-default-" in out.stdout
    pod = [p for p in managed(sim.admin) if p.startswith("pod/")][0]
    # kubectl logs reads the pod first (get pods): the user's own rights, not the product's
    logs = subprocess.run(["kubectl", "--kubeconfig", sim.admin, "logs", pod],
                          capture_output=True, text=True, timeout=30)
    assert "listening on" in logs.stdout, logs.stderr


@pytest.mark.asyncio
async def test_kube_cluster_api(sim, tmp_path, monkeypatch):
    from jupyter_kremote import KubeCluster, PodSpec
    from jupyter_kremote.backends.kube_api import KubeLoop

    monkeypatch.setenv("KREMOTE_KUBECONFIG", sim[0])
    monkeypatch.setattr(KubeLoop, "_instance", None)  # this test's emulator, not a cached one
    (tmp_path / "foo.py").write_text("def triple(x):\n    return 3 * x\n")
    image = os.environ.get("KREMOTE_TEST_IMAGE")
    spec = PodSpec(image=image, cpu="200m", mem="200Mi", gpu=0, count=2, files=["foo.py"])
    async with KubeCluster(name="x", spec=spec, root=tmp_path) as c:
        await c.run("import foo, os\nr = foo.triple(int(os.environ['KREMOTE_RANK']))")
        assert await c.pull("r") == [0, 3]
        assert await c.call(pow, 2, 5) == [32, 32]
        await c.push(z=7)
        assert await c.pull("z") == [7, 7]
    assert await asyncio.to_thread(wait_for, lambda: not managed(sim.admin), 20)


def _in_process_cluster(sim, monkeypatch):
    from jupyter_kremote.backends.kube_api import KubeLoop
    from jupyter_kremote.session import Cluster, ClusterOptions

    monkeypatch.setenv("KREMOTE_KUBECONFIG", sim[0])
    monkeypatch.setattr(KubeLoop, "_instance", None)
    return lambda: Cluster("drift", ClusterOptions(backend="kubernetes", connect_timeout=30,
                                                   image=os.environ.get("KREMOTE_TEST_IMAGE")))


def test_python_version_drift_is_a_clear_error(sim, monkeypatch):
    import jupyter_kremote.session as session
    from jupyter_kremote.errors import ClusterEnded

    start = _in_process_cluster(sim, monkeypatch)
    real = session.runtime_info()
    monkeypatch.setattr(session, "runtime_info", lambda: {**real, "python": "3.9.18"})
    with pytest.raises(ClusterEnded) as info:
        start()
    msg = str(info.value)
    assert "this kernel runs Python 3.9.18" in msg and f"runs Python {real['python']}" in msg
    assert wait_for(lambda: not managed(sim.admin), 60), managed(sim.admin)


def test_package_version_drift_is_a_warning_naming_both(sim, monkeypatch):
    import numpy

    start = _in_process_cluster(sim, monkeypatch)
    real = numpy.__version__
    monkeypatch.setattr(numpy, "__version__", "1.0.0")
    cluster = start()
    try:
        (warning,) = [w for w in cluster.warnings if w.startswith("numpy")]
        assert f"numpy {real} on the agents, 1.0.0 in this kernel" in warning
        assert "pin numpy==1.0.0" in warning
    finally:
        cluster.shutdown()


@needs_sim
def test_api_errors_are_retried_and_watches_resume(kkernel, sim):
    ks = sim[1]
    ks.call("inject_error", code=429, count=2, verb="create")
    ks.call("inject_error", code=500, count=1, verb="create")
    res = kkernel.run(f"%%remote{IMAGE_FLAG}\nx = 1")
    assert res.status == "ok", res.outputs  # 429/500 on create were retried
    ks.call("drop_watches")
    ks.call("compact")  # the watches must re-list (410 Gone) to see what follows
    pod = [p for p in managed(sim.admin) if p.startswith("pod/")][0].split("/")[1]
    ks.call("evict", "default", pod, "The node was low on resource: memory.")
    assert wait_for(lambda: "evicted" in kkernel.run("%remote status").text, 60)


def test_configmap_template_is_read_from_the_cluster(kkernel, sim):
    async def make() -> None:
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(config_file=sim.admin, client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            await client.CoreV1Api(api).create_namespaced_config_map("default", {
                "metadata": {"name": "kremote-templates"},
                "data": {"team.yaml": "spec:\n  template:\n    spec:\n"
                                      "      priorityClassName: team-high\n"}})

    asyncio.run(make())
    res = kkernel.run("%remote render -t configmap:kremote-templates/team.yaml")
    assert res.status == "ok", res.outputs
    assert "priorityClassName: team-high" in res.stdout
    bad = kkernel.run("%remote render -t configmap:kremote-templates/nope.yaml")
    assert bad.status == "error"
    assert bad.stderr == ("UsageError: template 'configmap:kremote-templates/nope.yaml': "
                          "ConfigMap kremote-templates has no key nope.yaml\n")


def test_attaching_to_a_busy_cluster_never_shuts_it_down(sim, monkeypatch):
    """A restarted kernel (or server) re-attaching while a cell runs: no drift round trip
    queued behind the cell, no shutdown; the cell and the agents' variables live on."""
    import threading

    from jupyter_kremote.session import Cluster

    first = _in_process_cluster(sim, monkeypatch)()
    try:
        first.push({"kept": 7})
        results: list = []
        cell = threading.Thread(target=lambda: results.append(first.run(
            "import time\nfor _ in range(1200): time.sleep(0.1)")), daemon=True)
        cell.start()
        assert wait_for(lambda: first.client.control("ping").get(0, {}).get("busy"), 60)
        second = Cluster("drift", first.options, backend=first.backend, handle=first.handle)
        assert any("busy" in w for w in second.warnings), second.warnings
        second.detach()
        assert first.client.control("ping").get(0, {}).get("busy")  # still running its cell
        first.client.interrupt()
        cell.join(15)
        assert results and results[0][0]["ename"] == "KeyboardInterrupt", results
        assert first.pull(["kept"]) == {0: {"kept": 7}}
    finally:
        first.shutdown()
