"""The agent's cell runner: an IPython shell whose output goes back over the wire.

Cells run in an IPython ``InteractiveShell`` dressed like ipykernel's
``ZMQInteractiveShell`` (same class name, ``kernel`` attribute, ``IPKernelApp`` config
key, environment, inline matplotlib, pager and ``set_next_input`` as reply payloads), so
that magics and the libraries that look at ``get_ipython()`` behave as in a notebook.
stdout/stderr and rich display calls are turned into ``stream`` / ``display`` messages by
the ``emit`` callback while the cell runs, so output reaches the notebook live.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable
from types import CodeType
from typing import Any

Emit = Callable[[str, dict[str, Any]], None]
#: where cells seem to live (nothing is written there): ipykernel's naming, ours
_CELL_DIR = os.path.join(tempfile.gettempdir(), f"kremote_{os.getpid()}")
#: what makes a cell need IPython's transformers: magics, shell escapes, help, await
#: compiled plain cells kept for re-runs, and the largest source kept
_COMPILED_MAX = 256
_COMPILED_MAX_SOURCE = 64 * 1024
_IPYTHON_SYNTAX = re.compile(r"^\s*[%!?]|=\s*[%!]|\?\s*$|\bawait\b|^\s*get_ipython", re.MULTILINE)


class _StreamWriter(io.TextIOBase):
    """A text stream that sends what is written as ``stream`` messages.

    Writes are batched per line and flushed at newline or on ``flush()``, which keeps
    ``print(..., flush=True)`` live without one message per character.
    """

    def __init__(self, name: str, emit: Emit, fallback: Any) -> None:
        self.name = name
        self._emit = emit
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._fallback = fallback

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._buf.append(text)
            flush = "\n" in text
        if flush:
            self.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            text = "".join(self._buf)
            self._buf.clear()
        if text:
            self._emit("stream", {"name": self.name, "text": text})

    def fileno(self) -> int:
        return self._fallback.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "UTF-8"  # as ipykernel's streams: %time prints "µs", not "us"

    def isatty(self) -> bool:
        return False


class CellRunner:
    """Owns the user namespace and runs cells in it."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.shell = _make_shell(self._publish_display, self._publish_error)
        self.user_ns = self.shell.user_ns
        self._real = (sys.stdout, sys.stderr)
        #: the cell's streams, made once: ipykernel's too outlive a cell (a thread that
        #: prints later writes into whichever cell is running then)
        self._streams = (_StreamWriter("stdout", emit, self._real[0]),
                         _StreamWriter("stderr", emit, self._real[1]))
        #: plain cells compiled before, by source: re-running a cell skips the compiler
        self._compiled: dict[tuple[str, int], tuple[CodeType, CodeType | None]] = {}
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    # -- output -----------------------------------------------------------------
    def _publish_display(self, data: dict[str, Any], metadata: dict[str, Any] | None,
                         transient: dict[str, Any] | None = None, update: bool = False) -> None:
        self._flush_streams()
        content: dict[str, Any] = {"data": data, "metadata": metadata or {}}
        if transient:  # display_id: the notebook updates that output in place
            content["transient"] = transient
        if update:
            content["update"] = True
        if self.shell.last_traceback_lines:  # the cell failed already: figures flushed at
            content["after_error"] = True    # its end come after the error, as locally
        self._emit("display", content)

    def _publish_error(self, content: dict[str, Any]) -> None:
        """A traceback shown while the cell goes on (a failing ``_repr_html_``): an error
        output now, as ipykernel publishes one, not the cell's own error."""
        self._flush_streams()
        self._emit("error", content)

    def _flush_streams(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _StreamWriter):
                stream.flush()

    # -- running ----------------------------------------------------------------
    def run_cell(self, code: str, execution_count: int | None = None) -> dict[str, Any]:
        """Run one cell; return the reply content (status, error fields)."""
        if execution_count:
            _set_count(self.shell, int(execution_count))
        out, err = self._streams
        sys.stdout, sys.stderr = out, err
        self.shell.displayhook.cell_source = code
        self.shell.last_traceback_lines = []  # a UsageError shows none: none stale either
        try:
            if _IPYTHON_SYNTAX.search(code):
                result = self.shell.run_cell(code, store_history=True, silent=False)
                exc = result.error_before_exec or result.error_in_exec
            else:
                exc = self._run_plain(code)
            self._flush_figures()
        finally:
            out.flush()
            err.flush()
            sys.stdout, sys.stderr = self._real
        reply: dict[str, Any] = {"status": "ok", "execution_count": self.shell.execution_count - 1}
        if exc is not None:
            reply.update(
                status="error",
                ename=type(exc).__name__,
                evalue=str(exc),
                traceback=self.shell.last_traceback_lines,
            )
        payload = self.shell.payload_manager.read_payload()
        if payload:  # %load's set_next_input, the pager (%prun, obj?): ipykernel's payloads
            reply["payload"] = list(payload)
            self.shell.payload_manager.clear_payload()
        return reply

    def _run_plain(self, code: str) -> BaseException | None:
        """Plain Python without IPython syntax: compile and run it directly.

        The same namespace, display hook, traceback format and cell names (``Cell In[7]``)
        as ``shell.run_cell``, without its input transformers and history database: a
        trivial cell costs a few microseconds instead of ~0.3 ms.
        """
        shell = self.shell
        count = shell.execution_count
        filename = shell.compile.cache(code, count)  # linecache: tracebacks show the source
        try:
            module, expr = self._compile(code, filename)
        except (SyntaxError, ValueError, OverflowError) as exc:
            shell.showsyntaxerror(filename)
            _set_count(shell, count + 1)
            return exc
        _set_count(shell, count + 1)
        try:
            exec(module, shell.user_global_ns, shell.user_ns)
            if expr is not None:
                value = eval(expr, shell.user_global_ns, shell.user_ns)
                _set_count(shell, count)  # the displayhook numbers Out[] like the cell
                try:
                    shell.displayhook(value)
                finally:
                    _set_count(shell, count + 1)
        except BaseException as exc:  # noqa: BLE001 - reported like IPython does, agent lives
            tb = exc.__traceback__
            # cell frames only: without this function's, and no further frame skipped (the
            # Plain mode's tb_offset of 1 is for run_code's frame, not here)
            shell.showtraceback((type(exc), exc, tb.tb_next if tb else None), tb_offset=0,
                                running_compiled_code=True)
            return exc
        return None

    def _compile(self, code: str, filename: str) -> tuple[CodeType, CodeType | None]:
        """The cell's statements and, when it ends with an expression, that expression.

        A cell compiled before under the same compiler flags is reused, renamed to this
        run's cell file; a cell that changes the flags (``from __future__ import ...``)
        is not kept, so the flags it sets are set again each time it runs.
        """
        compiler = self.shell.compile
        key = (code, compiler.flags)
        done = self._compiled.get(key)
        if done is not None:
            module, expr = done
            return (_renamed(module, filename),
                    _renamed(expr, filename) if expr is not None else None)
        tree = compiler.ast_parse(code, filename)  # IPython's flags and messages
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        module = compiler(tree, filename, "exec")
        expr = compiler(last, filename, "eval") if last is not None else None
        if compiler.flags == key[1] and len(code) <= _COMPILED_MAX_SOURCE:
            if len(self._compiled) >= _COMPILED_MAX:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[key] = (module, expr)
        return module, expr

    def _flush_figures(self) -> None:
        """Show open matplotlib figures as PNG, as the inline backend does after a cell."""
        if "matplotlib.pyplot" not in sys.modules:
            return
        try:
            from matplotlib_inline.backend_inline import flush_figures
        except ImportError:
            return
        flush_figures()


def _set_count(shell: Any, n: int) -> None:
    """``shell.execution_count = n`` without traitlets' validation and change events: an
    Integer nothing observes, set several times per cell."""
    shell._trait_values["execution_count"] = n


def _renamed(code: CodeType, filename: str) -> CodeType:
    """``code`` (and the functions and classes defined in it) as if compiled from
    ``filename``."""
    consts = code.co_consts
    if any(type(c) is CodeType for c in consts):
        consts = tuple(_renamed(c, filename) if type(c) is CodeType else c for c in consts)
        return code.replace(co_filename=filename, co_consts=consts)
    return code.replace(co_filename=filename)


def _make_shell(publish: Callable[..., None], publish_error: Callable[..., None]) -> Any:
    """An InteractiveShell wired to ``publish`` for display and displayhook output."""
    from IPython.core.compilerop import CachingCompiler
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Any as AnyTrait
    from traitlets import Type

    class WireDisplayPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
            publish(data, metadata, transient, update)

        def clear_output(self, wait=False):
            publish({"text/plain": ""}, {"kremote_clear": True, "wait": bool(wait)})

    class WireDisplayHook(DisplayHook):
        """Sends the last expression's value as an execute result bundle."""

        cell_source = ""  # the running cell: a trailing ";" hides its value
        active = False  # formatting a value: a formatter's error fails the cell

        def __call__(self, result=None):
            self.active = True
            try:
                return super().__call__(result)
            finally:
                self.active = False

        def quiet(self):
            if self.exec_result is None:  # the fast path, outside shell.run_cell: judge
                return self.semicolon_at_end_of_expression(self.cell_source)  # this cell,
            return super().quiet()  # not the history's last (stale) entry

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            publish(format_dict, {**(md_dict or {}), "kremote_result": True})

        def finish_displayhook(self):
            sys.stdout.flush()

    class CellCompiler(CachingCompiler):
        """Cells named like files (``<tmp>/kremote_<pid>/<hash>.py``), as ipykernel names
        them: tracebacks then show a frame's scope (its ``def`` line) as in a kernel, which
        stack_data does not for ``<ipython-input-...>`` names."""

        def get_code_name(self, raw_code, transformed_code, number):
            digest = zlib.crc32(f"{number}\0{raw_code}".encode())
            return os.path.join(_CELL_DIR, f"{digest}.py")

    class ZMQInteractiveShell(InteractiveShell):
        """Named like ipykernel's shell: libraries (tqdm, rich, plotly...) test
        ``get_ipython().__class__.__name__`` to know they run in a notebook."""

        displayhook_class = Type(WireDisplayHook)
        display_pub_class = Type(WireDisplayPublisher)
        compiler_class = Type(CellCompiler)
        kernel = AnyTrait(None)  # ipykernel's shells have one; code tests hasattr()
        last_traceback_lines: list[str] = []

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            if "IPKernelApp" not in self.config:  # what tqdm.auto checks, as ipykernel does
                self.config.IPKernelApp.kremote = "agent"

        def init_environment(self):
            """ipykernel's environment: colours for tools, no pager in subprocesses."""
            os.environ.update(TERM="xterm-color", CLICOLOR="1", FORCE_COLOR="1",
                              CLICOLOR_FORCE="1", PAGER="cat", GIT_PAGER="cat")

        def init_hooks(self):
            from IPython.core import page

            super().init_hooks()
            self.set_hook("show_in_pager", page.as_hook(self._page_payload), 99)

        def _page_payload(self, strg, start=0, screen_lines=0, pager_cmd=None):
            """The pager (``%prun``, ``obj?``) as a payload, shown by the kernel's pager."""
            data = strg if isinstance(strg, dict) else {"text/plain": strg}
            self.payload_manager.write_payload(
                {"source": "page", "data": data, "start": max(0, start)})

        def set_next_input(self, text, replace=False):
            """``%load``: the kernel puts ``text`` into the notebook cell."""
            self.payload_manager.write_payload(
                {"source": "set_next_input", "text": text, "replace": replace})

        def enable_gui(self, gui=None):
            """``%matplotlib [inline]``: figures come back inline; no window can open."""
            if gui not in (None, "inline"):
                raise UsageError(f"%matplotlib {gui}: a window cannot open on a remote agent; "
                                 "use %matplotlib inline (figures are shown in the notebook)")
            self.active_eventloop = gui

        _going_on = False  # showtraceback of an error the cell goes on after

        def showtraceback(self, exc_tuple=None, *args, running_compiled_code=False, **kw):
            # formatters report their errors with an exc_info and go on; the cell's own
            # error comes from run_code (running_compiled_code) or the fast path
            self._going_on = exc_tuple is not None and not running_compiled_code
            try:
                super().showtraceback(exc_tuple, *args,
                                      running_compiled_code=running_compiled_code, **kw)
            finally:
                self._going_on = False

        def _showtraceback(self, etype, evalue, stb):
            sys.stdout.flush()
            sys.stderr.flush()
            if self._going_on:
                publish_error({"ename": etype.__name__, "evalue": str(evalue),
                               "traceback": list(stb), "in_result": self.displayhook.active})
                return
            self.last_traceback_lines = list(stb)

        def init_history(self):
            from IPython.core.history import HistoryManager

            self.history_manager = HistoryManager(shell=self, parent=self, hist_file=":memory:")
            self.configurables.append(self.history_manager)

    shell = ZMQInteractiveShell.instance(colors="nocolor")
    for tb in (shell.InteractiveTB, shell.SyntaxTB):  # tracebacks as ipykernel's: coloured
        tb.set_theme_name("neutral")                 # and laid out alike
    shell.system = shell.system_piped  # ``!cmd`` output goes to the cell, not the log
    shell.InteractiveTB.set_mode("Context")
    return shell
