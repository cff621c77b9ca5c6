"""The agent's shell behaves like ipykernel's (issue 9, points 2 and 6): matplotlib, display
ids, payloads, magics, what libraries check on get_ipython(), cell line numbers in
tracebacks. One kernel and one agent for the module, driven as a notebook front-end does."""

from __future__ import annotations

import base64
import os
import struct
from typing import Any

import pytest
from conftest import ANSI


class Shell:
    """Runs cells in a real kernel and keeps every iopub message a notebook would get."""

    def __init__(self, km, kc, cwd) -> None:
        self.km, self.kc, self.cwd = km, kc, cwd

    def run(self, code: str, timeout: float = 60) -> tuple[dict[str, Any], list[dict]]:
        msgs: list[dict] = []
        keep = {"stream", "display_data", "update_display_data", "execute_result", "error",
                "clear_output"}

        def hook(msg: dict[str, Any]) -> None:
            if msg["header"]["msg_type"] in keep:
                msgs.append({"type": msg["header"]["msg_type"], **msg["content"]})

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout,
                                            stop_on_error=False)
        return reply["content"], msgs

    def remote(self, code: str) -> tuple[dict[str, Any], list[dict]]:
        return self.run("%%remote\n" + code)


def kinds(msgs: list[dict]) -> list[str]:
    """What the cell showed, in order, without kremote's own status lines."""
    out = []
    for m in msgs:
        if "jupyter_kremote" in (m.get("metadata") or {}):
            continue  # kremote's own display (the cluster's start-up)
        if m["type"] == "stream":
            if m["text"].startswith("[kremote]"):
                continue
            out.append(m["name"])
        elif m["type"] in ("display_data", "update_display_data", "execute_result"):
            out.append(m["type"] + ":" + ",".join(sorted(m["data"])))
        else:
            out.append(m["type"])
    return out


def stdout(msgs: list[dict]) -> str:
    return "".join(m["text"] for m in msgs if m["type"] == "stream" and m["name"] == "stdout")


def traceback(msgs: list[dict]) -> str:
    return "".join(ANSI.sub("", "\n".join(m["traceback"])) for m in msgs if m["type"] == "error")


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    from jupyter_client.manager import start_new_kernel

    nb = tmp_path_factory.mktemp("notebook")
    (nb / "data").mkdir()
    (nb / "data" / "heights.csv").write_text("name,cm\nada,170\nbob,182\n")
    (nb / "script.py").write_text("import sys\nprint('script', sys.argv[1:])\nz = 5\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(nb), env=env)
    s = Shell(km, kc, nb)
    reply, _ = s.run("%load_ext jupyter_kremote")
    assert reply["status"] == "ok"
    try:
        yield s
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_matplotlib_inline_figure_formats_and_plots_after_the_value(shell):
    reply, msgs = shell.remote("%matplotlib inline\nimport matplotlib.pyplot as plt")
    assert reply["status"] == "ok" and kinds(msgs) == [], msgs
    # a plot cell ending in an expression: Out[n] first, then the figure, as locally
    reply, msgs = shell.remote("plt.plot([1, 2, 3])")
    assert kinds(msgs) == ["execute_result:text/plain", "display_data:image/png,text/plain"]
    assert "Line2D" in msgs[-2]["data"]["text/plain"]
    reply, msgs = shell.remote("%config InlineBackend.figure_formats = ['svg']\n"
                               "plt.plot([1, 2]);")
    assert kinds(msgs) == ["display_data:image/svg+xml,text/plain"], msgs
    reply, msgs = shell.remote("%config InlineBackend.figure_formats = ['retina']\n"
                               "plt.figure(figsize=(2, 1)); plt.plot([1, 2]);")
    (fig,) = [m for m in msgs if m["type"] == "display_data"]
    size = fig["metadata"]["image/png"]  # retina: twice the pixels, shown at half size
    pixels = base64.b64decode(fig["data"]["image/png"])[16:24]
    width, height = struct.unpack(">II", pixels)
    assert abs(width - 2 * size["width"]) <= 1 and abs(height - 2 * size["height"]) <= 1
    reply, msgs = shell.remote("%matplotlib")
    assert stdout(msgs) == "Using matplotlib backend: inline\n"


def test_failing_magic_leaves_the_shell_working(shell):
    reply, msgs = shell.remote("%matplotlib qt\nran = True")  # no Qt here: ImportError
    assert reply["status"] == "error"
    reply, msgs = shell.remote("get_ipython().enable_gui('qt')\nran = True")
    assert reply["ename"] == "UsageError" and "use %matplotlib inline" in reply["evalue"]
    # as IPython shows a UsageError: one stderr line, no traceback
    assert kinds(msgs) == ["stderr"], msgs
    assert msgs[-1]["text"].startswith("UsageError: %matplotlib qt: a window cannot open")
    # a cell of IPython syntax ending in ";" must not silence the next cells' values
    reply, msgs = shell.remote("%time y = 1\nlen([]);")
    assert reply["status"] == "ok"
    assert "Wall time: " in stdout(msgs) and "μs" in stdout(msgs)  # UTF-8, like ipykernel
    reply, msgs = shell.remote("'ran' in globals(), 6 * 7")
    assert [m["data"]["text/plain"] for m in msgs if m["type"] == "execute_result"] == \
        ["(False, 42)"]


def test_display_ids_updates_and_clear_output_reach_the_notebook(shell):
    reply, msgs = shell.remote(
        "from IPython.display import display, update_display, clear_output\n"
        "h = display('first', display_id=True)\n"
        "h.update('second')\n"
        "display('x', display_id='abc')\n"
        "update_display('y', display_id='abc')\n"
        "clear_output(wait=False)\n"
        "clear_output(wait=True)\n")
    assert reply["status"] == "ok"
    shown = [(m["type"], m["data"]["text/plain"], m["transient"].get("display_id"))
             for m in msgs if "data" in m]
    first_id = shown[0][2]
    assert first_id and shown == [("display_data", "'first'", first_id),
                                  ("update_display_data", "'second'", first_id),
                                  ("display_data", "'x'", "abc"),
                                  ("update_display_data", "'y'", "abc")]
    assert [m["wait"] for m in msgs if m["type"] == "clear_output"] == [False, True]


def test_magics_run_load_prun_shell_commands(shell):
    reply, msgs = shell.remote("%%time\ns = sum(range(10))")
    assert reply["status"] == "ok" and "Wall time" in stdout(msgs)
    reply, msgs = shell.remote("%run script.py one two\nz")
    assert stdout(msgs) == "script ['one', 'two']\n"
    assert [m["data"]["text/plain"] for m in msgs if m["type"] == "execute_result"] == ["5"]
    # %load fills the cell through the kernel's payload, under its %%remote line
    reply, msgs = shell.remote("%load script.py")
    (payload,) = reply["payload"]
    assert payload["source"] == "set_next_input" and payload["replace"] is True
    assert payload["text"] == "%%remote\n# %load script.py\n" + (shell.cwd / "script.py").read_text()
    # the pager (%prun) opens in the notebook as a payload, not as output
    reply, msgs = shell.remote("%prun sum(range(100))")
    (page,) = reply["payload"]
    assert page["source"] == "page" and "function calls" in page["data"]["text/plain"]
    assert "function calls" not in stdout(msgs)
    reply, msgs = shell.remote("!head -2 data/heights.csv")
    assert stdout(msgs).replace("\r\n", "\n") == "name,cm\nada,170\n"
    reply, msgs = shell.remote("%%bash\ntail -1 data/heights.csv | cut -d, -f2")
    assert stdout(msgs) == "182\n"
    reply, msgs = shell.remote("%pdb on")
    assert stdout(msgs) == "Automatic pdb calling has been turned ON\n"
    shell.remote("%pdb off")


def test_get_ipython_looks_like_ipykernel(shell):
    _, msgs = shell.remote(
        "import os\nip = get_ipython()\n"
        "print(type(ip).__name__, hasattr(ip, 'kernel'), 'IPKernelApp' in ip.config,"
        " hasattr(ip, 'display_pub'), os.environ['PAGER'])")
    assert stdout(msgs) == "ZMQInteractiveShell True True True cat\n"


@pytest.mark.parametrize("body, line, shown", [
    ("def g():\n    return 1 / 0\ng()", 4, "----> 4 g()"),
    ("x = (1,\n  2", 3, "Cell In["),  # SyntaxError
    ("def f():\n  return 1\n   y = 2", 4, "y = 2"),  # IndentationError
    ("%time y = 1\nundefined_name", 3, "----> 3 undefined_name"),  # through IPython's path
])
def test_tracebacks_number_lines_as_the_notebook_cell(shell, body, line, shown):
    reply, msgs = shell.remote(body)
    assert reply["status"] == "error"
    tb = traceback(msgs)
    assert f"line {line}" in tb and shown in tb, tb
    if reply["ename"] in ("SyntaxError", "IndentationError"):
        assert reply["evalue"].endswith(f", line {line})"), reply["evalue"]
        assert "incomplete input" in reply["evalue"] or reply["ename"] == "IndentationError"


def test_a_cell_run_again_names_its_own_run_in_tracebacks(shell):
    """The agent reuses the compiled code of a cell run before: a function it defines, and
    an error, must still point at the run that made them, and __future__ still apply."""
    body = "def h():\n    return 1 / 0\nh()"
    counts = []
    for _ in range(2):
        reply, msgs = shell.remote(body)
        assert reply["status"] == "error"
        counts.append(reply["execution_count"])
        assert f"Cell In[{counts[-1]}], line 4" in traceback(msgs), traceback(msgs)
    assert counts[0] != counts[1]
    reply, msgs = shell.remote("h()")  # the second run's h, defined in that cell
    assert f"Cell In[{counts[1]}], line 3, in h" in traceback(msgs), traceback(msgs)
    for _ in range(2):
        reply, msgs = shell.remote("from __future__ import annotations\n"
                                   "def k(x: undefined_type): pass\nk.__annotations__")
        assert reply["status"] == "ok", traceback(msgs)
    reply, msgs = shell.remote("def m(x: also_undefined): pass\nprint(m.__annotations__)")
    assert stdout(msgs) == "{'x': 'also_undefined'}\n"


def test_xmode_applies_to_remote_tracebacks(shell):
    shell.remote("%xmode Plain")
    try:
        reply, msgs = shell.remote("1/0")
        assert traceback(msgs).splitlines() == [
            "Traceback (most recent call last):", "", "  Cell In[{}], line 2".format(
                reply["execution_count"]), "    1/0", "", "ZeroDivisionError: division by zero"]
    finally:
        shell.remote("%xmode Context")


def test_a_failing_formatter_shows_an_error_as_in_a_kernel(shell):
    shell.remote("class Bad:\n"
                 "    def _repr_html_(self):\n        raise AttributeError('no html')\n"
                 "    def __repr__(self):\n        return 'Bad()'")
    # the cell's value: the error output, then Out[n] from text/plain, and the cell fails
    reply, msgs = shell.remote("Bad()")
    assert kinds(msgs) == ["error", "execute_result:text/plain"], msgs
    assert msgs[0]["ename"] == "AttributeError" and reply["status"] == "error"
    assert "raise AttributeError('no html')" in traceback(msgs)
    # display(): an error output, and the cell goes on
    reply, msgs = shell.remote("display(Bad())\nprint('goes on')")
    assert kinds(msgs) == ["error", "display_data:text/plain", "stdout"], msgs
    assert reply["status"] == "ok"
