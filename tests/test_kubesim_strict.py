"""kubesim as strict as a real API server, driven by kubectl 1.32 (and kubernetes_asyncio where
a watch is needed): RBAC with TokenRequest and access reviews, namespaces, admission (Pod
Security, ResourceQuota, ServiceAccount), Job conditions, disruptions, watches, IPv6."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.kubesim import KubeSimThread
except ImportError:  # tests/ is on sys.path but the repository root is not
    from kubesim import KubeSimThread  # type: ignore


KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
FAST: dict[str, Any] = {"scheduler_retry": 0.2, "scheduler_retry_max": 0.4,
                        "max_grace_seconds": 1.0, "bookmark_interval": 0.3}
SLEEP = "import time; time.sleep(120)"
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
