"""A cluster's service in a real JupyterLab: the panel's link and ``%remote open`` open the page
that rank 0's pod serves, through the user's own Jupyter server.

kubesim runs the pods (RBAC on, the product holding only the shipped Role); the template is
tests/test_services.py's web app on a port named ``kremote-web``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import wait_for
from test_kubernetes import managed, start_sim
from test_kueue_kernel import CQ, blocker, delete_job
from test_kueue_kernel import OBJECTS as KUEUE_OBJECTS
from test_panel_browser import (  # noqa: F401 - browser, chromium_path, page... are fixtures
    Lab,
    browser,
    chromium_path,
    jp_asyncio_loop,
    jp_server_cleanup,
    open_lab,
    open_panel_from_palette,
    page,
    run_notebook,
    running_lab,
    screenshot,
    widen_sidebar,
)
from test_services import web_template


def left(admin: str) -> list[str]:
    """What kremote made that still exists (asked from a thread: Playwright's loop runs here)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(managed, admin).result()


@pytest.fixture(scope="module")
def kube_sim(tmp_path_factory, chromium_path) -> Iterator[Any]:  # noqa: F811
    """kubesim with Kueue (test_kueue_kernel's team queue: 1 cpu of quota)."""
    sim = start_sim(tmp_path_factory.mktemp("sim"), pod_ips="unique", kueue=True)
    try:
        for obj in KUEUE_OBJECTS:
            sim.ks.call("create", obj)
        yield sim
    finally:
        sim.ks.stop()


@pytest.fixture(scope="module")
def kube_lab(kube_sim, tmp_path_factory) -> Iterator[tuple[Lab, str]]:
    """JupyterLab whose clusters run on kubesim; with the admin's kubeconfig for checks."""
    sim = kube_sim
    with running_lab(tmp_path_factory.mktemp("lab"),
                     {"KREMOTE_KUBECONFIG": sim.kubeconfig},
                     ("--KRemoteApp.backend=kubernetes",)) as lab:
        try:
            yield lab, sim.admin
        finally:  # Kubernetes clusters outlive their server (keep_on_exit): end them
            for c in lab.api("GET", "clusters")["clusters"]:
                lab.api("DELETE", f"clusters/{c['id']}")
    assert wait_for(lambda: not left(sim.admin), 60), left(sim.admin)


@pytest.mark.timeout(300)
def test_panel_link_opens_the_page_rank_0_serves(kube_lab, page) -> None:  # noqa: F811
    lab, admin = kube_lab
    template = web_template(lab.root)
    cells = ["%load_ext jupyter_kremote",
             (f"%%remote --backend kubernetes -t {template} --cpu 100m --mem 100Mi\n"
              "print('cluster up')"),
             "%remote open web"]
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": src} for src in cells],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (lab.root / "web.ipynb").write_text(json.dumps(nb))
    notebook = run_notebook(page, lab, "web.ipynb", started=r"\[1\]")
    notebook.locator(".jp-OutputArea-output", has_text="cluster up").wait_for(timeout=120_000)

    # %remote open: a link in the cell's output, to this server's proxy route
    [model] = [c for c in lab.api("GET", "clusters")["clusters"]
               if c["notebook"] == "web.ipynb"]
    path = f"/kremote/proxy/{model['id']}/web/"
    assert model["services"] == [{"name": "web", "port": 8642, "path": path[1:]}]
    opened = notebook.locator(f".jp-OutputArea-output a[href='{path}']")
    opened.wait_for(timeout=30_000)
    assert opened.inner_text() == "web"

    # the panel: the card lists the service; its link opens the page rank 0's pod serves
    open_panel_from_palette(page)
    widen_sidebar(page)
    card = page.locator("#jupyter-kremote-panel article.jp-kremote-card"
                        "[aria-label='cluster default']")
    link = card.locator("a.jp-kremote-service[data-service='web']")
    link.wait_for(timeout=30_000)
    assert link.get_attribute("href") == lab.url.rstrip("/") + path
    screenshot(page, "panel-service.png")
    rank0 = model["pods"][0]["name"]
    for _ in range(50):  # the app starts beside the agent: until it listens, 502
        with page.context.expect_page() as popup_info:
            link.click()
        tab = popup_info.value
        tab.wait_for_load_state()
        text = tab.locator("body").inner_text()
        if "served by pod" in text:
            break
        assert text.startswith("502 Bad Gateway"), text
        tab.close()
        page.wait_for_timeout(200)
    assert tab.url.endswith(path)
    assert tab.locator("#where").inner_text().startswith(f"served by pod {rank0} rank 0 from ")
    assert tab.title() == "kremote web service"
    screenshot(tab, "service-page.png")
    tab.close()

    # shut down from the panel: the link goes with the cluster
    card.locator(".jp-kremote-shutdown").click()
    page.locator(".jp-Dialog .jp-Dialog-button", has_text="Shut down").click()
    card.wait_for(state="detached", timeout=30_000)
    assert wait_for(lambda: not left(admin), 60)


@pytest.mark.timeout(300)
def test_panel_shows_the_queue_line_and_the_preemption(kube_lab, kube_sim, page) -> None:  # noqa: F811
    """Kueue in the panel: a queued cluster's card says where it waits (live), and a
    preemption shows as a Preempted event while the card says the cluster waits again."""
    lab, _ = kube_lab
    pool = ThreadPoolExecutor(2)  # the emulator and the blocking start, off Playwright's loop
    try:
        pool.submit(kube_sim.ks.call, "create", blocker("panel-holder")).result()
        started = pool.submit(lab.api, "POST", "clusters", {
            "name": "queued", "notebook": "kueue.ipynb", "queue": "team", "cpu": "1",
            "on_preempt": "requeue"}, 240)
        open_lab(page, lab, reset=True)
        open_panel_from_palette(page)
        widen_sidebar(page)
        card = page.locator("#jupyter-kremote-panel article.jp-kremote-card"
                            "[aria-label='cluster queued']")
        card.locator(".jp-kremote-nopods", has_text=(
            f"queued in team (ClusterQueue {CQ}), position 1: couldn't assign flavors"
        )).wait_for(timeout=120_000)
        screenshot(page, "panel-queued.png")
        pool.submit(delete_job, kube_sim, "panel-holder").result()
        assert started.result(240)["state"] == "running"
        # every event shown (the pods' own soon push Kueue's past the first eight)
        admitted = card.locator(".jp-kremote-event", has_text="admitted after")
        more = card.locator("button[data-key$=':more-events']")

        def every_event_shown() -> bool:
            if admitted.count():
                return True
            if more.count() and more.inner_text().startswith("all"):
                more.click()
            return False

        assert wait_for(every_event_shown, 60, 0.2)

        pool.submit(kube_sim.ks.call, "create", blocker("panel-urgent", "urgent")).result()
        preempted = card.locator(".jp-kremote-event-warning", has_text="Preempted")
        preempted.wait_for(timeout=120_000)
        assert (f"preempted by a higher-priority workload in ClusterQueue {CQ}"
                in preempted.inner_text())
        card.locator(".jp-kremote-nopods", has_text="queued in team").wait_for(
            timeout=120_000)
        # the reason stays in the card while the stage moves on to the queue line
        evicted = card.locator(".jp-kremote-evicted", has_text="it waits in the queue again")
        evicted.wait_for(timeout=60_000)
        assert f"preempted by a higher-priority workload in ClusterQueue {CQ}" \
            in evicted.inner_text()
        status = card.locator(".jp-kremote-status")
        assert status.inner_text() == "requeued"
        assert "preempted" in (status.get_attribute("title") or "")
        screenshot(page, "panel-preempted.png")
    finally:
        pool.submit(delete_job, kube_sim, "panel-urgent").result()
        pool.submit(delete_job, kube_sim, "panel-holder").result()
        pool.shutdown()
