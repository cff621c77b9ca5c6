"""input(), getpass() and the debugger in remote cells, through a real kernel (issue 9, 3).

The test answers input requests on the kernel's stdin channel as a notebook frontend does.
"""

from __future__ import annotations

import queue
import time

import pytest
from conftest import kernel_in


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    yield from kernel_in(tmp_path_factory.mktemp("notebooks"))


class Answers:
    """A frontend user: types the next answer at each prompt, remembers the prompts."""

    def __init__(self, kernel, *answers: str) -> None:
        self.kc = kernel.kc
        self.answers = list(answers)
        self.prompts: list[tuple[str, bool]] = []

    def __call__(self, msg) -> None:
        self.prompts.append((msg["content"]["prompt"], msg["content"]["password"]))
        self.kc.input(self.answers.pop(0) if self.answers else "c")


def test_input_and_getpass_ask_the_notebook(kernel):
    user = Answers(kernel, "Ada", "s3cret")
    res = kernel.run("%%remote\n"
                     "import getpass\n"
                     "print('before the prompt', flush=True)\n"
                     "name = input('your name? ')\n"
                     "pw = getpass.getpass('password: ')\n"
                     "print('hello', name, len(pw))\n", stdin_hook=user)
    assert res.status == "ok", res.outputs
    assert user.prompts == [("your name? ", False), ("password: ", True)]
    assert res.stdout == "before the prompt\nhello Ada 6\n"
    assert "s3cret" not in res.stdout + res.stderr
    logs = kernel.run("%remote logs")
    assert logs.status == "ok" and "--- rank 0 ---" in logs.stdout
    assert "s3cret" not in logs.stdout  # the password is in no log


def test_breakpoint_steps_prints_and_continues(kernel):
    user = Answers(kernel, "p x", "n", "p y", "c")
    res = kernel.run("%%remote\n"
                     "x = 41\n"
                     "breakpoint()\n"
                     "y = x + 1\n"
                     "print('y is', y)\n", stdin_hook=user)
    assert res.status == "ok", res.outputs
    assert [p for p, _ in user.prompts] == ["(Pdb) "] * 4
    out = res.stdout
    assert "41\n" in out and "42\n" in out
    assert out.index("41\n") < out.index("42\n") < out.index("y is 42\n")
    assert "-> y = x + 1" in out  # pdb shows where it stopped, with the cell's lines


def test_pdb_set_trace_and_debug_after_an_error(kernel):
    user = Answers(kernel, "p a * 10", "c")
    res = kernel.run("%%remote\nimport pdb\na = 4\npdb.set_trace()\nprint('done')",
                     stdin_hook=user)
    assert res.status == "ok", res.outputs
    assert "40\n" in res.stdout and res.stdout.endswith("done\n")
    failed = kernel.run("%%remote\ndef f(a):\n    b = a * 2\n    return b / 0\nf(21)")
    assert failed.error["ename"] == "ZeroDivisionError"
    user = Answers(kernel, "p b", "q")
    res = kernel.run("%%remote\n%debug", stdin_hook=user)
    assert res.status == "ok", res.outputs
    assert [p for p, _ in user.prompts] == ["ipdb> ", "ipdb> "]
    assert "42\n" in res.stdout
    assert "return b / 0" in res.stdout  # %debug opens at the failing line


def test_no_stdin_raises_like_a_local_cell_and_keeps_state(kernel):
    kernel.run("%%remote\nkept = 'yes'")
    res = kernel.run("%%remote\ninput('x? ')")  # the frontend allows no stdin
    assert res.status == "error"
    assert res.error["ename"] == "StdinNotImplementedError"
    assert "does not support input requests" in res.error["evalue"]
    res = kernel.run("%%remote\nimport pdb; pdb.set_trace()")
    assert res.error["ename"] == "StdinNotImplementedError"
    assert kernel.run("%%remote\nprint(kept)").stdout == "yes\n"


def test_eof_at_the_prompt_is_eoferror(kernel):
    res = kernel.run("%%remote\ntry:\n    input()\nexcept EOFError:\n    print('eof')",
                     stdin_hook=Answers(kernel, "\x04"))
    assert res.status == "ok" and res.stdout == "eof\n"


def _wait_for_prompt(kernel, timeout: float = 60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return kernel.kc.get_stdin_msg(timeout=1)
        except queue.Empty:
            continue
    raise AssertionError("no input request reached the frontend")


def _reply(kernel, timeout: float = 15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = kernel.kc.get_shell_msg(timeout=timeout)
        if msg["msg_type"] == "execute_reply":
            return msg["content"]
    raise AssertionError("no execute_reply")


def test_stop_button_at_a_pdb_prompt_interrupts_and_keeps_the_agent(kernel):
    kernel.run("%%remote\nkept = 'still here'")
    kernel.kc.execute("%%remote\nimport pdb\npdb.set_trace()\nprint('not reached')",
                      allow_stdin=True, stop_on_error=False)
    assert _wait_for_prompt(kernel)["content"]["prompt"] == "(Pdb) "
    kernel.km.interrupt_kernel()  # the stop button, while the prompt waits
    reply = _reply(kernel)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    res = kernel.run("%%remote\nprint(kept)")
    assert res.status == "ok" and res.stdout == "still here\n"


def test_stdin_rank_gets_the_prompt_the_other_ranks_wait(kernel):
    user = Answers(kernel, "one")
    res = kernel.run("%%remote --name pair -n 2 --stdin-rank 1\n"
                     "import os\n"
                     "if os.environ['KREMOTE_RANK'] == '1':\n"
                     "    print('got', input('rank 1? '))\n", stdin_hook=user)
    assert res.status == "ok", res.outputs
    assert user.prompts == [("rank 1? ", False)]
    assert "[rank 1] got one\n" in res.stdout
    # both ask: only rank 0 (the default) prompts, rank 1 waits until the stop button
    kernel.kc.execute("%%remote --name pair\nv = input('which? ')\nprint('v', v)",
                      allow_stdin=True, stop_on_error=False)
    assert _wait_for_prompt(kernel)["content"]["prompt"] == "which? "
    kernel.kc.input("zero")
    shown = ""
    end = time.monotonic() + 30
    while "[rank 0] v zero" not in shown and time.monotonic() < end:
        msg = kernel.kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "stream":
            shown += msg["content"]["text"]
    assert "rank 1 waits for input (which?): stdin goes to rank 0" in shown
    kernel.km.interrupt_kernel()
    assert _reply(kernel)["ename"] == "KeyboardInterrupt"
    res = kernel.run("%%remote --name pair\nprint(v)", stdin_hook=Answers(kernel))
    assert "[rank 0] zero\n" in res.stdout
    assert "NameError" in res.stderr or res.error["ename"] == "NameError"  # rank 1 never got one


def test_stdin_rank_must_be_a_rank_of_the_cell(kernel):
    res = kernel.run("%%remote --stdin-rank 3\nprint(1)")
    assert res.status == "error"
    assert res.stderr == ("UsageError: --stdin-rank 3: the cell runs on rank(s) 0; "
                          "pick one of them\n")


@pytest.mark.asyncio
async def test_the_python_api_has_no_prompt_input_raises_there(tmp_path):
    from jupyter_kremote import LocalCluster

    async with LocalCluster(root=tmp_path) as c:
        with pytest.raises(Exception) as info:
            await c.run("input('x? ')")
        assert type(info.value).__name__ == "StdinNotImplementedError"
        assert await c.call(pow, 2, 5) == [32]  # the agent goes on
