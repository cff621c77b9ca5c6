"""stdin, the debugger and ipywidgets of remote cells in a real JupyterLab, driven by headless
Chromium (issue 9, 3 and 5): the user types at the prompt, moves a slider, sees a progress bar.

The JupyterLab comes from tests/test_panel_browser.py's fixtures (one per module).
"""

from __future__ import annotations

import json

import pytest
import test_panel_browser as panel
from test_panel_browser import pump_until, run_notebook, screenshot

# the JupyterLab, browser and page fixtures of the panel's tests (a lab per module)
chromium_path, lab, browser, page = panel.chromium_path, panel.lab, panel.browser, panel.page

pytestmark = pytest.mark.slow


def notebook(lab, name: str, *cells: str) -> str:
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": src} for src in ("%load_ext jupyter_kremote",
                                                                *cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (lab.root / name).write_text(json.dumps(nb))
    return name


def answer(page, expect_prompt: str, text: str) -> None:
    """Type ``text`` at the cell's input box once it shows ``expect_prompt``, then Enter."""
    box = page.locator(".jp-Stdin-input")
    box.last.wait_for(timeout=90_000)
    prompt = page.locator(".jp-Stdin-prompt").last.inner_text()
    assert prompt.strip() == expect_prompt.strip(), prompt
    answered = box.last.element_handle()
    box.last.fill(text)
    box.last.press("Enter")
    page.wait_for_function("el => !el.isConnected", arg=answered, timeout=30_000)


def shows(page, area, text: str) -> None:
    assert pump_until(page, lambda: text in area.inner_text(), 30), area.inner_text()


@pytest.mark.timeout(300)
def test_input_and_pdb_at_the_notebook_prompt(lab, page) -> None:
    name = notebook(lab, "stdin.ipynb", "%%remote\n"
                                        "import os\n"
                                        "who = input('your name? ')\n"
                                        "x = 41\n"
                                        "breakpoint()\n"
                                        "y = x + 1\n"
                                        "print('hello', who, 'y is', y, 'pid', os.getpid())\n")
    run_notebook(page, lab, name)
    answer(page, "your name?", "Ada")
    answer(page, "(Pdb)", "p x")
    out = page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(1).locator(".jp-OutputArea")
    shows(page, out, "\n41\n")
    answer(page, "(Pdb)", "n")
    answer(page, "(Pdb)", "p y")
    shows(page, out, "\n42\n")
    screenshot(page, "relay-pdb.png")
    answer(page, "(Pdb)", "c")
    done = out.locator(".jp-OutputArea-output", has_text="hello Ada y is 42")
    done.wait_for(timeout=30_000)
    pid = int(done.inner_text().split("pid")[-1].split()[0])
    assert pid in lab.agent_pids()  # printed by the agent, not by the kernel


@pytest.mark.timeout(300)
def test_widgets_slider_calls_remote_f_and_tqdm_bar_shows(lab, page) -> None:
    name = notebook(lab, "widgets.ipynb", "%%remote\n"
                                          "import os\n"
                                          "from ipywidgets import interact\n"
                                          "from tqdm.auto import tqdm\n"
                                          "for i in tqdm(range(3), desc='steps'):\n"
                                          "    pass\n"
                                          "@interact(x=(0, 10))\n"
                                          "def f(x=5):\n"
                                          "    print('f got', x, 'in pid', os.getpid())\n")
    run_notebook(page, lab, name)
    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell").nth(1)
    bar = cell.locator(".widget-hprogress .progress-bar")
    bar.wait_for(timeout=90_000)
    # tqdm's widget: label, a full green bar, the count
    tqdm = cell.locator(".jp-OutputArea-output", has=page.locator(".widget-hprogress")).first
    assert "steps" in tqdm.inner_text() and "3/3" in tqdm.inner_text()
    assert pump_until(page, lambda: "progress-bar-success" in (bar.get_attribute("class") or ""),
                      30)
    cell.get_by_text("f got 5", exact=False).wait_for(timeout=30_000)
    handle = cell.locator(".widget-slider .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")  # the user moves the slider one step
    moved = cell.locator(".jp-OutputArea-output", has_text="f got 6").last  # the Output widget
    moved.wait_for(timeout=30_000)
    screenshot(page, "relay-widgets.png")
    pid = int(moved.inner_text().split("in pid")[-1].split()[0])
    assert pid in lab.agent_pids()  # f ran on the agent
    assert "f got 5" not in moved.inner_text()  # interact's Output widget was cleared
