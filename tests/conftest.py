"""Shared fixtures: where the benchmark scenarios live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import shared_dir


@pytest.fixture(scope="session")
def scenarios_dir() -> Path:
    """The folder of benchmark scenarios (skipped outside CI when absent)."""
    folder = shared_dir() / "scenarios"
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{folder} is missing: CI needs ../shared beside the clone")
        pytest.skip(f"{folder} is missing")
    return folder
