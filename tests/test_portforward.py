"""%%remote through the API server's port-forward (`--connect port-forward`), through a real
kernel against kubesim: cells, push/pull, the stop button, a dropped forward, RBAC."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from conftest import wait_for
from kube_kernels import kube_kernel, managed, running_sim, start_kube_kernel, stop_kube_kernel

from jupyter_kremote.manifests import AGENT_PORT

pytestmark = pytest.mark.skipif(bool(os.environ.get("KREMOTE_TEST_KUBECONFIG")),
                                reason="needs the emulator's knobs")
PF = "--connect port-forward --cpu 200m --mem 200Mi"


@pytest.fixture(scope="module")
def pfsim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp("pf"), pod_ips="unique") as sim:
        yield sim


@pytest.fixture(scope="module")
def pfkernel(pfsim, tmp_path_factory):
    with kube_kernel(pfsim, tmp_path_factory.mktemp("nb")) as k:
        yield k


def test_cells_and_variables_through_port_forward(pfkernel, pfsim):
    before = pfsim.ks.call("portforwards_served")
    res = pfkernel.run(f"%%remote -n 2 {PF}\nimport os\nprint('rank', os.environ['RANK'])\n"
                       "if os.environ['RANK'] == '0':\n"
                       "    print('master is rank 0:', os.environ['MASTER_ADDR'] == "
                       "os.environ['KREMOTE_HOST'])")
    assert res.status == "ok", res.outputs
    assert "[rank 0] rank 0\n" in res.stdout and "[rank 1] rank 1\n" in res.stdout
    # the agents reach each other at their pod IPs, whatever way the kernel reaches them
    assert "[rank 0] master is rank 0: True\n" in res.stdout
    assert "port-forward" in res.text  # the start-up said how the agents are reached
    # every byte went through the API server: one WebSocket per ZeroMQ connection (data and
    # control socket of each rank, and the start-up's check)
    assert pfsim.ks.call("portforwards_served") - before >= 4
    assert pfkernel.run("import numpy as np\na = np.arange(3_000_000)").status == "ok"
    res = pfkernel.run("%remote push a")
    assert res.status == "ok", res.outputs
    assert pfkernel.run("%%remote\nb = a * 2").status == "ok"
    res = pfkernel.run("%remote pull b --rank 1\nprint(b[-1], b.nbytes)")
    assert res.stdout == "5999998 24000000\n", res.outputs
    status = pfkernel.run("%remote status").text
    assert "[kubernetes] 2 agent(s)" in status
    assert "reached through the API server's port-forward" in status


def test_stop_button_through_port_forward(pfkernel):
    pfkernel.run("%%remote\nkept = 7")
    pfkernel.start_long_cell()
    pfkernel.km.interrupt_kernel()
    reply = pfkernel.kc.get_shell_msg(timeout=10)["content"]
    assert reply["ename"] == "KeyboardInterrupt"
    assert pfkernel.run("%%remote --rank 0\nprint(kept)").stdout == "7\n"


def test_next_cell_works_after_the_forward_drops(pfkernel, pfsim):
    assert pfkernel.run("%%remote\nx = 41").status == "ok"
    before = pfsim.ks.call("portforwards_served")
    dropped = pfsim.ks.call("drop_portforwards")  # the API server closed every WebSocket
    assert dropped == 4  # data and control socket of each rank
    # ZeroMQ reconnects by itself, each new TCP connection through a new WebSocket (a request
    # written in the very instant of the drop would be lost with the TCP connection that
    # carried it, as through any relay: a user's next cell comes later than that)
    assert wait_for(lambda: pfsim.ks.call("portforwards_served") - before >= dropped, 60)
    res = pfkernel.run("%%remote --rank 1\nprint(x + 1)", timeout=60)
    assert res.status == "ok" and res.stdout == "42\n", res.outputs


def test_a_request_lost_as_the_forward_drops_is_sent_again(pfkernel, pfsim):
    """The API server drops the forward in the very instant the cell's request crosses it:
    the kernel sees the drop, learns from the agent that the request never arrived, and
    sends it again; the cell runs once and shows its output."""
    assert pfkernel.run("%%remote\nn = 0").status == "ok"
    pfsim.ks.call("drop_portforward_on_data", port=AGENT_PORT, direction="to_pod")
    res = pfkernel.run("%%remote --rank 1\nn += 1\nprint('n =', n)", timeout=120)
    assert res.status == "ok" and res.stdout == "n = 1\n", res.outputs
    assert not pfsim.ks.call(lambda sim: sim.api.portforwards.armed)  # the drop happened
    assert pfkernel.run("%%remote --rank 1\nprint(n)").stdout == "1\n"  # ran once


def test_a_running_cell_gets_its_reply_over_the_new_connection(pfkernel, pfsim, tmp_path):
    """The forward drops while a cell runs: the cell's end comes back over the connection
    ZeroMQ makes again (what it prints before that connection is up is lost)."""
    started, go = tmp_path / "started", tmp_path / "go"
    results: list[Any] = []
    cell = (f"%%remote --rank 0\nimport os, time\nopen({str(started)!r}, 'w').close()\n"
            f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.02)\nafter = 'finished'")
    runner = threading.Thread(target=lambda: results.append(pfkernel.run(cell, timeout=120)))
    runner.start()
    try:
        assert wait_for(started.exists, 60)
        before = pfsim.ks.call("portforwards_served")
        assert pfsim.ks.call("drop_portforwards") == 4
        assert wait_for(lambda: pfsim.ks.call("portforwards_served") - before >= 4, 60)
    finally:
        go.touch()
        runner.join(150)
    res = results[0]
    assert res.status == "ok", res.outputs
    assert pfkernel.run("%%remote --rank 0\nprint(after)").stdout == "finished\n"


def test_a_reply_lost_as_the_forward_drops_is_sent_again(pfkernel, pfsim):
    """The forward drops in the instant the agent's reply crosses it: once connected again,
    the kernel asks, and the agent sends its (small) reply again; the cell ran once."""
    pfsim.ks.call("drop_portforward_on_data", port=AGENT_PORT, direction="from_pod")
    res = pfkernel.run("%%remote --rank 1\nm = n + 4", timeout=120)
    assert res.status == "ok", res.outputs
    assert not pfsim.ks.call(lambda sim: sim.api.portforwards.armed)  # the drop happened
    assert pfkernel.run("%%remote --rank 1\nprint(m, n)").stdout == "5 1\n"


def test_a_large_reply_lost_as_the_forward_drops_fails_in_one_line(pfkernel, pfsim):
    """A reply with a payload (a pull) is not kept for sending again: lost with the forward,
    the request fails with one line saying so, never hangs; the agents keep their variables."""
    assert pfkernel.run("%%remote --rank 1\nbig = list(range(1000))").status == "ok"
    pfsim.ks.call("drop_portforward_on_data", port=AGENT_PORT, direction="from_pod")
    res = pfkernel.run("%remote pull big --rank 1", timeout=120)
    assert res.status == "error", res.outputs
    message = res.error["evalue"]
    assert "\n" not in message
    assert message.startswith("the connection to rank 1's agent dropped as it answered")
    assert "the agents kept their variables" in message
    assert pfkernel.run("%%remote --rank 1\nprint(len(big))").stdout == "1000\n"
    res = pfkernel.run("%remote pull big --rank 1\nprint(big[-1])")
    assert res.stdout == "999\n", res.outputs


def test_groups_meet_at_pod_ips_through_port_forward(pfkernel):
    """A second group through port-forward: the groups' channel addresses are the agents'
    pod IPs (where they reach each other), not the kernel's 127.0.0.1 listeners."""
    res = pfkernel.run(f"%remote group add train -n 1 {PF}", timeout=120)
    assert res.status == "ok", res.outputs
    res = pfkernel.run("%%remote --group train\nimport os\nprint(os.environ['KREMOTE_HOST'])")
    train_ip = res.stdout.strip()
    assert res.status == "ok" and train_ip and train_ip != "127.0.0.1", res.outputs
    res = pfkernel.run("%%remote --rank 0\nimport jupyter_kremote as kremote\n"
                       "print(kremote.peers('train'))")
    assert res.status == "ok", res.outputs
    assert res.stdout.startswith(f"['{train_ip}:"), res.stdout


def test_rbac_without_portforward_is_one_line(pfsim, tmp_path):
    """A Role without pods/portforward: the start fails at once with the API's refusal and
    the right that is missing; nothing is left behind."""
    from jupyter_kremote.manifests import render_rbac

    for doc in render_rbac(namespace="default", service_account="limited"):
        doc["metadata"]["name"] = "limited"
        if doc["kind"] == "Role":
            doc["rules"] = [r for r in doc["rules"] if "pods/portforward" not in r["resources"]]
        if doc["kind"] == "RoleBinding":
            doc["roleRef"]["name"] = "limited"
        pfsim.ks.call("create", doc)
    token = pfsim.ks.call("service_account_token", "default", "limited")
    kubeconfig = pfsim.ks.write_kubeconfig(tmp_path / "limited", token=token)
    (tmp_path / "nb").mkdir()
    others = managed(pfsim.admin)  # the module kernel's cluster
    k = start_kube_kernel(kubeconfig, tmp_path / "nb")
    try:
        res = k.run(f"%%remote {PF}\nprint('never')", timeout=90)
        assert res.status == "error"
        message = res.error["evalue"]
        assert "\n" not in message
        assert "port-forward to pod default/" in message
        assert ('cannot get resource "pods/portforward" in API group "" in the namespace '
                '"default"') in message
        assert "get and create on pods/portforward" in message
        assert "never" not in res.stdout
        print(message)
    finally:
        stop_kube_kernel(k, pfsim, others)


def test_auto_detection_probe():
    """`--connect auto` goes direct only when a TCP connection to the agent's pod IP
    succeeds; a refusal once the pod is Ready (a firewall's reject looks the same) or a
    timeout means port-forward."""
    import socket

    from jupyter_kremote.backends.kubernetes import probe_pod_ip

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert probe_pod_ip("127.0.0.1", listening.getsockname()[1]) == "open"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # closed again below: nothing listens there
    assert probe_pod_ip("127.0.0.1", free) == "refused"
    assert probe_pod_ip("", 5555) == "unreachable"
