"""The JupyterLab panel "Remote clusters", in a real JupyterLab driven by headless Chromium.

A real ``jupyter lab`` (the server extension on the local backend, the labextension from
``labextension/build.sh``'s output) runs in a temporary root folder; Playwright drives Debian's
``/usr/bin/chromium``. Screenshots go to ``test-artifacts/`` (git-ignored).

Also here, because they test the same front end without a browser: the labextension's own
unit tests (jest) and the wheel shipping the built extension.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import agent_pids_of, wait_for

ROOT = Path(__file__).resolve().parents[1]
LABEXT_SRC = ROOT / "labextension"
LABEXT_OUT = ROOT / "jupyter_kremote" / "labextension"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
CELL = "%%remote -n 2\nimport os\nprint('hello from rank', os.environ['KREMOTE_RANK'])"
TTL_RE = re.compile(r"(?:(\d+)d\s*)?(?:(\d+)h\s*)?(?:(\d+)m\s*)?(?:(\d+)s)?\s*left")

pytestmark = pytest.mark.slow


# -- helpers ---------------------------------------------------------------------------------
def ttl_seconds(text: str) -> int:
    """Seconds of the panel's countdown text ("59m 58s left", "1h 02m 03s left")."""
    m = TTL_RE.search(text)
    assert m and any(m.groups()), f"not a countdown: {text!r}"
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_labextension() -> None:
    """Build the extension (skipped by the script when the output is up to date)."""
    if shutil.which("npm") is None and (LABEXT_OUT / "package.json").exists():
        return  # a prebuilt output without Node.js: use it as it is
    proc = subprocess.run(["bash", str(LABEXT_SRC / "build.sh")], check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"labextension/build.sh failed:\n{proc.stdout}\n{proc.stderr}"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pump_until(page, predicate, timeout: float) -> bool:
    """Wait for ``predicate`` while Playwright keeps dispatching (its route handlers run only
    inside its own calls, never during time.sleep)."""
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        page.wait_for_timeout(100)
    return predicate()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


class Lab:
    """A running ``jupyter lab`` in a temporary root folder."""

    def __init__(self, proc: subprocess.Popen, url: str, token: str, root: Path) -> None:
        self.proc, self.url, self.token, self.root = proc, url, token, root

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}kremote/api/v1/{path}", data=data,
                                     method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def agent_pids(self) -> list[int]:
        return agent_pids_of(self.proc.pid)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (./scripts/test.sh installs Debian's chromium "
                    "when it can: apt-get install chromium)")
    pytest.importorskip("playwright.sync_api",
                        reason="Python Playwright is missing: pip install -e .[test]")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("lab")) as started:
        yield started


@contextlib.contextmanager
def running_lab(base: Path, more_env: dict[str, str] | None = None,
                args: tuple[str, ...] = ("--KRemoteApp.backend=local",)) -> Iterator[Lab]:
    """A ``jupyter lab`` in ``base``/root with demo.ipynb (``more_env``: variables, ``args``:
    more flags); at the end it is stopped with SIGINT and no agent is left."""
    build_labextension()
    root = base / "root"
    root.mkdir()
    # the labextension from this working tree, found first through JUPYTER_PATH
    data = base / "data" / "labextensions"
    data.mkdir(parents=True)
    (data / "jupyter-kremote").symlink_to(LABEXT_OUT, target_is_directory=True)
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "%load_ext jupyter_kremote"},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": CELL}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    (root / "demo.ipynb").write_text(json.dumps(nb))

    # other labextensions of the environment stay out of the way (dialogs, toasts)
    labconfig = base / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": {
        "ipyparallel-labextension": True,
        "@jupyterlab/apputils-extension:announcements": True}}))

    # start the notebook's kernel without asking which one
    tracker = base / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(
        json.dumps({"autoStartDefaultKernel": True}))

    token = uuid.uuid4().hex
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KREMOTE_", "JUPYTER_"))}
    env.update({
        "JUPYTER_PATH": str(base / "data"),
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "IPYTHONDIR": str(base / "ipython"),
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "server_ext"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    env.update(more_env or {})
    log = open(base / "lab.log", "w")  # noqa: SIM115 - closed at teardown
    jupyter = Path(sys.executable).parent / "jupyter"
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         "--LabApp.expose_app_in_browser=True",
         f"--LabApp.workspaces_dir={base / 'workspaces'}",
         f"--LabApp.user_settings_dir={base / 'settings'}",
         "--ServerApp.jpserver_extensions=jupyter_kremote_server=True",
         "--ServerApp.jpserver_extensions=ipyparallel=False",
         *args, "--KRemoteApp.default_ttl=3600",
         "--KRemoteApp.max_ttl=86400", "--KRemoteApp.telemetry_interval=1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    lab = Lab(proc, url, token, root)

    def up() -> bool:
        try:
            lab.api("GET", "clusters", timeout=2)
            return True
        except OSError:
            return proc.poll() is not None

    try:
        assert wait_for(up, 60, 0.3) and proc.poll() is None, \
            f"jupyter lab did not start:\n{(base / 'lab.log').read_text()[-3000:]}"
        yield lab
    finally:
        pids = lab.agent_pids()
        proc.send_signal(signal.SIGINT)  # the server shuts its kernels and clusters down
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(base / "lab.log", ARTIFACTS / "lab.log")
        assert wait_for(lambda: not [p for p in pids if alive(p)], 15, 0.2), \
            f"agents left behind: {[p for p in pids if alive(p)]}"


@pytest.fixture
def jp_asyncio_loop() -> None:
    """Stands in for pytest-jupyter's autouse fixtures (this one and `jp_server_cleanup`),
    which other test modules register for the whole session: Playwright's sync API runs a
    loop of its own here, which they would try to close or run."""


@pytest.fixture
def jp_server_cleanup() -> None:
    """See `jp_asyncio_loop`: no in-process Jupyter server here to clean up."""


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1500, "height": 950},
                                  accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        try:  # what the page showed at the end (a failure's last state)
            screenshot(pg, f"last-{request.node.name}.png")
        finally:
            context.close()


def open_lab(page, lab: Lab, path: str = "lab", *, reset: bool = False) -> None:
    """Open JupyterLab at ``path``; ``reset`` starts from an empty workspace (no tabs restored)."""
    page.goto(f"{lab.url}{path}?token={lab.token}" + ("&reset" if reset else ""))
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.wait_for_function("() => !!window.jupyterapp")
    page.evaluate("() => window.jupyterapp.restored.then(() => true)")


def run_notebook(page, lab: Lab, name: str, started: str = r"\[(\*|\d+)\]"):
    """Open notebook ``name`` alone, wait for its idle kernel, run all its cells; return its
    ``.jp-Notebook`` locator.

    Why each step: a restored workspace can bring back another notebook and activate it after
    this one, so that run-all ran that one instead (a CI run waited 120 s for output that never
    came); and a run-all sent while the notebook still settles can be dropped, so it is sent
    again while no prompt shows a cell as started (``started``, a regex on the prompts).
    """
    open_lab(page, lab, f"lab/tree/{name}", reset=True)
    page.wait_for_function(  # this notebook current, with its kernel idle
        "name => { const app = window.jupyterapp, w = app.shell.currentWidget;"
        " if (!w || !w.context || w.context.path !== name) {"
        "   void app.commands.execute('docmanager:open', {path: name}); return false; }"
        " return !!(w.sessionContext && w.sessionContext.session"
        "   && w.sessionContext.kernelDisplayStatus === 'idle'); }",
        arg=name, polling=500, timeout=90_000)
    panel_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    notebook = page.locator(f"[id='{panel_id}'] .jp-Notebook")
    notebook.locator(".jp-Cell").first.wait_for()
    prompts = notebook.locator(".jp-InputPrompt", has_text=re.compile(started))
    for _ in range(3):
        page.evaluate(
            "name => { const app = window.jupyterapp;"
            " void app.commands.execute('docmanager:open', {path: name}).then("
            "   () => app.commands.execute('notebook:run-all-cells')); }", name)
        try:
            prompts.first.wait_for(timeout=15_000)
            return notebook
        except Exception:  # noqa: BLE001, S112 - Playwright's TimeoutError: send it again
            continue
    prompts.first.wait_for(timeout=1000)
    return notebook


def open_panel_from_palette(page) -> None:
    """The palette command, by keyboard: Ctrl+Shift+C, type, Enter."""
    panel = page.locator("#jupyter-kremote-panel")
    search = page.locator(".lm-CommandPalette-input")
    for _ in range(4):  # a key press may land while the restored shell still moves focus
        try:
            page.keyboard.press("Control+Shift+C")
            search.wait_for(timeout=3000)
            search.fill("Remote clusters: open panel", timeout=3000)
            page.locator(".lm-CommandPalette-item",
                         has_text="Remote clusters: open panel").first.wait_for(timeout=3000)
            page.keyboard.press("Enter")
            panel.wait_for(state="visible", timeout=3000)
            return
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: try again
            page.keyboard.press("Escape")
    panel.wait_for(state="visible", timeout=1000)


def widen_sidebar(page, to: int = 560) -> None:
    """Drag the handle between the left sidebar and the main area, as a user would."""
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    if box is None:
        return
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(to, y, steps=5)
    page.mouse.up()


# -- the panel -------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_panel_shows_manages_and_shuts_down_a_cluster(lab: Lab, page) -> None:
    sockets: list[Any] = []
    held: list[str] | None = None  # a list while the server's messages are held back

    def stream(ws) -> None:  # every connection of the panel to the event stream
        server = ws.connect_to_server()

        def from_server(message) -> None:
            if held is not None:
                held.append(message)
            else:
                ws.send(message)

        server.on_message(from_server)
        sockets.append(ws)

    page.route_web_socket(re.compile(r".*/kremote/api/v1/stream.*"), stream)
    open_lab(page, lab, "lab/tree/demo.ipynb")
    open_panel_from_palette(page)
    widen_sidebar(page)
    panel = page.locator("#jupyter-kremote-panel")

    # empty state: the two-line how-to
    empty = panel.locator(".jp-kremote-empty")
    empty.wait_for()
    assert "%load_ext jupyter_kremote" in empty.inner_text()
    assert "%%remote" in empty.inner_text()
    status_item = page.locator(".jp-kremote-statusitem")
    assert status_item.inner_text() == "Remote pods: 0"
    screenshot(page, "panel-empty.png")

    # a %%remote cell in the notebook: the kernel asks the server for its cluster
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " return w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.kernelDisplayStatus === 'idle'; }", timeout=60_000)
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    output = page.locator(".jp-OutputArea-output", has_text="hello from rank 1")
    output.wait_for(timeout=90_000)
    # the start-up progress ("asking the Jupyter server ...") is replaced in place by its end
    assert "cluster 'default': 2 local agent(s) ready" in page.locator(".jp-Notebook").inner_text()

    card = panel.locator(".jp-kremote-card")
    card.wait_for(timeout=30_000)
    assert card.count() == 1
    assert card.locator(".jp-kremote-name").inner_text() == "default"
    assert card.locator(".jp-kremote-backend").inner_text().startswith("local")
    assert panel.locator(".jp-kremote-group-title").first.inner_text() == "demo.ipynb"
    assert card.locator(".jp-kremote-status").inner_text() == "running"

    # pod rows: name, rank, phase, node, restarts, age
    rows = card.locator("tr.jp-kremote-pod")
    wait_for(lambda: rows.count() == 2, 20, 0.2)
    assert rows.count() == 2
    for rank in (0, 1):
        row = card.locator(f"tr.jp-kremote-pod[data-rank='{rank}']")
        assert row.locator(".jp-kremote-pod-rank").inner_text() == str(rank)
        assert row.locator(".jp-kremote-pod-name").inner_text() == f"rank-{rank}"
        assert row.locator(".jp-kremote-pod-phase").inner_text() == "Running"
        assert row.locator(".jp-kremote-pod-node").inner_text() == socket.gethostname()
        assert row.locator(".jp-kremote-pod-restarts").inner_text() == "0"
        assert re.fullmatch(r"\d+[smhd]", row.locator(".jp-kremote-pod-age").inner_text())
    # telemetry: CPU and memory per pod; no GPU bar where a sample has no `gpus`
    card.locator(".jp-kremote-cpu").first.wait_for(timeout=20_000)
    assert re.fullmatch(r"CPU \d+%", card.locator(".jp-kremote-cpu").first.inner_text())
    assert "iB" in card.locator(".jp-kremote-mem").first.inner_text()
    assert card.locator(".jp-kremote-gpu").count() == 0
    assert status_item.inner_text() == "Remote pods: 2"

    # the TTL counts down, second by second
    ttl = card.locator(".jp-kremote-ttl")
    first = ttl_seconds(ttl.inner_text())
    assert 3000 < first <= 3600
    time.sleep(2.2)
    second = ttl_seconds(ttl.inner_text())
    assert 1 <= first - second <= 4, (first, second)
    assert "jp-kremote-warn" not in (ttl.get_attribute("class") or "")

    # events, newest first
    events = card.locator(".jp-kremote-event")
    events.first.wait_for(timeout=20_000)
    reasons = events.locator(".jp-kremote-event-reason").all_inner_texts()
    assert "Ready" in reasons or "Created" in reasons, reasons
    ages = card.locator(".jp-kremote-event .jp-kremote-event-age").all_inner_texts()
    assert ages, "events have ages"
    screenshot(page, "panel-running.png")
    # a single-user server has no admins: once it has said so, no "All users" toggle
    page.wait_for_selector('#jupyter-kremote-panel[data-admin="no"]', state="attached",
                           timeout=20_000)
    assert panel.locator(".jp-kremote-admin-toggle").count() == 0

    # the live stream drops: the panel reconnects and gets a new snapshot
    assert sockets, "the panel never opened the event stream"
    assert panel.locator(".jp-kremote-connection").inner_text() == "live"
    sockets[-1].close()
    assert pump_until(page, lambda: len(sockets) >= 2, 20), "the panel did not reconnect"
    panel.locator(".jp-kremote-connection", has_text="live").wait_for(timeout=20_000)
    assert card.count() == 1

    # GPU bars and sparkline (this machine has none: samples sent to the page as the stream
    # would send them; the server's own, without `gpus`, are held back meanwhile)
    cluster_id = lab.api("GET", "clusters")["clusters"][0]["id"]
    held = []
    now = time.time()
    for i, util in enumerate([20, 55, 83, 64, 91]):
        sockets[-1].send(json.dumps({"type": "telemetry", "id": cluster_id, "rank": 1, "sample": {
            "time": now + i * 0.01, "cpu_percent": 97.5, "mem_bytes": 3_100_000_000,
            "mem_total_bytes": 8_000_000_000,
            "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "util_percent": util,
                      "mem_used_bytes": 41_000_000_000, "mem_total_bytes": 81_559_000_000}]}}))
    gpu = card.locator("tr.jp-kremote-pod-telemetry[data-rank='1'] .jp-kremote-gpu")
    gpu.wait_for(timeout=10_000)
    assert gpu.locator(".jp-kremote-bar-util").get_attribute("style") == "width: 91%"
    assert "38.2 GiB / 76 GiB" in gpu.inner_text()
    assert gpu.locator(".jp-kremote-sparkline polyline").get_attribute("points").count(",") == 5
    assert card.locator("tr.jp-kremote-pod-telemetry[data-rank='0'] .jp-kremote-gpu").count() == 0
    panel.locator(".jp-kremote-body").screenshot(path=str(ARTIFACTS / "panel.png"))
    # the last ten minutes turn the countdown to the warning colour
    model = lab.api("GET", f"clusters/{cluster_id}")
    sockets[-1].send(json.dumps({"type": "cluster",
                                 "cluster": {**model, "deadline": time.time() + 300}}))
    page.locator(".jp-kremote-ttl.jp-kremote-warn").wait_for(timeout=10_000)
    assert 280 < ttl_seconds(ttl.inner_text()) <= 300
    # the server's messages held meanwhile reach the page, less its samples without GPUs
    for message in held:
        if json.loads(message).get("type") != "telemetry":
            sockets[-1].send(message)
    held = None

    # rank 0's log in a main-area tab, following; copy and download
    card.locator("tr.jp-kremote-pod[data-rank='0'] .jp-kremote-logs").click()
    log = page.locator(".jp-kremote-logtext")
    log.wait_for()
    page.locator(".jp-kremote-logtext", has_text="agent rank 0 listening").wait_for(
        timeout=20_000)
    with page.expect_download() as dl:
        page.locator(".jp-kremote-download").click()
    saved = Path(dl.value.path()).read_text()
    assert "agent rank 0 listening" in saved
    page.locator(".jp-kremote-copy").click()
    page.locator(".jp-kremote-logstatus", has_text="copied").wait_for()
    screenshot(page, "panel-logs.png")

    # Extend: +1 h by default, the countdown grows
    before = ttl_seconds(ttl.inner_text())
    extend = card.locator(".jp-kremote-extend")
    extend.focus()
    page.keyboard.press("Enter")  # keyboard reachable
    wait_for(lambda: ttl_seconds(ttl.inner_text()) > before + 3000, 15, 0.2)
    after = ttl_seconds(ttl.inner_text())
    assert after > before + 3000, (before, after)
    assert lab.api("GET", "clusters")["clusters"][0]["deadline"] > time.time() + 6000
    screenshot(page, "panel-extended.png")

    # the theme: the panel follows JupyterLab's variables (dark)
    light_bg = panel.evaluate("el => getComputedStyle(el).backgroundColor")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    wait_for(lambda: panel.evaluate("el => getComputedStyle(el).backgroundColor") != light_bg,
             20, 0.2)
    assert panel.evaluate("el => getComputedStyle(el).backgroundColor") != light_bg
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=20_000)
    screenshot(page, "panel-dark.png")

    # Shut down, confirmed in the dialog: the card and the agents are gone
    pids = lab.agent_pids()
    assert len(pids) == 2, pids
    card.locator(".jp-kremote-shutdown").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "Shut down cluster" in dialog.inner_text()
    screenshot(page, "panel-shutdown-dialog.png")
    dialog.locator(".jp-Dialog-button", has_text="Shut down").click()
    card.wait_for(state="detached", timeout=30_000)
    panel.locator(".jp-kremote-empty").wait_for()
    assert wait_for(lambda: not any(alive(p) for p in pids), 15, 0.2), \
        f"agents still running: {[p for p in pids if alive(p)]}"
    assert lab.api("GET", "clusters")["clusters"] == []
    assert status_item.inner_text() == "Remote pods: 0"
    screenshot(page, "panel-after-shutdown.png")


GROUP_CELLS = [
    "%load_ext jupyter_kremote",
    "%%remote -n 1\nx = 1",
    "%remote group add train -n 2",
    ("from jupyter_kremote import LocalCluster\n"
     "async with LocalCluster(count=2, name='squares') as c:\n"
     "    squares = await c.map(lambda x: x * x, range(40))\n"
     "    try:\n"
     "        await c.map(lambda x: 1 // (x - 3), range(8), retries=0)\n"
     "    except Exception as exc:\n"
     "        print('map failed:', type(exc).__name__)\n"
     "print('sum of squares', sum(squares))"),
]


@pytest.mark.timeout(300)
def test_panel_shows_pod_groups_and_map_counts(lab: Lab, page) -> None:
    """A cluster with two groups is one card with a heading per group; the kernel's maps show
    with their done / running / failed counts."""
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": src} for src in GROUP_CELLS],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (lab.root / "groups.ipynb").write_text(json.dumps(nb))
    notebook = run_notebook(page, lab, "groups.ipynb")
    open_panel_from_palette(page)
    widen_sidebar(page)
    panel = page.locator("#jupyter-kremote-panel")
    notebook.locator(".jp-OutputArea-output", has_text="sum of squares 20540").wait_for(
        timeout=120_000)
    assert "map failed: " in notebook.inner_text()

    # one card for the cluster, its pods under a heading per group
    section = panel.locator("section.jp-kremote-group[aria-label='groups.ipynb']")
    card = section.locator("article.jp-kremote-card[aria-label='cluster default']")
    card.wait_for(timeout=30_000)
    assert section.locator("article[aria-label='cluster default-train']").count() == 0
    groups = card.locator(".jp-kremote-podgroup")
    wait_for(lambda: card.locator("tr.jp-kremote-pod").count() == 3, 20, 0.2)
    assert groups.locator(".jp-kremote-podgroup-name").all_inner_texts() == ["main", "train"]
    details = groups.locator(".jp-kremote-podgroup-details").all_inner_texts()
    assert details[0].startswith("1 pod") and details[1].startswith("2 pods"), details
    assert card.locator(".jp-kremote-podgroup[data-group='train'] tr.jp-kremote-pod").count() == 2
    assert card.locator(".jp-kremote-pod-count").inner_text() == "3 in 2 groups"
    models = [c for c in lab.api("GET", "clusters")["clusters"]
              if c["notebook"] == "groups.ipynb"]
    assert sorted((c["group"], c["family"]) for c in models) == [
        ("main", "default"), ("train", "default")]
    assert {p["group"] for c in models for p in c["pods"]} == {"main", "train"}

    # the maps the kernel ran, with their counts: the last state is reported
    maps = section.locator("article[aria-label='maps of squares'] .jp-kremote-map")
    page.locator(".jp-kremote-map-failed").wait_for(timeout=20_000)
    assert maps.count() == 2
    failed, done = maps.nth(0), maps.nth(1)  # newest first
    assert done.locator(".jp-kremote-map-counts").inner_text() == (
        "done 40/40 · running 0 · failed 0")
    assert done.locator(".jp-kremote-map-state").inner_text() == "done"
    failed_counts = failed.locator(".jp-kremote-map-counts").inner_text()
    assert re.fullmatch(r"done \d/8 · running 0 · failed [1-9]", failed_counts), failed_counts
    assert failed.locator(".jp-kremote-map-state").inner_text() == "failed"
    assert lab.api("GET", "tasks")["tasks"]["groups.ipynb"][0]["total"] == 40
    for _ in range(3):  # an artifact for the docs: the live panel may re-render meanwhile
        try:
            panel.locator(".jp-kremote-body").screenshot(path=str(ARTIFACTS / "panel-groups.png"))
            break
        except Exception as exc:  # "not attached to the DOM": take it again
            if "not attached" not in str(exc):
                raise

    # Shut down acts on the whole cluster: both groups' agents stop
    card.locator(".jp-kremote-shutdown").click()
    page.locator(".jp-Dialog .jp-Dialog-button", has_text="Shut down").click()
    card.wait_for(state="detached", timeout=30_000)
    assert wait_for(lambda: not [c for c in lab.api("GET", "clusters")["clusters"]
                                 if c["notebook"] == "groups.ipynb"], 20, 0.2)
    # the maps stay listed until the kernel reports none (here: as a new kernel would)
    assert section.locator("article[aria-label='maps of squares']").count() == 1
    lab.api("PUT", "tasks", {"notebook": "groups.ipynb", "maps": []})
    section.wait_for(state="detached", timeout=10_000)


@pytest.mark.timeout(180)
def test_panel_error_state_when_the_server_extension_is_missing(lab: Lab, page) -> None:
    """A server without the extension answers 404 under kremote/api/v1: the panel says so."""
    page.route(re.compile(r".*/kremote/api/v1/.*"),
               lambda route: route.fulfill(status=404, body="<html>404: Not Found</html>",
                                           content_type="text/html"))
    page.route_web_socket(re.compile(r".*/kremote/api/v1/stream.*"),
                          lambda ws: ws.close())
    open_lab(page, lab)
    open_panel_from_palette(page)
    error = page.locator("#jupyter-kremote-panel .jp-kremote-error")
    error.wait_for(timeout=20_000)
    assert "server extension is not enabled" in error.inner_text()
    assert "jupyter server extension list" in error.inner_text()
    screenshot(page, "panel-error.png")
    # once the extension answers again, Retry brings the panel back
    page.unroute(re.compile(r".*/kremote/api/v1/.*"))
    error.locator("button", has_text="Retry").click()
    page.locator("#jupyter-kremote-panel .jp-kremote-empty").wait_for(timeout=20_000)


# -- the labextension without a browser --------------------------------------------------------
def test_labextension_unit_tests() -> None:
    """The front end's logic (formatting, countdown, the stream's state reducer) under jest."""
    if shutil.which("npm") is None:
        pytest.skip("npm is missing: the jest unit tests need Node.js")
    build_labextension()  # also runs npm install when needed
    proc = subprocess.run(["npm", "test", "--silent", "--", "--ci"], cwd=LABEXT_SRC,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"jest failed:\n{proc.stdout}\n{proc.stderr}"
    assert re.search(r"Tests:\s+\d+ passed, \d+ total", proc.stderr + proc.stdout)


def test_wheel_ships_the_prebuilt_labextension(tmp_path: Path) -> None:
    """`pip install` of the wheel is all a user does: the built extension is in it, the server
    extension's dependency comes with it, and building it leaves the npm lock file as
    committed (reproducible builds)."""
    lock = (ROOT / "labextension" / "package-lock.json").read_bytes()
    build_labextension()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "-w", str(tmp_path), str(ROOT)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("jupyter_kremote-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    share = [n for n in names if "/data/share/jupyter/labextensions/jupyter-kremote/" in n]
    assert any(n.endswith("/jupyter-kremote/package.json") for n in share), names
    assert any(re.search(r"/static/remoteEntry\.[0-9a-f]+\.js$", n) for n in share), share
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/jupyter_kremote_server.json")
               for n in names)
    meta = json.loads(zipfile.ZipFile(wheel).read(
        next(n for n in share if n.endswith("/jupyter-kremote/package.json"))))
    assert meta["name"] == "jupyter-kremote"
    assert meta["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(re.match(r"Requires-Dist: jupyter[-_]server\b[^;]*$", r) for r in requires), \
        requires  # a plain install, no extra: the server extension it enables can load
    assert (ROOT / "labextension" / "package-lock.json").read_bytes() == lock
