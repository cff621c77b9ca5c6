"""Which local files a cell needs, checked and hashed before anything runs.

Two sources: ``--files`` (explicit files, folders or globs) and, unless
``--no-auto-files``, what the cell references itself: imports of modules or packages found
in the notebook's folder (followed into those modules), string literals naming existing
files there, and the words of IPython commands (``!cmd``, ``%%bash``, ``%run``, ``%load``
and other magics; the Python of ``%time``/``%%timeit``-like magics is read as code).
Every path must resolve inside the notebook's folder.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import FileError

DEFAULT_MAX_FILE_SIZE = 100 * 1024 * 1024  # per file
DEFAULT_AUTO_LIMIT = 20 * 1024 * 1024  # all auto-detected files of one cell together
_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", ".venv", "node_modules", ".kremote"}


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the notebook folder, POSIX separators
    sha256: str
    size: int
    mode: int

    def to_wire(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "mode": self.mode}


class FileCollector:
    """Resolves and hashes files relative to ``root``; hashes cached by (mtime, size)."""

    def __init__(self, root: str | Path, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> None:
        self.root = Path(root).resolve()
        self.max_file_size = max_file_size
        self._hashes: dict[Path, tuple[float, int, str]] = {}

    # -- explicit --files ------------------------------------------------------------
    def explicit(self, paths: list[str]) -> list[FileEntry]:
        out: list[FileEntry] = []
        for given in paths:
            for path in self._expand(given):
                if path.is_dir():
                    for f in sorted(_walk(path)):
                        out.append(self.entry(f))
                else:
                    out.append(self.entry(path))
        return out

    def _expand(self, given: str) -> list[Path]:
        """One ``--files`` argument: a path, or a glob (``data/*.csv``, ``**/*.py``)."""
        if not glob.has_magic(given):
            path = self._inside(given, f"--files {given}")
            if not path.exists():
                raise FileError(f"--files {given}: no such file or folder in {self.root}")
            return [path]
        self._inside(os.path.dirname(given.split("*")[0]) or ".", f"--files {given}")
        found = sorted(glob.glob(given, root_dir=self.root, recursive=True))
        if not found:
            raise FileError(f"--files {given}: matches no file or folder in {self.root}")
        return [self._inside(f, f"--files {given}") for f in found]

    def _inside(self, given: str, what: str) -> Path:
        path = (self.root / os.path.expanduser(given)).resolve()
        if path != self.root and self.root not in path.parents:
            raise FileError(f"{what}: resolves outside the notebook folder {self.root}; "
                            "copy it into that folder first")
        return path

    def entry(self, path: Path) -> FileEntry:
        st = path.stat()
        if st.st_size > self.max_file_size:
            raise FileError(
                f"{path.relative_to(self.root)}: {human_size(st.st_size)} is over the "
                f"{human_size(self.max_file_size)} file size limit; raise it with "
                "--max-file-size or move the data to object storage")
        cached = self._hashes.get(path)
        if cached and cached[0] == st.st_mtime and cached[1] == st.st_size:
            sha = cached[2]
        else:
            sha = _sha256(path)
            self._hashes[path] = (st.st_mtime, st.st_size, sha)
        rel = path.relative_to(self.root).as_posix()
        return FileEntry(rel, sha, st.st_size, st.st_mode & 0o777)

    # -- what the cell references ------------------------------------------------------
    def referenced(self, code: str, limit: int = DEFAULT_AUTO_LIMIT) -> list[FileEntry]:
        """Local modules the cell imports and existing files its strings name."""
        found: dict[Path, None] = {}
        queue: list[tuple[str, Path | None]] = [(code, None)]
        seen_sources: set[Path] = set()
        while queue:
            source, origin = queue.pop()
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            for text in _command_texts(tree):  # !cmd, %%bash, %run...: their words name
                found.update(dict.fromkeys(self._existing(_words(text))))  # files; Python
                queue.append((text, origin))  # bodies (%%time, %timeit) are read as code
            for path in self._imports(tree, origin) + self._strings(tree):
                if path in found:
                    continue
                found[path] = None
                if path.suffix == ".py" and path not in seen_sources:
                    seen_sources.add(path)
                    try:
                        queue.append((path.read_text(), path))
                    except (OSError, UnicodeDecodeError):
                        pass
        entries = []
        total = 0
        for path in found:
            try:
                entry = self.entry(path)
            except FileError:
                continue  # too large to ship on a guess; --files says so explicitly
            total += entry.size
            if total > limit:
                raise FileError(
                    f"the files this cell references add up to over {human_size(limit)}; "
                    "name what it needs with --files, or turn detection off with "
                    "--no-auto-files")
            entries.append(entry)
        return entries

    def _imports(self, tree: ast.AST, origin: Path | None) -> list[Path]:
        names: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module.split(".")[0])
        dirs = [self.root] if origin is None else [self.root, origin.parent]
        out: list[Path] = []
        for name in dict.fromkeys(names):
            for d in dirs:
                module, package = d / f"{name}.py", d / name
                if module.is_file():
                    out.append(module.resolve())
                elif (package / "__init__.py").is_file():
                    out += [p.resolve() for p in sorted(_walk(package))]
        return [p for p in out if self.root in p.parents]

    def _strings(self, tree: ast.AST) -> list[Path]:
        return self._existing(node.value for node in ast.walk(tree)
                              if isinstance(node, ast.Constant) and isinstance(node.value, str))

    def _existing(self, texts) -> list[Path]:
        """The texts that name an existing file inside the notebook folder."""
        out = []
        for text in texts:
            if not text or len(text) > 1024 or "\n" in text or "\0" in text:
                continue
            try:
                path = (self.root / text).resolve()
                if self.root in path.parents and path.is_file():
                    out.append(path)
            except (OSError, ValueError):
                continue
        return out


#: get_ipython() methods that IPython turns ``!cmd`` and ``%magic`` lines into
_COMMAND_CALLS = {"system": 1, "getoutput": 1, "run_line_magic": 2, "run_cell_magic": 3}


def _command_texts(tree: ast.AST) -> list[str]:
    """The command lines and cell-magic bodies of a transformed cell."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _COMMAND_CALLS):
            args = node.args[:_COMMAND_CALLS[node.func.attr]]
            texts = [a.value for a in args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str)]
            if node.func.attr.startswith("run_") and texts:
                texts = texts[1:]  # the magic's name
            out += [t for t in texts if t.strip()]
    return out


def _words(text: str) -> list[str]:
    """Shell-like words of a command, and what follows ``=`` in ``--opt=path``."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # unbalanced quotes
        words = text.split()
    out = []
    for word in words:
        if "$" in word or "{" in word:
            continue  # expanded by IPython from variables: unknown here
        out.append(word)
        if "=" in word:
            out.append(word.rsplit("=", 1)[1])
    return out


def _walk(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for f in filenames:
            if not f.endswith((".pyc", ".pyo")):
                yield Path(dirpath) / f


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_size(text: str) -> int:
    """``100M``, ``2G``, ``512K`` or bytes -> bytes; ValueError says the accepted form."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "KMG" else (t, "")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"expected a size such as 500K, 100M or 2G, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"expected a positive size, got {text!r}")
    return int(value * units[unit])
