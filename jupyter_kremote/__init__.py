"""jupyter-kremote: run notebook cells on remote agents with ``%%remote``."""

from __future__ import annotations

__version__ = "0.1.0"
