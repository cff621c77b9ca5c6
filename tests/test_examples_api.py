"""The README's Python API examples, run as they are: examples/swimmy.py (two groups, a
channel between them) and examples/kubeface.py (maps) on local agents, and Swimmy on the
Kubernetes emulator with one Job per group and the train group on a GPU node."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, **env: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, timeout=180, env={**os.environ, **env}, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_swimmy_example_runs_on_local_agents():
    out = _run("swimmy.py").splitlines()
    assert out[0] == "['hello Swimmy from train rank 0', 'hello Swimmy from train rank 1']"
    assert out[1] == "batches sent: [20, 20]"
    assert out[2] == "weights: [-0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]" or out[2].startswith(
        "weights: [0.0, 1.0, 2.0")
    assert out[3] == "close to the truth: True"


def test_kubeface_example_runs_on_local_agents():
    out = _run("kubeface.py").splitlines()
    assert out == ["[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
                   f"sum of squares: {sum(x * x for x in range(300))}",
                   "ZeroDivisionError: division by zero (input 7: 7; failed 2 time(s), "
                   + out[2].split("failed 2 time(s), ")[1]]
    assert out[2].endswith(")") and "last on rank " in out[2]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="Debian's kubectl is not installed")
@pytest.mark.asyncio
async def test_swimmy_on_kubesim_one_job_per_group(tmp_path, monkeypatch):
    from kubesim.scheduler import NodeSpec
    from test_kubernetes import PRODUCT_USER, managed, start_sim

    from jupyter_kremote import KubeCluster, PodSpec
    from jupyter_kremote.backends.kube_api import KubeLoop

    # RBAC on: the product holds only the shipped Role; kubectl here is the admin's
    sim = start_sim(tmp_path, pod_ips="unique", nodes=[NodeSpec("cpu-node"),
                                                       NodeSpec("gpu-node", gpus=2)])
    ks, kubeconfig = sim.ks, sim.admin
    monkeypatch.setenv("KREMOTE_KUBECONFIG", sim.kubeconfig)
    monkeypatch.setattr(KubeLoop, "_instance", None)  # this emulator, not a cached one
    monkeypatch.syspath_prepend(str(EXAMPLES))
    image = os.environ.get("KREMOTE_TEST_IMAGE")

    def kubectl(*args: str) -> str:
        return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout
    try:
        import swimmy

        groups = {"preprocess": PodSpec(image=image, cpu="500m", count=2),
                  "train": PodSpec(image=image, cpu="500m", gpu=1, count=2)}
        async with KubeCluster(name="swimmy", groups=groups, root=EXAMPLES) as c:
            jobs = json.loads(await asyncio.to_thread(
                kubectl, "get", "jobs", "-l", "app.kubernetes.io/managed-by=jupyter-kremote",
                "-o", "json"))["items"]
            ids = sorted(j["metadata"]["labels"]["kremote/cluster"] for j in jobs)
            assert len(ids) == 2 and ids[0].startswith("swimmy-preprocess-") and ids[
                1].startswith("swimmy-train-")  # a Job per group
            deadlines = {j["spec"]["activeDeadlineSeconds"] for j in jobs}
            assert max(deadlines) - min(deadlines) <= 5  # one TTL for the cluster
            pods = json.loads(await asyncio.to_thread(
                kubectl, "get", "pods", "-l", f"kremote/cluster={ids[1]}", "-o",
                "json"))["items"]
            assert [p["spec"]["nodeName"] for p in pods] == ["gpu-node", "gpu-node"]
            # each pod says its group: kubectl selects a group's pods by label
            train = json.loads(await asyncio.to_thread(
                kubectl, "get", "pods", "-l", "kremote/group=train", "-o", "json"))["items"]
            assert sorted(p["metadata"]["name"] for p in train) == sorted(
                p["metadata"]["name"] for p in pods)
            assert len(json.loads(await asyncio.to_thread(
                kubectl, "get", "pods", "-l", "kremote/group=preprocess", "-o",
                "json"))["items"]) == 2
            assert await swimmy.hello.on(c, group="train")("Swimmy") == [
                "hello Swimmy from train rank 0", "hello Swimmy from train rank 1"]
            # swimmy.py is shipped to the pods (it lives in the cluster's root folder)
            sent, weights = await asyncio.gather(
                c.call(swimmy.preprocess, 20, group="preprocess"),
                c.call(swimmy.train, group="train"))
            assert sent == [20, 20]
            assert np.allclose(np.mean(weights, axis=0), swimmy.TRUE_W, atol=0.05)
            assert await c.map(lambda x: x * 2, range(50)) == list(range(0, 100, 2))
        assert await asyncio.to_thread(wait_for, lambda: not managed(kubeconfig), 30)
        assert ks.call("access_log", user=PRODUCT_USER, allowed=False) == []  # Role enough
    finally:
        sys.modules.pop("swimmy", None)
        ks.stop()


@pytest.mark.parametrize("script", ["swimmy.py", "kubeface.py"])
def test_readme_shows_the_examples_as_they_run(script):
    source = (EXAMPLES / script).read_text()
    code = source[source.index('"""', 3) + 3:].strip("\n")  # without the module docstring
    assert code in (EXAMPLES.parent / "README.md").read_text()
