"""Kubernetes test parts shared by the modules that run kernels against kubesim: the
emulator with the product's shipped Role, the list of what the product made, and one
factory for "a real kernel whose %%remote cells run on that emulator"."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from conftest import Kernel, wait_for

MANAGED = "app.kubernetes.io/managed-by=jupyter-kremote"
PRODUCT_USER = "system:serviceaccount:default:jupyter-kremote"


class Sim(NamedTuple):
    """The product's kubeconfig, the emulator (None on a real cluster), an admin kubeconfig."""

    kubeconfig: str
    ks: Any
    admin: str


def start_sim(tmp_path: Any, **settings: Any) -> Sim:
    """A KubeSimThread with RBAC on (stop it with `.ks.stop()`), the product's kubeconfig with
    the token of the `jupyter-kremote` ServiceAccount of templates/rbac.yaml, and an admin's."""
    from kubesim import KubeSimThread

    from jupyter_kremote.manifests import render_rbac

    ks = KubeSimThread(rbac=True, **settings).start()
    try:
        for doc in render_rbac(namespace="default"):
            ks.call("create", doc)
        token = ks.call("service_account_token", "default", "jupyter-kremote")
        path = ks.write_kubeconfig(tmp_path / "kubeconfig", token=token)
        return Sim(path, ks, ks.write_kubeconfig(tmp_path / "admin-kubeconfig"))
    except BaseException:
        ks.stop()
        raise


@contextmanager
def running_sim(tmp_path: Any, **settings: Any) -> Iterator[Sim]:
    """`start_sim` for a fixture: on the way out the shipped Role was enough (the product was
    refused nothing, even where it would have retried quietly, a watch), then it stops."""
    started = start_sim(tmp_path, **settings)
    try:
        yield started
        assert started.ks.call("access_log", user=PRODUCT_USER, allowed=False) == []
    finally:
        started.ks.stop()


def managed(kubeconfig: str, selector: str = "") -> list[str]:
    """Every Job, pod, Secret and NetworkPolicy jupyter-kremote made that still exists (an
    admin's kubeconfig: this lists all namespaces); ``selector`` adds labels
    (``kremote/user=bob``)."""
    async def go() -> list[str]:
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
            net = client.NetworkingV1Api(api)
            out = []
            for kind, fn in (("job", batch.list_job_for_all_namespaces),
                             ("pod", core.list_pod_for_all_namespaces),
                             ("secret", core.list_secret_for_all_namespaces),
                             ("networkpolicy", net.list_network_policy_for_all_namespaces)):
                res = await fn(label_selector=",".join(filter(None, (MANAGED, selector))))
                out += [f"{kind}/{o.metadata.name}" for o in res.items
                        if not (kind == "pod" and o.metadata.deletion_timestamp)]
            return out

    return asyncio.run(go())


def start_kube_kernel(kubeconfig: str, cwd: Any, **env: str) -> Kernel:
    """A real kernel with the extension loaded, its backend Kubernetes through `kubeconfig`
    (``env``: more environment, e.g. JUPYTERHUB_USER)."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "KREMOTE_KUBECONFIG": kubeconfig, "KREMOTE_BACKEND": "kubernetes",
           **env}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)
    k = Kernel(km, kc, cwd)
    assert k.run("%load_ext jupyter_kremote").status == "ok"
    return k


def stop_kube_kernel(k: Kernel, sim: Sim, others: list[str] | None = None,
                     processes: bool = True) -> None:
    """Shut the kernel's clusters down, then the kernel; nothing of its clusters is left
    (``others``: what other kernels still hold) and, on kubesim with ``processes``, no pod's
    process is left running."""
    k.run("%remote shutdown --all", timeout=60)
    k.kc.stop_channels()
    k.km.shutdown_kernel()
    assert wait_for(lambda: managed(sim.admin) == (others or []), 60), managed(sim.admin)
    if processes and not others and sim.ks is not None:
        assert wait_for(lambda: not sim.ks.call("processes"), 60), sim.ks.call("processes")


@contextmanager
def kube_kernel(sim: Sim, cwd: Any, *, processes: bool = True, **env: str
                ) -> Iterator[Kernel]:
    """`start_kube_kernel` for a fixture, stopped with `stop_kube_kernel` on the way out."""
    k = start_kube_kernel(sim.kubeconfig, cwd, **env)
    try:
        yield k
    finally:
        stop_kube_kernel(k, sim, processes=processes)
