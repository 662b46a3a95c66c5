"""Example projects shipped with runcache (package data): ``seed`` is what ``runcache demo`` runs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_path(name: str = "seed") -> Path:
    """The folder of a bundled example (installed as package data next to this module)."""
    root = resources.files(__name__) / name
    return Path(str(root))
