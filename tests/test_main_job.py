"""What a new user meets first: the main job's runner and a plain install without extras."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import Kernel

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in cells]
    nbformat.write(nb, path)
    return path


def _run_notebook(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KREMOTE_SERVER": "off"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "run_notebook.py"), str(path)],
                          capture_output=True, text=True, timeout=120, env=env)


def test_main_job_fails_on_an_unexpected_cell_error(tmp_path):
    nb = _notebook(tmp_path / "broken.ipynb", [
        ("%load_ext jupyter_kremote", []),
        ("%%remote\n1 / 0", ["raises-exception"]),    # expected: the run goes on
        ("import no_such_module_here", []),           # not expected: the job fails
        ("print('never')", []),
    ])
    proc = _run_notebook(nb)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unexpected error in cell 2 (import no_such_module_here): ModuleNotFoundError" \
        in proc.stderr
    assert "ZeroDivisionError" in proc.stdout        # the tagged cell ran and showed its error
    assert "cell 1" not in proc.stderr


def test_main_job_passes_when_only_tagged_cells_fail(tmp_path):
    nb = _notebook(tmp_path / "fine.ipynb", [
        ("%load_ext jupyter_kremote", []),
        ("%%remote\nraise ValueError('on purpose')", ["raises-exception"]),
        ("%%remote\nprint('after', 6 * 7)", []),
    ])
    proc = _run_notebook(nb)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "after 42" in proc.stdout


BLOCKER = '''
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    """Acts as if the [kubernetes] extra were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("kubernetes_asyncio", "kubernetes_validate"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''


@pytest.fixture
def kernel_without_kubernetes_extra(tmp_path):
    from jupyter_client.manager import start_new_kernel

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    env = {**os.environ, "KREMOTE_SERVER": "off",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(nbdir), env=env)
    k = Kernel(km, kc, nbdir)
    try:
        assert k.run("%load_ext jupyter_kremote").status == "ok"
        yield k
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_kubernetes_without_its_extra_names_the_extra(kernel_without_kubernetes_extra):
    k = kernel_without_kubernetes_extra
    assert k.run("import kubernetes_asyncio").status == "error"   # the blocker works
    fix = "pip install 'jupyter-kremote[kubernetes]'"

    res = k.run("%%remote --backend kubernetes\nprint('never')")
    assert res.status == "error"
    assert fix in res.traceback_text
    assert "kubernetes_asyncio" in res.traceback_text
    assert len(res.error["traceback"]) == 1, res.traceback_text   # one line, no Python traceback

    res = k.run("%remote render --gpu 1")
    assert res.status == "error"   # a UsageError: IPython shows its one line on stderr
    assert res.stderr.strip().splitlines() == [
        "UsageError: the kubernetes backend needs kubernetes_validate, which is not installed: "
        + fix]

    res = k.run("%%remote\nprint('local agents still work')")  # the kernel stays usable
    assert res.status == "ok" and "local agents still work" in res.stdout
