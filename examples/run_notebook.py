"""Execute a notebook headless through a real kernel and print every cell with its outputs.

Usage: python examples/run_notebook.py examples/quickstart.ipynb
The executed copy is written next to it as <name>.out.ipynb (git-ignored). Exits 1 when a cell
fails that the notebook does not expect to fail (only cells tagged ``raises-exception`` may),
so that a broken main job cannot land.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

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


def unexpected_errors(nb) -> list[str]:
    """One line per failed cell that is not tagged ``raises-exception``."""
    lines = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                lines.append(f"cell {i} ({cell.source.splitlines()[0] if cell.source else ''}): "
                             f"{out['ename']}: {ANSI.sub('', out['evalue'])}")
    return lines


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/quickstart.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError:
        pass  # reported below, with every other unexpected error
    finally:
        show(nb)
        out = path.with_suffix(".out.ipynb")
        nbformat.write(nb, out)
        print(f"\nexecuted notebook written to {out}")
    errors = unexpected_errors(nb)
    for line in errors:
        print(f"{path}: unexpected error in {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
