"""Paths shared by the tests: the scenario folder and the CitrineOS recordings beside the repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True under CI (``CI`` set to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_dir() -> Path:
    """The shared folder beside the repository (OPTIVGI_SHARED_DIR overrides)."""
    return Path(os.environ.get("OPTIVGI_SHARED_DIR") or ROOT.parent / "shared")


def missing(message: str) -> NoReturn:
    """Skip with one line, or fail under CI (where nothing the suite needs may be missing)."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: nothing may be skipped)", pytrace=False)
    pytest.skip(message)


def require_shared(relative: str) -> Path:
    """``../shared/<relative>``; skips with one line when absent (fails under CI)."""
    path = shared_dir() / relative
    if not path.exists():
        missing(f"{path} is missing: put the shared folder beside the clone or set OPTIVGI_SHARED_DIR")
    return path


def scenario_files() -> list[Path]:
    """Every scenario file; raises in CI, returns [] elsewhere, when the folder is missing."""
    folder = shared_dir() / "scenarios"
    files = sorted(folder.glob("*.json"))
    if not files and in_ci():
        raise RuntimeError(f"no scenario files in {folder}: CI needs ../shared beside the clone")
    return files
