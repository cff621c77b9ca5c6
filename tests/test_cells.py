"""%%remote through a real ipykernel: output, errors, state, interrupt (issue 2, 1-6)."""

from __future__ import annotations

import pytest


def test_output_streams_live_and_labelled(kernel):
    code = ("%%remote -n 2\n"
            "import time\n"
            "for i in range(3):\n"
            "    print(i, flush=True)\n"
            "    time.sleep(1)\n")
    res = kernel.run(code)
    assert res.status == "ok", res.outputs
    rank0 = [o for o in res.of_type("stream") if o["text"].startswith("[rank 0] ")]
    assert [o["text"] for o in rank0] == ["[rank 0] 0\n", "[rank 0] 1\n", "[rank 0] 2\n"]
    assert "[rank 1] 2\n" in res.stdout
    gaps = [b["t"] - a["t"] for a, b in zip(rank0, rank0[1:])]
    assert all(0.6 < g < 1.6 for g in gaps), gaps  # each line as it is printed


def test_rich_output_and_last_value(kernel):
    res = kernel.run(
        "%%remote\n"
        "from IPython.display import HTML, display\n"
        "import pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "display(HTML('<b>bold</b>'))\n"
        "plt.plot([1, 2, 3])\n"
        "df = pd.DataFrame({'a': [1, 2]})\n"
        "df\n")
    assert res.status == "ok", res.outputs
    shown = res.of_type("display_data")
    assert any(d["data"].get("text/html") == "<b>bold</b>" for d in shown)
    assert any("image/png" in d["data"] for d in shown), [list(d["data"]) for d in shown]
    (result,) = res.of_type("execute_result")
    assert "<table" in result["data"]["text/html"]
    assert "a" in result["data"]["text/plain"]


def test_remote_error_fails_cell_with_remote_type_and_frames(kernel):
    res = kernel.run("%%remote\n"
                     "def f(x):\n"
                     "    return x / 0\n"
                     "f(1)\n")
    assert res.status == "error"
    assert res.reply["ename"] == "ZeroDivisionError"
    assert res.error["ename"] == "ZeroDivisionError"
    assert res.error["evalue"] == "division by zero"
    tb = res.traceback_text
    assert "line 4" in tb and "----> 4 f(1)" in tb
    assert "line 3, in f" in tb and "----> 3     return x / 0" in tb
    assert "magics.py" not in tb  # no kernel-side frames


def test_state_persists_and_ipython_syntax_works(kernel):
    assert kernel.run("%%remote\nanswer = 41").status == "ok"
    res = kernel.run("%%remote\nanswer += 1\nprint(answer)\n!echo from-shell\n%time y = 1")
    assert res.status == "ok", res.outputs
    assert "42\n" in res.stdout
    assert "from-shell" in res.stdout
    assert "Wall time" in res.stdout


def test_interrupt_stops_remote_code_and_keeps_state(kernel):
    kernel.run("%%remote\nkept = 'yes'")
    kernel.start_long_cell()  # then press "stop"
    kernel.km.interrupt_kernel()
    reply = kernel.kc.get_shell_msg(timeout=10)  # the long cell would run for minutes
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    res = kernel.run("%%remote\nprint(kept)")
    assert res.status == "ok" and res.stdout == "yes\n"


def test_push_and_pull_move_objects(kernel):
    res = kernel.run("import numpy as np\n"
                     "arr = np.arange(1_000_000, dtype='float64')\n"
                     "cfg = {'lr': 0.1}\n"
                     "%remote push arr cfg")
    assert res.status == "ok", res.outputs
    kernel.run("%%remote -n 1\ntotal = float(arr.sum()) * cfg['lr']\nback = arr * 2")
    res = kernel.run("%remote pull total back\nprint(total, back[0][:3], back[0].flags.writeable)")
    assert res.status == "ok", res.outputs
    assert res.stdout == "[49999950000.0] [0. 2. 4.] True\n"
    res = kernel.run("%remote pull total --rank 0\nprint(total)")
    assert res.stdout == "49999950000.0\n"


def test_pull_missing_name_is_clear_and_kernel_stays_usable(kernel):
    kernel.run("%%remote\nx = 1")
    res = kernel.run("%remote pull nope")
    assert res.status == "error"
    assert res.error["ename"] == "NameError"
    assert res.error["evalue"] == "name 'nope' is not defined on rank 0"
    assert kernel.run("print(1 + 1)").stdout == "2\n"


@pytest.mark.parametrize("line, expected", [
    ("%%remote --bogus\n1", "unrecognized arguments: --bogus"),
    ("%%remote -n 0\n1", "needs at least 1 agent, got 0"),
    ("%%remote --timeout abc\n1", "expected a duration such as 90s, 30m, 2h or 1h30m, got 'abc'"),
    ("%remote frobnicate", "unknown command"),
    ("%remote extend soon", "expected a duration"),
])
def test_bad_input_gives_one_line_error(kernel, line, expected):
    res = kernel.run(line)
    assert res.status == "error"
    assert res.reply["ename"] == "UsageError"
    assert expected in res.reply["evalue"]
    # what the user sees: one line on stderr, no traceback
    assert res.stderr.startswith("UsageError: ") and res.stderr.count("\n") == 1, res.stderr
    assert kernel.run("print('still here')").stdout == "still here\n"


def test_rank_environment_for_torch_distributed(kernel):
    res = kernel.run("%%remote -n 2 -e GREETING=hej\n"
                     "import os\n"
                     "print(*[os.environ[k] for k in ('KREMOTE_RANK', 'KREMOTE_COUNT', 'RANK',"
                     " 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'GREETING')])\n"
                     "print(int(os.environ['MASTER_PORT']) > 0)")
    assert res.status == "ok", res.outputs
    assert "[rank 0] 0 2 0 2 0 127.0.0.1 hej\n" in res.stdout
    assert "[rank 1] 1 2 1 2 1 127.0.0.1 hej\n" in res.stdout
    assert res.stdout.count("True") == 2


def test_rank_selection_and_count_change_hint(kernel):
    kernel.run("%%remote -n 2\nimport os\nr = int(os.environ['RANK'])")
    res = kernel.run("%%remote --rank 1\nr * 10")
    assert res.of_type("execute_result")[0]["data"]["text/plain"] == "10"
    res = kernel.run("%%remote -n 3\n1")
    assert res.status == "error"
    assert "%remote restart -n 3" in res.stderr


def test_cell_timeout_interrupts_with_clear_message(kernel):
    res = kernel.run("%%remote --timeout 1\nimport time\nv = 1\ntime.sleep(30)")
    assert res.status == "error"
    assert res.error["ename"] == "ClusterTimeout"
    assert "--timeout 1s" in res.error["evalue"]
    assert kernel.run("%%remote\nprint(v)").stdout == "1\n"
