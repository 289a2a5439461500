"""Paths shared by the tests: the scenario folder beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared folder beside the repository (OPTIVGI_SHARED_DIR overrides)."""
    return Path(os.environ.get("OPTIVGI_SHARED_DIR") or ROOT.parent / "shared")


def scenario_files() -> list[Path]:
    """Every scenario file; raises in CI, returns [] elsewhere, when the folder is missing."""
    folder = shared_dir() / "scenarios"
    files = sorted(folder.glob("*.json"))
    if not files and os.environ.get("CI"):
        raise RuntimeError(f"no scenario files in {folder}: CI needs ../shared beside the clone")
    return files
