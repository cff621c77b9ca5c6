"""ipywidgets from remote cells, both ways, through a real kernel (issue 9, 5).

The test plays the notebook frontend: it reads comm messages on iopub and sends comm
messages on the shell channel, as JupyterLab's widget manager does.
"""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
from conftest import ANSI, kernel_in

pytest.importorskip("ipywidgets")
VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    yield from kernel_in(tmp_path_factory.mktemp("notebooks"))


def _until_idle(kc, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every iopub message of the request ``msg_id``, until the kernel is idle after it."""
    got: list[dict[str, Any]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return got
        got.append(msg)
    raise AssertionError(f"the kernel never went idle after {msg_id}: {got}")


def execute(kernel, code: str) -> list[dict[str, Any]]:
    msg_id = kernel.kc.execute(code, stop_on_error=False)
    msgs = _until_idle(kernel.kc, msg_id)
    reply = kernel.kc.get_shell_msg(timeout=10)
    assert reply["content"]["status"] == "ok", msgs
    return msgs


def frontend_says(kernel, comm_id: str, data: dict[str, Any], kind: str = "comm_msg"):
    """Send a comm message as the frontend; return its id and what the kernel published."""
    msg = kernel.kc.session.msg(kind, {"comm_id": comm_id, "data": data})
    kernel.kc.shell_channel.send(msg)
    return msg["header"]["msg_id"], _until_idle(kernel.kc, msg["header"]["msg_id"])


def opened(msgs, model: str) -> list[dict[str, Any]]:
    return [m["content"] for m in msgs if m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"].get("_model_name") == model]


def updates(msgs, comm_id: str) -> list[dict[str, Any]]:
    return [m["content"]["data"].get("state", {}) for m in msgs
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]


def text(msgs, name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and m["content"]["name"] == name)


def test_a_slider_shows_and_the_frontend_moves_it(kernel):
    msgs = execute(kernel, "%%remote\n"
                           "import ipywidgets as w\n"
                           "slider = w.IntSlider(value=3, description='n')\n"
                           "slider.observe(lambda ch: print('now', ch['new']), 'value')\n"
                           "slider\n")
    (open_,) = opened(msgs, "IntSliderModel")
    assert open_["target_name"] == "jupyter.widget"
    assert open_["data"]["state"]["value"] == 3
    (result,) = [m["content"] for m in msgs if m["msg_type"] == "execute_result"]
    assert result["data"][VIEW]["model_id"] == open_["comm_id"]  # the view shows that model
    comm_id = open_["comm_id"]
    _, shown = frontend_says(kernel, comm_id, {"method": "update", "state": {"value": 7},
                                               "buffer_paths": []})
    assert text(shown) == "now 7\n"  # the remote observer ran, its output under the message
    res = kernel.run("%%remote\nprint(slider.value)")
    assert res.stdout == "7\n"
    # a failing callback: its traceback shows, the agent and the widget keep working
    kernel.run("%%remote\nslider.observe(lambda ch: 1 / 0, 'value')")
    _, shown = frontend_says(kernel, comm_id, {"method": "update", "state": {"value": 8},
                                               "buffer_paths": []})
    (error,) = [m["content"] for m in shown if m["msg_type"] == "error"]
    assert error["ename"] == "ZeroDivisionError"
    assert "1 / 0" in ANSI.sub("", "\n".join(error["traceback"]))  # coloured as in ipykernel
    assert kernel.run("%%remote\nprint(slider.value)").stdout == "8\n"


def test_interact_calls_f_on_the_agent_when_the_slider_moves(kernel):
    msgs = execute(kernel, "%%remote\n"
                           "from ipywidgets import interact\n"
                           "calls = []\n"
                           "@interact(x=(0, 10))\n"
                           "def f(x=5):\n"
                           "    calls.append(x)\n"
                           "    print('f got', x)\n")
    assert any(VIEW in m["content"].get("data", {}) for m in msgs
               if m["msg_type"] == "display_data")
    (slider,) = opened(msgs, "IntSliderModel")
    assert {"description": "x"} in updates(msgs, slider["comm_id"])
    (out,) = opened(msgs, "OutputModel")
    msg_id, shown = frontend_says(kernel, slider["comm_id"],
                                  {"method": "update", "state": {"value": 8},
                                   "buffer_paths": []})
    # f's output lands in interact's Output widget: it captures this message's output
    order = [("capture", s["msg_id"]) for s in updates(shown, out["comm_id"]) if "msg_id" in s]
    assert ("capture", msg_id) in order
    assert "f got 8\n" in text(shown)
    assert kernel.run("%%remote\nprint(calls)").stdout == "[5, 8]\n"


def test_an_output_widget_captures_remote_output(kernel):
    msgs = execute(kernel, "%%remote\n"
                           "import ipywidgets as w\n"
                           "from IPython.display import display\n"
                           "out = w.Output()\n"
                           "display(out)\n"
                           "with out:\n"
                           "    print('inside')\n"
                           "print('outside')\n")
    (out,) = opened(msgs, "OutputModel")
    cell_id = msgs[0]["parent_header"]["msg_id"]
    seq = []
    for m in msgs:
        if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == out["comm_id"]:
            state = m["content"]["data"].get("state", {})
            if "msg_id" in state:
                seq.append(("msg_id", state["msg_id"]))
        elif m["msg_type"] == "stream":
            seq.append(("text", m["content"]["text"]))
    # the frontend's Output model captures the cell's output between these two updates
    assert seq == [("msg_id", cell_id), ("text", "inside\n"), ("msg_id", ""),
                   ("text", "outside\n")]


def test_tqdm_auto_shows_a_widget_progress_bar(kernel):
    msgs = execute(kernel, "%%remote\n"
                           "from tqdm.auto import tqdm\n"
                           "for i in tqdm(range(4), desc='steps'):\n"
                           "    pass\n")
    (bar,) = opened(msgs, "FloatProgressModel")
    assert bar["data"]["state"]["max"] == 4
    assert any(u.get("value") == 4 for u in updates(msgs, bar["comm_id"]))
    assert any(u.get("bar_style") == "success" for u in updates(msgs, bar["comm_id"]))
    assert any(VIEW in m["content"]["data"] for m in msgs if m["msg_type"] == "display_data")
    assert "steps" not in text(msgs, "stderr")  # no text bar instead


def test_shutdown_closes_the_widgets_in_the_frontend(kernel):
    msgs = execute(kernel, "%%remote --name brief\nimport ipywidgets as w\nw.Checkbox()")
    assert opened(msgs, "CheckboxModel")
    closed = execute(kernel, "%remote shutdown --name brief")
    assert sorted(m["content"]["comm_id"] for m in closed if m["msg_type"] == "comm_close") \
        == sorted(m["content"]["comm_id"] for m in msgs if m["msg_type"] == "comm_open")
