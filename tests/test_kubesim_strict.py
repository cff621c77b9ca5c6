"""kubesim as strict as a real API server, driven by kubectl 1.32 (and kubernetes_asyncio where
a watch is needed): RBAC with TokenRequest and access reviews, namespaces, admission (Pod
Security, ResourceQuota, ServiceAccount), Job conditions, disruptions, watches, IPv6."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

try:
    from tests.kubesim import KubeSim, KubeSimThread
except ImportError:  # tests/ is on sys.path but the repository root is not
    from kubesim import KubeSim, KubeSimThread  # type: ignore

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
FAST: dict[str, Any] = {"scheduler_retry": 0.2, "scheduler_retry_max": 0.4,
                        "max_grace_seconds": 1.0, "bookmark_interval": 0.3}
SLEEP = "import time; time.sleep(120)"
STUBBORN = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True)\ntime.sleep(120)")
pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


class Kubectl:
    """kubectl against one kubeconfig; `ok` wants exit 0, `fails` a non-zero exit."""

    def __init__(self, kubeconfig: str, home: Path) -> None:
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "HOME": str(home)}

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig, *args], input=stdin,
                              env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        out = self.run(*args, stdin=stdin)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        out = self.run(*args, stdin=stdin)
        assert out.returncode != 0, (args, out.stdout)
        return out.stderr.strip().splitlines()[-1]

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))


def until(fn: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One RBAC-enforcing emulator for the module, and kubectl as its admin."""
    home = tmp_path_factory.mktemp("kubectl")
    with KubeSimThread(rbac=True, **FAST) as ks:
        admin = Kubectl(ks.write_kubeconfig(home / "admin"), home)
        yield ks, admin, home


def as_account(ks: KubeSimThread, admin: Kubectl, home: Path, ns: str, name: str) -> Kubectl:
    """kubectl with a token `kubectl create token` issued for ServiceAccount ns/name."""
    token = admin.ok("create", "token", name, "-n", ns).strip()
    return Kubectl(ks.write_kubeconfig(home / f"{ns}-{name}", ns, token=token), home)


def pod_yaml(name: str, ns: str, **container: Any) -> str:
    spec = {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "python:3.11-slim", "command": ["python", "-c", SLEEP],
         **container}]}
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


# ---------------------------------------------------------------------------- RBAC

def test_rbac_tokens_roles_bindings_and_can_i(cluster: Any) -> None:
    ks, admin, home = cluster
    admin.ok("create", "namespace", "team")
    admin.ok("create", "serviceaccount", "bot", "-n", "team")
    bot = as_account(ks, admin, home, "team", "bot")
    assert bot.ok("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == \
        "system:serviceaccount:team:bot"

    # nothing is granted yet: the real 403 message, and can-i says no
    assert bot.fails("get", "secrets") == (
        'Error from server (Forbidden): secrets is forbidden: User '
        '"system:serviceaccount:team:bot" cannot list resource "secrets" in API group "" in '
        'the namespace "team"')
    assert bot.run("auth", "can-i", "list", "secrets").stdout.strip() == "no"
    assert admin.ok("auth", "can-i", "delete", "nodes").strip() == "yes"  # cluster-admin

    # a Role with subresources and resourceNames, bound to the account
    admin.ok("create", "role", "runner", "-n", "team", "--verb=get,list,watch",
             "--resource=pods,pods/log")
    admin.ok("create", "role", "one-secret", "-n", "team", "--verb=get",
             "--resource=secrets", "--resource-name=mine")
    for role in ("runner", "one-secret"):
        admin.ok("create", "rolebinding", role, "-n", "team", f"--role={role}",
                 "--serviceaccount=team:bot")
    admin.ok("create", "secret", "generic", "mine", "-n", "team", "--from-literal=k=v")
    admin.ok("create", "secret", "generic", "theirs", "-n", "team", "--from-literal=k=v")
    assert "No resources found in team namespace." in bot.run("get", "pods").stderr
    assert bot.ok("get", "secret", "mine", "-o", "name") == "secret/mine\n"
    assert bot.fails("get", "secret", "theirs").endswith(
        'secrets "theirs" is forbidden: User "system:serviceaccount:team:bot" cannot get '
        'resource "secrets" in API group "" in the namespace "team"')
    assert bot.fails("get", "secrets").endswith('cannot list resource "secrets" in API group '
                                                '"" in the namespace "team"')
    can = {q: bot.run("auth", "can-i", *q.split()).stdout.strip() for q in (
        "get pods --subresource=log", "watch pods", "deletecollection pods",
        "create pods/portforward", "get secrets/mine", "get secrets/theirs",
        "list jobs.batch", "get pods -n default")}
    assert can == {"get pods --subresource=log": "yes", "watch pods": "yes",
                   "deletecollection pods": "no", "create pods/portforward": "no",
                   "get secrets/mine": "yes", "get secrets/theirs": "no",
                   "list jobs.batch": "no", "get pods -n default": "no"}
    denied = ks.call("access_log", user="system:serviceaccount:team:bot", allowed=False)
    assert {(e["verb"], e["resource"], e["name"]) for e in denied} >= {
        ("list", "secrets", ""), ("get", "secrets", "theirs")}
    rules = bot.ok("auth", "can-i", "--list")
    assert "pods/log" in rules and "[mine]" in rules

    # a binding to a Role that does not exist is named in the review's reason
    admin.ok("create", "rolebinding", "ghost", "-n", "team", "--role=ghost",
             "--serviceaccount=team:bot")
    assert bot.run("auth", "can-i", "create", "jobs.batch").stdout.strip() == (
        'no - RBAC: role.rbac.authorization.k8s.io "ghost" not found')

    # tokens: too short a lifetime is refused; an unknown or orphaned token is 401
    assert "may not specify a duration less than 10 minutes" in admin.fails(
        "create", "token", "bot", "-n", "team", "--duration=1m")
    assert 'serviceaccounts "nobody" not found' in admin.fails(
        "create", "token", "nobody", "-n", "team")
    forged = Kubectl(ks.write_kubeconfig(home / "forged", "team", token="not-a-token"), home)
    assert forged.fails("get", "pods") == \
        "error: You must be logged in to the server (Unauthorized)"
    admin.ok("delete", "serviceaccount", "bot", "-n", "team")
    assert bot.fails("get", "pods") == "error: You must be logged in to the server (Unauthorized)"


def test_clusterrole_through_rolebinding_and_clusterrolebinding(cluster: Any) -> None:
    ks, admin, home = cluster
    admin.ok("create", "namespace", "ops")
    admin.ok("create", "serviceaccount", "viewer", "-n", "ops")
    viewer = as_account(ks, admin, home, "ops", "viewer")
    admin.ok("create", "rolebinding", "view", "-n", "ops", "--clusterrole=view",
             "--serviceaccount=ops:viewer")
    assert viewer.run("auth", "can-i", "list", "pods").stdout.strip() == "yes"
    assert viewer.run("auth", "can-i", "list", "pods", "-n", "team").stdout.strip() == "no"
    assert viewer.run("auth", "can-i", "get", "secrets").stdout.strip() == "no"
    # the admin asks for the account: impersonation (--as) and a SubjectAccessReview
    as_viewer = ("--as=system:serviceaccount:ops:viewer", "-n", "ops")
    assert admin.run("auth", "can-i", "list", "pods", *as_viewer).stdout.strip() == "yes"
    assert admin.run("auth", "can-i", "list", "secrets", *as_viewer).stdout.strip() == "no"
    assert viewer.fails("get", "pods", "--as=someone-else").endswith(
        'users "someone-else" is forbidden: User "system:serviceaccount:ops:viewer" cannot '
        'impersonate resource "users" in API group "" at the cluster scope')
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "system:serviceaccount:ops:viewer",
                       "resourceAttributes": {"namespace": "ops", "verb": "watch",
                                              "resource": "pods"}}}
    answer = json.loads(admin.ok("create", "--validate=false", "-o", "json", "-f", "-",
                                 stdin=json.dumps(review)))
    assert answer["status"] == {"allowed": True, "reason": (
        'RBAC: allowed by RoleBinding "view/ops" of ClusterRole "view" to ServiceAccount '
        '"viewer/ops"')}
    assert viewer.fails("get", "nodes").endswith(
        'nodes is forbidden: User "system:serviceaccount:ops:viewer" cannot list resource '
        '"nodes" in API group "" at the cluster scope')
    admin.ok("create", "clusterrole", "node-reader", "--verb=get,list", "--resource=nodes")
    admin.ok("create", "clusterrolebinding", "node-reader", "--clusterrole=node-reader",
             "--serviceaccount=ops:viewer")
    assert "kubesim-node-0" in viewer.ok("get", "nodes", "-o", "name")


# ---------------------------------------------------------------------------- namespaces

def test_missing_namespace_is_404_on_create_and_empty_on_list(cluster: Any) -> None:
    _ks, admin, _home = cluster
    assert admin.fails("create", "--validate=false", "-f", "-",
                       stdin=pod_yaml("p", "nowhere")) == \
        'Error from server (NotFound): error when creating "STDIN": namespaces "nowhere" ' \
        "not found"
    assert admin.json("get", "pods", "-n", "nowhere")["items"] == []
    admin.ok("create", "namespace", "somewhere")
    assert admin.json("get", "serviceaccount", "default", "-n", "somewhere")["metadata"][
        "name"] == "default"  # the ServiceAccount controller made it

    # deleting a namespace: Terminating while something in it is held by a finalizer, no new
    # content meanwhile, gone once it is empty
    held = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "held", "namespace": "somewhere", "finalizers": ["example.com/hold"]}}
    admin.ok("create", "--validate=false", "-f", "-", stdin=json.dumps(held))
    admin.ok("delete", "namespace", "somewhere", "--wait=false")
    assert admin.ok("get", "namespace", "somewhere", "-o", "jsonpath={.status.phase}") == \
        "Terminating"
    assert admin.fails("create", "configmap", "late", "-n", "somewhere").endswith(
        'configmaps "late" is forbidden: unable to create new content in namespace somewhere '
        "because it is being terminated")
    admin.ok("patch", "configmap", "held", "-n", "somewhere", "--type=merge", "-p",
             '{"metadata":{"finalizers":null}}')
    until(lambda: admin.run("get", "namespace", "somewhere").returncode != 0,
          what="namespace gone")
    assert 'namespaces "somewhere" not found' in admin.fails("get", "namespace", "somewhere")


# ---------------------------------------------------------------------------- admission

def job_yaml(name: str, ns: str, command: str = SLEEP, **spec: Any) -> str:
    pod = {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "python:3.11-slim", "command": ["python", "-c", command],
         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    return json.dumps({"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {"name": name, "namespace": ns},
                       "spec": {"backoffLimit": 0, "template": {"spec": pod}, **spec}})


RESTRICTED_OK = {"securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                     "capabilities": {"drop": ["ALL"]},
                                     "seccompProfile": {"type": "RuntimeDefault"}}}


def test_pod_security_quota_and_service_account_admission(cluster: Any) -> None:
    _ks, admin, _home = cluster
    admin.ok("create", "namespace", "locked")
    admin.ok("label", "namespace", "locked", "pod-security.kubernetes.io/enforce=restricted")
    create = ("create", "--validate=false", "-f", "-")
    assert admin.fails(*create, stdin=pod_yaml("plain", "locked")) == (
        'Error from server (Forbidden): error when creating "STDIN": pods "plain" is '
        'forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != '
        'false (container "main" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "main" must set '
        'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container '
        '"main" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container '
        '"main" must set securityContext.seccompProfile.type to "RuntimeDefault" or '
        '"Localhost")')
    assert "pod/fine created" in admin.ok(*create, stdin=pod_yaml("fine", "locked",
                                                                  **RESTRICTED_OK))
    admin.ok("label", "namespace", "locked", "--overwrite",
             "pod-security.kubernetes.io/enforce=baseline")
    assert admin.fails(*create, stdin=pod_yaml("root", "locked", securityContext={
        "privileged": True})).endswith(
        'violates PodSecurity "baseline:latest": privileged (container "main" must not set '
        'securityContext.privileged=true)')
    admin.ok("label", "namespace", "locked", "--overwrite",
             "pod-security.kubernetes.io/enforce=restricted")

    # a Job is admitted with a warning; its pods are refused: FailedCreate with the message
    made = admin.run(*create, stdin=job_yaml("refused", "locked"))
    assert made.returncode == 0 and 'Warning: would violate PodSecurity "restricted:latest"' \
        in made.stderr, made.stderr
    event = until(lambda: [e for e in admin.json("get", "events", "-n", "locked")["items"]
                           if e["reason"] == "FailedCreate"], what="FailedCreate")[0]
    assert event["involvedObject"]["kind"] == "Job" and event["type"] == "Warning"
    assert event["message"].startswith('Error creating: pods "refused-" is forbidden: violates '
                                       'PodSecurity "restricted:latest": ')
    assert admin.json("get", "pods", "-n", "locked", "-l", "job-name=refused")["items"] == []

    # a pod naming a ServiceAccount that does not exist
    assert admin.fails(*create, stdin=pod_yaml("sa", "locked", **RESTRICTED_OK).replace(
        '"restartPolicy"', '"serviceAccountName": "ghost", "restartPolicy"')).endswith(
        'pods "sa" is forbidden: error looking up service account locked/ghost: '
        'serviceaccount "ghost" not found')

    # ResourceQuota: requests must be given, and may not exceed what is left
    admin.ok("create", "namespace", "quota")
    admin.ok("create", "quota", "compute", "-n", "quota",
             "--hard=pods=2,requests.cpu=1,requests.memory=1Gi,requests.nvidia.com/gpu=0")
    assert admin.fails(*create, stdin=pod_yaml("bare", "quota")).endswith(
        'pods "bare" is forbidden: failed quota: compute: must specify '
        'requests.cpu for: main; requests.memory for: main')
    sized = {"resources": {"requests": {"cpu": "600m", "memory": "256Mi"}}}
    admin.ok(*create, stdin=pod_yaml("first", "quota", **sized))
    assert admin.fails(*create, stdin=pod_yaml("second", "quota", **sized)).endswith(
        'pods "second" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, '
        'used: requests.cpu=600m, limited: requests.cpu=1')
    gpu = {"resources": {"requests": {"cpu": "1m", "memory": "1Mi", "nvidia.com/gpu": "1"},
                         "limits": {"nvidia.com/gpu": "1"}}}
    assert "exceeded quota: compute, requested: requests.nvidia.com/gpu=1" in admin.fails(
        *create, stdin=pod_yaml("gpu", "quota", **gpu))
    status = until(lambda: admin.json("get", "quota", "compute", "-n", "quota").get("status"),
                   what="quota status")
    assert status["used"] == {"pods": "1", "requests.cpu": "600m", "requests.memory": "256Mi",
                              "requests.nvidia.com/gpu": "0"}
    admin.ok("delete", "namespace", "quota", "--wait=false")


# ---------------------------------------------------------------------------- disruptions

class PodWatch:
    """`kubectl get pods -w --output-watch-events -o json` in the background: what a user
    watching the namespace sees, every state of every pod."""

    def __init__(self, kubectl: Kubectl, ns: str) -> None:
        self.proc = subprocess.Popen(
            [KUBECTL, "--kubeconfig", kubectl.kubeconfig, "get", "pods", "-n", ns, "-w",
             "--output-watch-events", "-o", "json"], env=kubectl.env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.text: list[str] = []
        self._reader = threading.Thread(target=lambda: self.text.extend(
            iter(self.proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
        self._reader.start()

    def sees(self, names: list[str]) -> bool:
        text = "".join(self.text)
        return all(f'"name":"{n}"' in text for n in names)

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        self.proc.wait(30)
        self._reader.join(30)
        out = "".join(self.text)
        events, decoder, at = [], json.JSONDecoder(), 0
        while (at := _skip_space(out, at)) < len(out):
            event, at = decoder.raw_decode(out, at)
            events.append(event)
        return events


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def disruption_of(events: list[dict[str, Any]], pod: str) -> dict[str, Any]:
    """The DisruptionTarget condition the pod had before it was deleted, and no reason."""
    states = [e for e in events if e["object"]["metadata"]["name"] == pod]
    assert states and states[-1]["type"] == "DELETED", [e["type"] for e in states]
    assert not any(s["object"]["status"].get("reason") for s in states)
    return next(c for c in states[-1]["object"]["status"]["conditions"]
                if c["type"] == "DisruptionTarget")


def running_pod(admin: Kubectl, ns: str, job: str) -> str:
    def running() -> str:
        pods = admin.json("get", "pods", "-n", ns, "-l", f"job-name={job}")["items"]
        return next((p["metadata"]["name"] for p in pods
                     if p["status"].get("phase") == "Running"), "")
    return until(running, what=f"a running pod of {job}")


def test_drain_preemption_and_taint_eviction(cluster: Any) -> None:
    ks, admin, _home = cluster
    admin.ok("create", "namespace", "disrupt")
    for job in ("drained", "preempted", "tainted"):
        admin.ok("create", "--validate=false", "-f", "-", stdin=job_yaml(job, "disrupt"))
    pods = {job: running_pod(admin, "disrupt", job) for job in ("drained", "preempted",
                                                                "tainted")}
    watch = PodWatch(admin, "disrupt")
    try:
        until(lambda: watch.sees(list(pods.values())), what="the watch listing the pods")
        ks.call("preempt", "disrupt", pods["preempted"], "uid-of-a-bigger-pod")
        drained = admin.ok("drain", "kubesim-node-0", "--delete-emptydir-data",
                           "--ignore-daemonsets", "--pod-selector=job-name=drained",
                           "--timeout=60s")
        assert f"pod/{pods['drained']} evicted" in drained
        assert "node/kubesim-node-0 drained" in drained
        admin.ok("taint", "nodes", "kubesim-node-0", "maintenance=now:NoExecute")
        until(lambda: not admin.json("get", "pods", "-n", "disrupt", "--field-selector",
                                     f"metadata.name={pods['tainted']}")["items"],
              what="tainted pod gone")
    finally:
        admin.run("taint", "nodes", "kubesim-node-0", "maintenance:NoExecute-")
        admin.run("uncordon", "kubesim-node-0")
        events = watch.stop()
    assert disruption_of(events, pods["drained"])["reason"] == "EvictionByEvictionAPI"
    assert disruption_of(events, pods["drained"])["message"] == "Eviction API: evicting"
    assert disruption_of(events, pods["preempted"])["reason"] == "PreemptionByScheduler"
    assert disruption_of(events, pods["preempted"])["message"] == \
        "default-scheduler: preempting to accommodate a higher priority pod"
    assert disruption_of(events, pods["tainted"])["reason"] == "DeletionByTaintManager"

    # the scheduler's events are events.k8s.io/v1 ones; core/v1 serves them converted
    v1 = admin.json("get", "events.v1.events.k8s.io", "-n", "disrupt", "--field-selector",
                    "reason=Preempted")["items"][0]
    assert v1["regarding"]["name"] == pods["preempted"] and v1["action"] == "Preempting"
    assert v1["note"] == "Preempted by pod uid-of-a-bigger-pod on node kubesim-node-0"
    assert v1["eventTime"] and v1["reportingController"] == "default-scheduler"
    core = admin.json("get", f"events/{v1['metadata']['name']}", "-n", "disrupt")
    assert core["involvedObject"]["name"] == pods["preempted"]
    assert core["message"] == v1["note"] and core["eventTime"] == v1["eventTime"]
    assert core["lastTimestamp"] is None and core["firstTimestamp"] is None
    assert "count" not in core
    admin.ok("delete", "namespace", "disrupt", "--wait=false")


# ---------------------------------------------------------------------------- Job conditions

async def _client(sim: KubeSim, tmp_path: Path) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=sim.write_kubeconfig(tmp_path / "kc"),
                                      client_configuration=cfg)
    return k8s.ApiClient(cfg)




@pytest.mark.asyncio
async def test_failure_target_comes_before_failed_which_waits_for_the_pods(
        tmp_path: Path) -> None:
    async with KubeSim(**FAST) as sim, await _client(sim, tmp_path) as api:
        core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
        seen: list[tuple[list[str], list[str]]] = []  # (conditions, phases of its pods)

        async def follow() -> None:
            async with k8s_watch.Watch() as w:
                async for ev in w.stream(batch.list_namespaced_job, "default",
                                         field_selector="metadata.name=deadline",
                                         timeout_seconds=60):
                    job = ev["object"]
                    conds = [c.type for c in job.status.conditions or [] if c.status == "True"]
                    pods = (await core.list_namespaced_pod(
                        "default", label_selector="job-name=deadline")).items
                    seen.append((conds, [p.status.phase for p in pods]))
                    if "Failed" in conds:
                        return
        task = asyncio.create_task(follow())
        await batch.create_namespaced_job("default", json.loads(job_yaml(
            "deadline", "default", STUBBORN, activeDeadlineSeconds=2)))
        await asyncio.wait_for(task, 60)
        target = next(i for i, (conds, _) in enumerate(seen) if "FailureTarget" in conds)
        failed = next(i for i, (conds, _) in enumerate(seen) if "Failed" in conds)
        assert target < failed
        # between the two, the pod that ignores SIGTERM was still there, being killed
        assert any("Running" in phases for _, phases in seen[target:failed]), seen
        assert all(p in ("Failed", "Succeeded") for p in seen[failed][1]), seen[failed]
        job = await batch.read_namespaced_job("deadline", "default")
        cond = {c.type: c for c in job.status.conditions}
        assert cond["Failed"].reason == cond["FailureTarget"].reason == "DeadlineExceeded"

        # podFailurePolicy: exit code 42 fails the Job at once, whatever the backoff limit
        await batch.create_namespaced_job("default", json.loads(job_yaml(
            "policy", "default", "raise SystemExit(42)", backoffLimit=6,
            podFailurePolicy={"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "main", "operator": "In", "values": [42]}}]})))

        bad = json.loads(job_yaml("bad-policy", "default", podFailurePolicy={"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}}]}))
        bad["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
        with pytest.raises(k8s.ApiException) as refused:
            await batch.create_namespaced_job("default", bad)
        assert refused.value.status == 422
        assert json.loads(refused.value.body)["message"] == (
            'Job.batch "bad-policy" is invalid: spec.template.spec.restartPolicy: Invalid '
            'value: "OnFailure": only "Never" is supported when podFailurePolicy is specified')

        async def policy_failed() -> Any:
            job = await batch.read_namespaced_job("policy", "default")
            return next((c for c in job.status.conditions or [] if c.type == "Failed"), None)
        failed_cond = await _eventually(policy_failed)
        pod = (await core.list_namespaced_pod("default", label_selector="job-name=policy")
               ).items[0].metadata.name
        assert failed_cond.reason == "PodFailurePolicy"
        assert failed_cond.message == (f"Container main for pod default/{pod} failed with exit "
                                       "code 42 matching FailJob rule at index 0")


async def _eventually(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await fn()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
    return result


# ---------------------------------------------------------------------------- watches, IPv6

@pytest.mark.asyncio
async def test_stalled_watch_stays_open_and_silent_until_resumed(tmp_path: Path) -> None:
    async with KubeSim(**FAST) as sim, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {sim.token}"}
        url = f"{sim.url}/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1" \
              "&allowWatchBookmarks=true"
        async with http.get(url, headers=headers) as resp:
            assert sim.stall_watches("pods") == 1
            async with http.post(f"{sim.url}/api/v1/namespaces/default/pods",
                                 headers=headers, json=json.loads(pod_yaml("late", "default"))
                                 ) as made:
                assert made.status == 201
            # past its timeoutSeconds and bookmark interval: no event, no bookmark, no end
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(resp.content.readline(), 2)
            assert not resp.content.at_eof()
            sim.resume_watches()
            line = await asyncio.wait_for(resp.content.readline(), 60)
            event = json.loads(line)
            assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "late")


@pytest.mark.asyncio
async def test_ipv6_pod_ips(tmp_path: Path) -> None:
    server = ("import os, socket, time\n"
              "s = socket.socket(socket.AF_INET6); s.bind((os.environ['POD_IP'], 0)); "
              "s.listen()\nprint('listening', s.getsockname()[1], flush=True)\n"
              "time.sleep(120)")
    async with KubeSim(pod_ips="ipv6", **FAST) as sim, await _client(sim, tmp_path) as api:
        core = k8s.CoreV1Api(api)
        pod = json.loads(pod_yaml("six", "default", command=["python", "-c", server], env=[
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]))
        await core.create_namespaced_pod("default", pod)

        async def listening() -> str:
            try:
                return await core.read_namespaced_pod_log("six", "default")
            except k8s.ApiException:
                return ""
        port = int((await _eventually(listening)).split()[1])
        six = await core.read_namespaced_pod("six", "default")
        assert six.status.pod_ip == "::1" and [i.ip for i in six.status.pod_ips] == ["::1"]
        assert six.status.host_ip == "::1"
        _reader, writer = await asyncio.open_connection(six.status.pod_ip, port)
        writer.close()


# ---------------------------------------------------------------------------- kubectl apply

def test_apply_the_shipped_rbac_and_check_it_with_can_i(cluster: Any) -> None:
    """What an admin does with templates/rbac.yaml: apply it, then check the account's rights
    the way `jupyter kremote doctor` will (SelfSubjectAccessReview)."""
    from jupyter_kremote.manifests import render_rbac, to_yaml

    ks, admin, home = cluster
    admin.ok("create", "namespace", "ml")
    manifest = to_yaml(render_rbac(namespace="ml"))
    applied = admin.ok("apply", "--validate=false", "-f", "-", stdin=manifest)
    assert "serviceaccount/jupyter-kremote created" in applied
    assert "role.rbac.authorization.k8s.io/jupyter-kremote created" in applied
    assert "unchanged" in admin.ok("apply", "--validate=false", "-f", "-", stdin=manifest)
    product = as_account(ks, admin, home, "ml", "jupyter-kremote")
    role = admin.json("get", "role", "jupyter-kremote", "-n", "ml")
    listed = {}  # resource -> verbs, from `kubectl auth can-i --list` (SelfSubjectRulesReview)
    for line in product.ok("auth", "can-i", "--list").splitlines()[1:]:
        if line[:1].isspace():
            continue  # a non-resource URL row
        name, _urls, _names, verbs = line.split(None, 3)
        listed[name] = verbs.strip("[]").split()
    for rule in role["rules"]:
        group = f".{rule['apiGroups'][0]}" if rule["apiGroups"][0] else ""
        for resource in rule["resources"]:
            base, _, sub = resource.partition("/")  # kubectl prints pods/log, x.group/sub
            key = f"{base}{group}/{sub}" if sub and group else f"{resource}{group}"
            assert listed.get(key) == rule["verbs"], (key, sorted(listed))
    for args in (("patch", "jobs.batch"), ("get", "pods", "--subresource=log"),
                 ("get", "configmaps")):  # SelfSubjectAccessReview, as doctor will ask
        assert product.run("auth", "can-i", *args).stdout.strip() == "yes", args
    for verb, what in (("get", "pods"), ("update", "secrets"), ("create", "pods"),
                       ("list", "jobs.batch -n default")):
        assert product.run("auth", "can-i", verb, *what.split()).stdout.strip() == "no"

    # an events.k8s.io/v1 Event as Kueue writes one, read back through core/v1
    event = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
             "metadata": {"name": "queued", "namespace": "ml"},
             "eventTime": "2026-11-30T00:00:00.000000Z", "type": "Normal",
             "reason": "Pending", "action": "Admission", "note": "couldn't assign flavors",
             "reportingController": "kueue-admission", "reportingInstance": "kueue-0",
             "regarding": {"kind": "Job", "apiVersion": "batch/v1", "namespace": "ml",
                           "name": "train"}}
    admin.ok("create", "--validate=false", "-f", "-", stdin=json.dumps(event))
    core = admin.json("get", "events", "queued", "-n", "ml")
    assert (core["message"], core["reportingComponent"], core["involvedObject"]["name"]) == (
        "couldn't assign flavors", "kueue-admission", "train")
    assert core["lastTimestamp"] is None and core["eventTime"] == event["eventTime"]
    assert "eventTime: Required value" in admin.fails(
        "create", "--validate=false", "-f", "-",
        stdin=json.dumps({**event, "metadata": {"name": "bad", "namespace": "ml"},
                          "eventTime": None}))
    admin.ok("delete", "namespace", "ml", "--wait=false")


# ---------------------------------------------------------------------------- stored kinds

def test_network_policies_and_kueue_queues_are_stored_when_installed(cluster: Any) -> None:
    ks, admin, _home = cluster
    admin.ok("create", "namespace", "q")
    assert 'the server doesn\'t have a resource type "localqueues"' in admin.fails(
        "get", "localqueues", "-n", "q")  # no Kueue: its API group is not there
    ks.call("set_kueue", True)
    try:
        assert "localqueues.kueue.x-k8s.io" in admin.ok("get", "crd", "-o", "name")
        queue = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
                 "metadata": {"name": "team", "namespace": "q"},
                 "spec": {"clusterQueue": "gpus"}}
        admin.ok("create", "--validate=false", "-f", "-", stdin=json.dumps(queue))
        assert admin.json("get", "localqueue", "team", "-n", "q")["spec"] == {
            "clusterQueue": "gpus"}
    finally:
        ks.call("set_kueue", False)
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "deny", "namespace": "q"},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    admin.ok("create", "--validate=false", "-f", "-", stdin=json.dumps(policy))
    assert admin.ok("get", "netpol", "-n", "q", "-o", "name") == \
        "networkpolicy.networking.k8s.io/deny\n"
    admin.ok("delete", "namespace", "q", "--wait=false")
