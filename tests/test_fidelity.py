"""tools/fidelity.py on notebooks written here (issue 9, point 7): every cell the same under
%%remote as locally, through nbclient and real kernels; and the tool does see a difference."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fidelity

CELLS = [
    ("%matplotlib inline\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
     "import pandas as pd"),
    "rng = np.random.RandomState(0)\nx = rng.rand(5)\nx",
    "plt.plot(x)",  # Out[n], then the figure
    "plt.plot(x);\nplt.title('quiet')",
    "%config InlineBackend.figure_formats = ['svg']\nplt.plot(x);",
    ("%config InlineBackend.figure_formats = ['retina']\nfig, ax = plt.subplots()\n"
     "ax.hist(x);"),
    "df = pd.DataFrame({'a': x, 'b': x * 2})\ndf.describe()",
    ("from IPython.display import display, HTML, Markdown, update_display, clear_output\n"
     "display(HTML('<b>bold</b>'), Markdown('*it*'))\n"
     "h = display('first', display_id=True)\nh.update('second')\nprint('after')"),
    "for i in range(3):\n    clear_output(wait=True)\n    print('step', i)",
    "%time s = sum(range(1000))",
    "%%time\ns = sum(range(1000))",
    "%timeit -n 1 -r 1 sum(range(10))",
    "%prun -q sum(range(10))",
    "!head -2 data/heights.csv",
    "rows = !wc -l < data/heights.csv\nrows",
    "%%bash\ncut -d, -f2 data/heights.csv | tail -2",
    "%run script.py one\nz",
    "%%writefile made.txt\nhello",
    "print(open('made.txt').read())",
    "import sys\nprint('to stderr', file=sys.stderr)\nprint('to stdout')",
    "def f(v):\n    return v / 0\nf(1)",
    "x = (1,\n  2",
    "def g():\n  return 1\n   y = 2",
    "%xmode Plain",
    "undefined_name",
    "f(2)",  # frames of two cells
    "%nosuchmagic 1",  # UsageError: a stderr line
    ("class Bad:\n    def _repr_html_(self):\n        raise AttributeError('no html')\n"
     "    def __repr__(self):\n        return 'Bad()'\nBad()"),  # error, then Out[n]
    "display(Bad())\nprint('goes on')",  # an error output, the cell goes on
    "%xmode Context",
    "ip = get_ipython()\ntype(ip).__name__, hasattr(ip, 'kernel'), 'IPKernelApp' in ip.config",
    "%matplotlib\nplt.plot([1, 2]);",
    "x.sum().round(3)",
    "",  # an empty cell stays empty
    "plt.plot(x)\nraise ValueError('after a plot')",  # the error, then the figure
]


def _notebook(folder: Path, cells: list[str]) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "heights.csv").write_text("name,cm\nada,170\nbob,182\ncy,165\n")
    (folder / "script.py").write_text("import sys\nprint('script', sys.argv[1:])\nz = 5\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# features")] + [
        nbformat.v4.new_code_cell(c) for c in cells]
    path = folder / "features.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.timeout(300)
def test_notebook_of_features_is_identical_under_remote(tmp_path):
    path = _notebook(tmp_path, CELLS)
    report = fidelity.compare(path, timeout=60)
    assert not report.failure, report.failure
    print(fidelity.table([report], verbose=True))
    assert [(c.index, c.why) for c in report.cells if c.why] == []
    assert report.identical == len(CELLS)


def test_the_tool_sees_what_differs():
    """Normalising must not hide real differences: status, kinds, stable text, lines."""
    local = fidelity.outcome([
        {"output_type": "stream", "name": "stdout", "text": "a\n"},
        {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
         "traceback": ["Cell In[3], line 2\n      1 x = 1\n----> 2 1/0"]}], shift=False)
    remote_same = fidelity.outcome([
        {"output_type": "stream", "name": "stderr", "text": "[kremote] files: a (1 B)\n"},
        {"output_type": "stream", "name": "stdout", "text": "a\n"},
        {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
         "traceback": ["Cell In[3], line 3\n      1 # %%remote \n      2 x = 1\n----> 3 1/0"]}],
        shift=True)
    assert fidelity._why(local, local, remote_same) == ""
    wrong_line = fidelity.outcome([
        {"output_type": "stream", "name": "stdout", "text": "a\n"},
        {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
         "traceback": ["Cell In[3], line 2\n      1 x = 1\n----> 2 1/0"]}], shift=True)
    assert fidelity._why(local, local, wrong_line).startswith("text ")
    other_stream = fidelity.outcome([
        {"output_type": "stream", "name": "stderr", "text": "a\n"}], shift=True)
    assert fidelity._why(local, local, other_stream) == \
        "status error locally, ok remotely ()"


def test_remote_line_numbers_are_read_one_lower_in_their_column():
    remote = ("Cell In[7], line 11, in f()\n     10     def f():\n---> 11         return 1\n"
              "File /lib/x.py:40, in g()\n---> 40 g()")
    assert fidelity._traceback(remote, shift=True) == (
        "Cell In[#], line 10, in f()\n      9     def f():\n---> 10         return 1\n"
        "File /lib/x.py:40, in g()\n---> 40 g()")  # frames of files keep their numbers
