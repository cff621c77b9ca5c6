"""`jupyter kremote doctor` and `%remote doctor` on kubesim (RBAC on): every check passes on a
namespace where a cluster can start, and each one is made to fail once, with its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_kubernetes import REAL, start_sim

pytestmark = pytest.mark.skipif(bool(REAL), reason="makes the emulator's namespace fail")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    sim = start_sim(tmp_path_factory.mktemp("doctor"), pod_ips="unique")
    try:
        yield sim
    finally:
        sim.ks.stop()


def doctor(kubeconfig: str, *flags: str) -> tuple[int, dict[str, str]]:
    """(1 if a check failed else 0, {check name: its line}), in this process as the CLI
    does it (one CLI run is tested on its own: importing the client costs seconds)."""
    from jupyter_kremote.backends.kube_api import KubeLoop
    from jupyter_kremote.doctor import FAIL, run_doctor
    from jupyter_kremote.magics import RemoteMagics, _env_pairs, cluster_options

    saved = os.environ.get("KREMOTE_KUBECONFIG")
    os.environ["KREMOTE_KUBECONFIG"] = kubeconfig
    KubeLoop._instance = None
    try:
        args = RemoteMagics.remote.parser.parse_args(list(flags))
        checks = run_doctor(args.name, cluster_options(args, _env_pairs(args.env)))
    finally:
        if KubeLoop._instance is not None:
            KubeLoop._instance.close()
        KubeLoop._instance = None
        if saved is None:
            os.environ.pop("KREMOTE_KUBECONFIG", None)
        else:
            os.environ["KREMOTE_KUBECONFIG"] = saved
    return int(any(c.status == FAIL for c in checks)), {c.name: c.line() for c in checks}


def cli(kubeconfig: str, *flags: str) -> tuple[int, dict[str, str]]:
    """The same through `jupyter kremote doctor` (exit status 1 when a check failed)."""
    env = {**os.environ, "KREMOTE_KUBECONFIG": kubeconfig}
    env.pop("KREMOTE_NAMESPACE", None)
    out = subprocess.run([sys.executable, "-m", "jupyter_kremote.cli", "doctor", *flags],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode in (0, 1), out.stderr
    lines = {ln.split("]", 1)[1].split(":", 1)[0].strip(): ln
             for ln in out.stdout.splitlines() if ln.startswith("[")}
    return out.returncode, lines


def kubectl(admin: str, *args: str) -> None:
    out = subprocess.run(["kubectl", "--kubeconfig", admin, *args], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_all_checks_pass_where_a_cluster_can_start(cluster):
    code, lines = cli(cluster.kubeconfig)
    assert code == 0, lines
    for name in ("API reachable", "namespace", "rights", "ResourceQuota", "NetworkPolicy",
                 "Kueue"):
        assert lines[name].startswith("[  ok]"), lines[name]
    assert "all 26 verbs of the shipped Role are allowed" in lines["rights"]
    # cluster-scoped reads the namespaced Role does not give: said, not failed
    assert lines["nodes"].startswith("[warn]") and "cluster-scoped" in lines["nodes"]
    code, lines = doctor(cluster.admin)  # an admin sees labels and nodes too
    assert lines["PodSecurity"].startswith("[  ok]") and lines["nodes"].startswith("[  ok]")


def test_api_unreachable(cluster, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = Path(cluster.kubeconfig).read_text()
    import re

    dead = tmp_path / "dead"
    dead.write_text(re.sub(r"server: \S+", f"server: http://127.0.0.1:{port}", text))
    code, lines = cli(str(dead))
    assert code == 1 and lines["API reachable"].startswith("[FAIL]"), lines
    assert "check the kubeconfig" in lines["API reachable"]


def test_namespace_fails(cluster):
    _, lines = doctor(cluster.admin, "--namespace", "nope")
    assert lines["namespace"].startswith("[FAIL]") and "kubectl create namespace nope" in \
        lines["namespace"], lines


def test_rights_fail(cluster, tmp_path):
    kubectl(cluster.admin, "create", "serviceaccount", "bare")
    token = cluster.ks.call("service_account_token", "default", "bare")
    bare = cluster.ks.write_kubeconfig(tmp_path / "bare", token=token)
    _, lines = doctor(bare)
    assert lines["rights"].startswith("[FAIL]") and "create jobs" in lines["rights"], lines
    assert "applies the shipped Role" in lines["rights"]


def test_quota_fails(cluster):
    kubectl(cluster.admin, "create", "quota", "tight", "--hard=pods=1,requests.cpu=1")
    try:
        _, lines = doctor(cluster.kubeconfig, "-n", "2", "--cpu", "1")
    finally:
        kubectl(cluster.admin, "delete", "quota", "tight")
    assert lines["ResourceQuota"].startswith("[FAIL]"), lines
    assert "tight: pods needs 2, 1 left of 1" in lines["ResourceQuota"]


def test_network_policy_fails(cluster, tmp_path):
    (tmp_path / "deny.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-all\n"
        "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n")
    kubectl(cluster.admin, "apply", "--validate=false", "-f", str(tmp_path / "deny.yaml"))
    try:
        _, lines = doctor(cluster.kubeconfig)
    finally:
        kubectl(cluster.admin, "delete", "networkpolicy", "deny-all")
    assert lines["NetworkPolicy"].startswith("[FAIL]") and "deny-all" in lines["NetworkPolicy"]


def test_kueue_and_nodes_fail(cluster):
    _, lines = doctor(cluster.kubeconfig, "-t", "kueue")
    assert lines["Kueue"].startswith("[FAIL]") and "CRDs are not installed" in lines["Kueue"]
    _, lines = doctor(cluster.admin, "--gpu", "4", "--gpu-type", "H100")
    assert lines["nodes"].startswith("[FAIL]") and "4 GPU(s) of type H100" in lines["nodes"]


def test_pod_security_fails(cluster, tmp_path):
    (tmp_path / "priv.yaml").write_text(
        "spec:\n  template:\n    spec:\n      containers:\n        - name: agent\n"
        "          securityContext:\n            privileged: true\n")
    kubectl(cluster.admin, "label", "ns", "default",
            "pod-security.kubernetes.io/enforce=baseline")
    try:
        _, lines = doctor(cluster.admin, "-t", str(tmp_path / "priv.yaml"))
    finally:
        kubectl(cluster.admin, "label", "ns", "default", "pod-security.kubernetes.io/enforce-")
    assert lines["PodSecurity"].startswith("[FAIL]"), lines
    assert "enforces 'baseline'" in lines["PodSecurity"] and "privileged" in lines["PodSecurity"]


def test_unreachable_pod_ips_fail(cluster):
    """A running pod of ours whose IP does not answer on the agent port."""
    from conftest import wait_for

    kubectl(cluster.admin, "run", "mute", "--image=busybox", "--restart=Never",
            "--labels=app.kubernetes.io/managed-by=jupyter-kremote", "--command", "--",
            "sleep", "300")

    def running() -> bool:
        out = subprocess.run(["kubectl", "--kubeconfig", cluster.admin, "get", "pod", "mute",
                              "-o", "jsonpath={.status.phase}"], capture_output=True,
                             text=True, check=False)
        return out.stdout == "Running"

    try:
        assert wait_for(running, 60)
        _, lines = doctor(cluster.kubeconfig)
    finally:
        kubectl(cluster.admin, "delete", "pod", "mute", "--grace-period=0", "--force")
    assert lines["pod IPs"].startswith("[warn]") and "port-forward" in lines["pod IPs"], lines


def test_remote_doctor_magic(cluster, notebook_dir):
    from conftest import Kernel
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "KREMOTE_KUBECONFIG": cluster.kubeconfig}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(notebook_dir), env=env)
    try:
        k = Kernel(km, kc, notebook_dir)
        assert k.run("%load_ext jupyter_kremote").status == "ok"
        res = k.run("%remote doctor --namespace nope")
        assert res.status == "ok", res.outputs
        assert "[  ok] API reachable" in res.stdout
        assert "[FAIL] namespace: 'nope': not allowed to create there" in res.stdout
        assert "bind the shipped Role there" in res.stdout and "check(s) failed" in res.stdout
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
