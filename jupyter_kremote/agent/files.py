"""Content-addressed file store of an agent.

Files arrive as (relative path, sha256) lists; the agent answers which hashes it
lacks, receives only those, keeps them under ``.kremote/objects/<sha>`` and places
each at its relative path in the working folder. A second run with unchanged files
therefore moves no file bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any


class FileStore:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.objects = self.workdir / ".kremote" / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)

    def missing(self, entries: list[dict[str, Any]]) -> list[str]:
        """Hashes in ``entries`` that are not in the store yet."""
        out = []
        for entry in entries:
            sha = _check_sha(entry["sha256"])
            if not (self.objects / sha).exists() and sha not in out:
                out.append(sha)
        return out

    def put(self, blobs: dict[str, Any]) -> None:
        """Store blobs, refusing any whose bytes do not match their name."""
        for sha, data in blobs.items():
            _check_sha(sha)
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"file content does not match its hash {sha[:12]}")
            tmp = self.objects / f".{sha}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.objects / sha)

    def place(self, entries: list[dict[str, Any]]) -> None:
        """Put each stored object at its relative path inside the working folder."""
        for entry in entries:
            target = self._target(entry["path"])
            source = self.objects / _check_sha(entry["sha256"])
            if target.exists() and _same_file(target, source):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.kremote-tmp")
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.chmod(tmp, int(entry.get("mode", 0o644)) & 0o777)
            os.replace(tmp, target)

    def _target(self, rel: str) -> Path:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ValueError(f"refusing file path outside the working folder: {rel!r}")
        target = (self.workdir / Path(*pure.parts)).resolve()
        if self.workdir not in target.parents:
            raise ValueError(f"refusing file path outside the working folder: {rel!r}")
        return target


def _check_sha(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


def _same_file(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    if sa.st_size != sb.st_size:
        return False
    return a.read_bytes() == b.read_bytes()
