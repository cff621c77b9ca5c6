"""Faults and lifecycle: a killed agent, TTL, extend, shutdown, a killed kernel, logs
(issue 2, 9 and 11)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import psutil

from conftest import agent_pids_of, wait_for


def _rank_pid(kernel, rank: int) -> int:
    for pid in kernel.agent_pids():
        if f"--rank {rank} " in " ".join(psutil.Process(pid).cmdline()) + " ":
            return pid
    raise AssertionError(f"no agent of rank {rank}")


def test_killed_agent_fails_cell_fast_then_restart(kernel):
    assert kernel.run("%%remote -n 2\nx = 1").status == "ok"
    kernel.start_long_cell()
    os.kill(_rank_pid(kernel, 1), signal.SIGKILL)
    reply = kernel.kc.get_shell_msg(timeout=10)["content"]  # the cell would sleep 60 s
    assert reply["status"] == "error"
    assert reply["ename"] == "AgentDied"
    assert "rank 1 was killed by SIGKILL" in reply["evalue"]
    status = kernel.run("%remote status").text
    assert "was killed by SIGKILL" in status
    nxt = kernel.run("%%remote\nprint(x)")
    assert nxt.error["ename"] == "ClusterEnded"
    assert "%remote restart" in nxt.error["evalue"]
    assert kernel.run("%remote restart").status == "ok"
    res = kernel.run("%%remote\nimport os\nprint(os.environ['RANK'])")
    assert res.status == "ok" and "[rank 1] 1\n" in res.stdout


def test_ttl_ends_cluster_and_next_cell_says_so(kernel):
    assert kernel.run("%%remote --ttl 2s\nx = 1").status == "ok"
    pids = kernel.agent_pids()
    assert pids
    assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                                    != psutil.STATUS_ZOMBIE for p in pids), 60)
    res = kernel.run("%%remote\nprint(x)")
    assert res.error["ename"] == "ClusterEnded"
    assert "its TTL ran out" in res.error["evalue"]


def test_extend_moves_the_deadline(kernel):
    assert kernel.run("%%remote --ttl 3s\nx = 'alive'").status == "ok"
    res = kernel.run("%remote extend 1m")
    assert "TTL now ends in 1m 0" in res.stdout
    time.sleep(4)
    assert kernel.run("%%remote\nprint(x)").stdout == "alive\n"


def test_shutdown_stops_every_agent(kernel):
    assert kernel.run("%%remote -n 2\n1").status == "ok"
    pids = kernel.agent_pids()
    assert len(pids) == 2
    res = kernel.run("%remote shutdown")
    assert res.stdout == "cluster 'default' shut down\n"
    assert wait_for(lambda: not kernel.agent_pids(), 60)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def test_killed_kernel_leaves_no_agent(notebook_dir):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(notebook_dir))
    try:
        kc.execute_interactive("%load_ext jupyter_kremote\n", timeout=30)
        kc.execute_interactive("%%remote -n 2\n1", timeout=60)
        pids = agent_pids_of(km.provisioner.process.pid)
        assert len(pids) == 2
        folders = [p for p in Path(tempfile.gettempdir()).glob("kremote-default-*")
                   if any(str(p) in " ".join(psutil.Process(a).cmdline()) for a in pids)]
        assert len(folders) == 1, folders
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                                        != psutil.STATUS_ZOMBIE for p in pids), 60), \
            "agents outlived their kernel"
        # and the agents, orphaned, removed their cluster's folder on the way out
        assert wait_for(lambda: not folders[0].exists(), 60), list(folders[0].rglob("*"))
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def test_logs_show_agent_output_outside_cells(kernel):
    kernel.run("%%remote\nimport os\nos.system('echo straight-to-fd-1')")
    res = kernel.run("%remote logs --rank 0")
    assert res.stdout.startswith("--- rank 0 ---\n")
    assert "agent rank 0 listening on 127.0.0.1" in res.stdout
    assert "straight-to-fd-1" in res.stdout


def test_logs_follow_streams_until_the_agent_ends(kernel):
    kernel.run("%%remote --ttl 3s\nimport os\nos.system('echo followed-line')")
    res = kernel.run("%remote logs --follow", timeout=30)  # it ends with the agent
    assert res.status == "ok"
    assert "followed-line" in res.stdout
    assert "TTL reached" in res.stdout  # it kept reading until the agent stopped
