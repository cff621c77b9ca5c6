"""Execute a notebook headless through a real kernel and print every cell with its outputs.

Usage: python examples/run_notebook.py examples/quickstart.ipynb
The executed copy is written next to it as <name>.out.ipynb (git-ignored).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def show(nb) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            print(f"\n## {cell.source.splitlines()[0].lstrip('# ')}")
            continue
        print(f"\nIn [{cell.get('execution_count') or ' '}]:")
        print("    " + cell.source.replace("\n", "\n    "))
        for out in cell.get("outputs", []):
            kind = out["output_type"]
            if kind == "stream":
                prefix = "" if out["name"] == "stdout" else "(stderr) "
                for line in out["text"].splitlines():
                    print(f"  {prefix}{line}")
            elif kind in ("execute_result", "display_data"):
                data = out["data"]
                label = "Out" if kind == "execute_result" else "display"
                others = [k for k in data if k != "text/plain"]
                text = data.get("text/plain", "")
                print(f"  {label}: {text}" + (f"   [+ {', '.join(others)}]" if others else ""))
            elif kind == "error":
                print("  " + ANSI.sub("", "\n".join(out["traceback"])).replace("\n", "\n  "))


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/quickstart.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    finally:
        show(nb)
        out = path.with_suffix(".out.ipynb")
        nbformat.write(nb, out)
        print(f"\nexecuted notebook written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
